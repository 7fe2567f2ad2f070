"""Tiny random-weight Llama, Qwen2 and Qwen3 models built from a config (no
downloads). Skips the whole folder where torch or transformers is missing."""
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
# Tiny models: one thread is many times faster than a pool fighting over
# shared cores (and these tests compare results, not speed).
torch.set_num_threads(1)


def pytest_configure(config):
    # transformers >= 5.18 renames generate's past_key_values to cache; 5.17
    # (the GPU machine's) knows only past_key_values, so the tests keep it.
    config.addinivalue_line("filterwarnings", "ignore:.past_key_values. is deprecated:FutureWarning")


SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             max_position_embeddings=1024, initializer_range=0.2)


def tiny_model(family: str, dtype=torch.float32, device="cpu", seed=0, **overrides):
    """A random model of the family; initializer_range 0.2 makes the logits
    peaked enough that greedy decoding is not decided by rounding noise."""
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                    "qwen3": transformers.Qwen3Config}[family]
    config = config_class(**{**SHAPE, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa",
                                                          dtype=dtype)
    return model.to(device).eval()


def left_padded_batch(lengths, vocab=256, device="cpu", seed=1):
    """input_ids and attention_mask for prompts of these lengths, left padded."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = torch.randint(3, vocab, (n,), generator=generator)
        mask[row, width - n:] = 1
    return ids.to(device), mask.to(device)


def generate(model, ids, mask, new_tokens, cache=None, **options):
    """Greedy generation of exactly new_tokens tokens: (sequences, logits [batch, new, vocab])."""
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, past_key_values=cache,
                         return_dict_in_generate=True, output_logits=True, **options)
    return out.sequences, torch.stack(out.logits, dim=1)


def devices():
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    return found


@pytest.fixture(params=devices())
def device(request):
    if request.param == "cuda":
        import rkv
        try:  # a build without the CUDA backend says so at create
            rkv.Cache(max_seqs=1, num_layers=1, num_kv_heads=1, head_dim=8, device="cuda").close()
        except rkv.UnsupportedError as e:
            pytest.skip(f"librkv built without CUDA: {e.message}")
    return request.param
