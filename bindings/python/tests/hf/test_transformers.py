"""RkvCache in transformers' generate: identical to transformers' own cache
when nothing is evicted; bounded and equal to the C library's own selection
when the budget is small."""
import numpy as np
import pytest
import torch
from conftest import left_padded_batch, tiny_model
from transformers import DynamicCache

import rkv
import rkv.hf

METHODS = ["rkv", "snapkv", "h2o", "streamingllm", "keydiff", "random", "full"]
PROMPTS = [7, 12, 3]  # left padded to 12


def generate(model, ids, mask, new_tokens, cache=None):
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, past_key_values=cache,
                         return_dict_in_generate=True, output_logits=True)
    return out.sequences, torch.stack(out.logits, dim=1)


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


def test_rkv_attention_without_rkv_cache_is_plain_sdpa(device):
    model = tiny_model("qwen2", device=device)
    ids, mask = left_padded_batch(PROMPTS, device=device)
    expected, _ = generate(model, ids, mask, 8)
    model.set_attn_implementation("rkv")
    got, _ = generate(model, ids, mask, 8, DynamicCache(config=model.config))
    assert torch.equal(got, expected)


class Recorder:
    """Records every append the adapter makes to librkv (copies of its inputs)."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = rkv.Cache.append

        def append(cache, layer, seq_ids, k, v, q=None, **kw):
            self.calls.append((layer, list(seq_ids), k.cpu().clone(), v.cpu().clone(),
                               q.cpu().clone(), list(kw["num_tokens"]),
                               list(kw["token_offsets"]), kw["prompt"]))
            return original(cache, layer, seq_ids, k, v, q, **kw)

        monkeypatch.setattr(rkv.Cache, "append", append)


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
    monkeypatch.undo()  # stop recording: the replay below appends too
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
            logical, held = native.seq_length(b, layer)
            assert logical == prompt + new_tokens - 1  # padding never entered
            assert held <= 8 + 4
    assert native.stats().tokens_evicted > 0

    # The C library, fed the same K/V/Q one sequence at a time, keeps the same
    # tokens in the same slots as the adapter's batched, left-padded cache.
    for b in range(len(PROMPTS)):
        with rkv.Cache(max_seqs=1, num_layers=layers, num_kv_heads=params["num_kv_heads"],
                       num_q_heads=params["num_q_heads"], head_dim=params["head_dim"],
                       dtype=params["dtype"], **options) as replay:
            for layer, seqs, k, v, q, counts, offsets, prompt in recorder.calls:
                if b not in seqs:
                    continue
                i = seqs.index(b)
                part = slice(offsets[i], offsets[i] + counts[i])
                replay.append(layer, [0], k[i:i + 1, :, part], v[i:i + 1, :, part],
                              q=q[i:i + 1, :, part], prompt=prompt)
            for layer in range(layers):
                ours, theirs = native.view(b, layer), replay.view(0, layer)
                positions = ours.positions.cpu().numpy() if device == "cuda" else ours.positions
                assert np.array_equal(positions, theirs.positions)
                for head in range(params["num_kv_heads"]):
                    assert list(native.kept_positions(b, layer, head)) == list(
                        replay.kept_positions(0, layer, head))
    cache.close()


def test_unsupported_uses_fail_clearly():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="attn_implementation"):
        rkv.hf.RkvCache(model)
    model.set_attn_implementation("rkv")
    cache = rkv.hf.RkvCache(model, budget=8, buffer=4, window=2)
    with pytest.raises(NotImplementedError):
        cache.crop(-1)
    with pytest.raises(NotImplementedError):
        cache.reorder_cache(torch.tensor([0]))
