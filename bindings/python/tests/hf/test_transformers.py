"""RkvCache in transformers' generate: identical to transformers' own cache
when nothing is evicted; bounded and equal to the C library's own selection
when the budget is small; decode steps made of librkv's batch calls only."""
import numpy as np
import pytest
import torch
from conftest import generate, left_padded_batch, tiny_model
from transformers import DynamicCache

import rkv
import rkv.hf

METHODS = ["rkv", "snapkv", "h2o", "streamingllm", "keydiff", "random", "full"]
PROMPTS = [7, 12, 3]  # left padded to 12


@pytest.mark.parametrize("family,method", [("llama", m) for m in METHODS] +
                         [("qwen2", "rkv"), ("qwen3", "rkv"), ("qwen3", "h2o")])
def test_large_budget_equals_transformers_cache(family, method, device):
    model = tiny_model(family, device=device)
    ids, mask = left_padded_batch(PROMPTS, device=device)
    expected, expected_logits = generate(model, ids, mask, 24, DynamicCache(config=model.config))
    model.set_attn_implementation("rkv")
    # budget + buffer >= every sequence's length: nothing is ever evicted
    with_rkv = rkv.hf.RkvCache(model, method=method, budget=64, buffer=8, window=4, max_len=64)
    got, got_logits = generate(model, ids, mask, 24, with_rkv)
    assert torch.equal(got, expected)
    torch.testing.assert_close(got_logits, expected_logits, rtol=1e-4, atol=1e-4)
    assert with_rkv.native.stats().tokens_evicted == 0
    assert with_rkv.forks == 0  # three different prompts: nothing to fork


def test_rkv_attention_without_rkv_cache_is_plain_sdpa(device):
    model = tiny_model("qwen2", device=device)
    ids, mask = left_padded_batch(PROMPTS, device=device)
    expected, _ = generate(model, ids, mask, 8)
    model.set_attn_implementation("rkv")
    got, _ = generate(model, ids, mask, 8, DynamicCache(config=model.config))
    assert torch.equal(got, expected)


class Recorder:
    """Records, per attention call of the adapter, what it hands to librkv:
    K, V, Q and which of the tokens are real."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = rkv.hf.RkvCache._attention

        def attention(cache, layer, query, key, value, attention_mask, scaling):
            length = key.shape[2]
            real = (torch.ones(key.shape[0], length, dtype=torch.bool) if attention_mask is None
                    or length == 1 else attention_mask[:, -length:].bool().cpu())
            prompt = not cache._held  # the first call: every layer appends prompt tokens
            self.calls.append((layer, key.cpu().float().clone(), value.cpu().float().clone(),
                               query.cpu().float().clone(), real, prompt))
            return original(cache, layer, query, key, value, attention_mask, scaling)

        monkeypatch.setattr(rkv.hf.RkvCache, "_attention", attention)


@pytest.mark.parametrize("family,method,dtype", [
    ("llama", "rkv", torch.float32), ("qwen2", "snapkv", torch.float32),
    ("qwen3", "h2o", torch.float32), ("llama", "rkv", torch.bfloat16),
    ("qwen3", "streamingllm", torch.float16)])
def test_small_budget_is_bounded_and_matches_the_library(family, method, dtype, device,
                                                           monkeypatch):
    if dtype == torch.float16 and device == "cpu":
        dtype = torch.float32  # half matmuls on CPU are slow and not the point here
    options = dict(method=method, budget=8, buffer=4, window=2)
    model = tiny_model(family, dtype=dtype, device=device)
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch(PROMPTS, device=device)
    recorder = Recorder(monkeypatch)
    cache = rkv.hf.RkvCache(model, **options)
    new_tokens = 30
    generate(model, ids, mask, new_tokens, cache)
    monkeypatch.undo()
    native = cache.native
    layers = model.config.num_hidden_layers
    params = native.params

    # Bounded: librkv's memory is what it allocated at create, and every
    # sequence holds at most budget + buffer tokens per head.
    assert native.stats().bytes_allocated == rkv.cache_size(
        max_seqs=len(PROMPTS), num_layers=layers, num_kv_heads=params["num_kv_heads"],
        num_q_heads=params["num_q_heads"], head_dim=params["head_dim"], dtype=params["dtype"],
        device=device, **options)
    for b, prompt in enumerate(PROMPTS):
        for layer in range(layers):
            logical, held = native.length(b, layer)
            assert logical == prompt + new_tokens - 1  # padding never entered
            assert held <= 8 + 4
    assert native.stats().tokens_evicted > 0

    # The C library, fed each sequence's real tokens one call at a time (the
    # prompt whole, then one token per step, compressing when full as its
    # append does), keeps the same tokens in the same slots as the adapter's
    # batched, left-padded cache whose decode steps went through a batch.
    storage = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}[dtype]
    for b in range(len(PROMPTS)):
        with rkv.Cache(max_seqs=1, num_layers=layers, num_kv_heads=params["num_kv_heads"],
                       num_q_heads=params["num_q_heads"], head_dim=params["head_dim"],
                       dtype=params["dtype"], **options) as replay:
            for layer, k, v, q, real, prompt in recorder.calls:
                keep = real[b]
                as_input = lambda x: x[b:b + 1, :, keep].to(dtype)  # noqa: E731 (the model's dtype)
                replay.append(layer, [0], as_input(k), as_input(v), q=as_input(q), prompt=prompt)
            for layer in range(layers):
                ours, theirs = native.view(b, layer), replay.view(0, layer)
                positions = ours.positions.cpu().numpy() if device == "cuda" else ours.positions
                assert np.array_equal(positions, theirs.positions), (storage, b, layer)
                for head in range(params["num_kv_heads"]):
                    assert list(native.positions(b, layer, head)) == list(replay.positions(0, layer, head))
    cache.close()


def test_decode_steps_are_batch_calls_only(monkeypatch):
    """After the prompt, a step is one rkv_append and one rkv_attend per layer,
    both through the batch (no host ids, no per-row call, no length query):
    the held cache is read where librkv keeps it."""
    model = tiny_model("llama")
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch(PROMPTS)
    cache = rkv.hf.RkvCache(model, budget=8, buffer=4, window=2)
    calls = []
    for name in ("rkv_append", "rkv_attend", "rkv_seq_length", "rkv_view_layer", "rkv_view"):
        original = getattr(rkv.capi, name)

        def spy(*args, _name=name, _original=original):
            calls.append((_name, args[1] if _name in ("rkv_append", "rkv_attend") else None))
            return _original(*args)

        monkeypatch.setattr(rkv.capi, name, spy)
    new_tokens = 6
    generate(model, ids, mask, new_tokens, cache)
    layers = model.config.num_hidden_layers
    first_batch_call = next(i for i, (name, args) in enumerate(calls)
                            if args is not None and args.batch is not None)
    prompt, decode = calls[:first_batch_call], calls[first_batch_call:]
    prompt_appends = [args for name, args in prompt if name == "rkv_append"]
    assert len(prompt_appends) == layers and all(a.seq_ids and a.batch is None for a in prompt_appends)
    appends = [args for name, args in decode if name == "rkv_append"]
    attends = [args for name, args in decode if name == "rkv_attend"]
    assert len(appends) == len(attends) == layers * (new_tokens - 1)
    assert all(a.batch is not None and not a.seq_ids and a.num_seqs == len(PROMPTS)
               for a in appends + attends)
    assert not [name for name, _ in decode if name not in ("rkv_append", "rkv_attend")]


def test_attention_wrapped_as_transformers_calls_its_own(device, monkeypatch):
    """Wrappers of transformers' attention functions pass `dropout` as the sixth
    positional argument (NVIDIA kvpress wraps every registered function so when
    imported): the "rkv" function takes its parameters in that order. Before,
    `scaling` came sixth and such a call raised TypeError (found on the H200
    with kvpress installed)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    inner = ALL_ATTENTION_FUNCTIONS["rkv"]

    def positional_dropout(module, query, key, value, attention_mask, dropout, **kwargs):
        return inner(module, query, key, value, attention_mask, dropout, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "rkv", positional_dropout)
    model = tiny_model("llama", device=device)
    ids, mask = left_padded_batch(PROMPTS, device=device)
    expected, _ = generate(model, ids, mask, 8, DynamicCache(config=model.config))
    model.set_attn_implementation("rkv")
    got, _ = generate(model, ids, mask, 8, rkv.hf.RkvCache(model, budget=64, buffer=8, window=4, max_len=64))
    assert torch.equal(got, expected)
