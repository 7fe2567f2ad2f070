"""Tiny random-weight Llama, Qwen2 and Qwen3 models built from a config (no
downloads). Skips the whole folder where torch or transformers is missing."""
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

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
