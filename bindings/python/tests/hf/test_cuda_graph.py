"""GPU: the decode step of the whole model, replayed from a CUDA graph
(RkvCache(..., cuda_graph=True)), equals the eager step bit for bit, across
compressions and beam-search reorderings; and an eager decode step makes no
host synchronisation. Skips without a GPU or a CUDA build of librkv (the lead
runs it on the H200: `ctest -R python_transformers` or pytest on this file)."""
import pytest
import torch
from conftest import generate, left_padded_batch, tiny_model

import rkv
import rkv.hf

PROMPTS = [7, 12, 3]


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    try:
        rkv.Cache(max_seqs=1, num_layers=1, num_kv_heads=1, head_dim=8, device="cuda").close()
    except rkv.UnsupportedError as e:
        pytest.skip(f"librkv built without CUDA: {e.message}")
    return "cuda"


def same_cache(a, b, rows):
    for seq in range(rows):
        for layer in range(a.native.params["num_layers"]):
            x, y = a.native.view(seq, layer), b.native.view(seq, layer)
            assert (x.length, x.logical_length) == (y.length, y.logical_length)
            assert torch.equal(x.positions, y.positions)
            assert torch.equal(x.k, y.k) and torch.equal(x.v, y.v)


@pytest.mark.parametrize("method,dtype", [("rkv", torch.bfloat16), ("h2o", torch.float32),
                                          ("snapkv", torch.float16), ("full", torch.bfloat16)])
def test_graph_replay_equals_eager(cuda, method, dtype):
    model = tiny_model("llama", dtype=dtype, device=cuda)
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch(PROMPTS, device=cuda)
    options = dict(method=method, budget=16, buffer=8, window=4, max_len=64)
    new_tokens = 40
    eager = rkv.hf.RkvCache(model, **options)
    graphed = rkv.hf.RkvCache(model, cuda_graph=True, **options)
    tokens_eager, logits_eager = generate(model, ids, mask, new_tokens, eager)
    tokens_graph, logits_graph = generate(model, ids, mask, new_tokens, graphed)
    # the first step is the prompt, the second runs eagerly and is captured, the rest replay
    assert graphed.graph_stats == {"captures": 1, "replays": new_tokens - 2}
    assert eager.graph_stats == {"captures": 0, "replays": 0}
    assert torch.equal(tokens_graph, tokens_eager)
    difference = (logits_graph.float() - logits_eager.float()).abs().max().item()
    assert torch.equal(logits_graph, logits_eager), f"largest logit difference {difference}"
    if method != "full":
        assert graphed.native.stats().compressions == eager.native.stats().compressions > 0
    same_cache(graphed, eager, len(PROMPTS))
    # the host bookkeeping followed the replays without reading anything back
    assert graphed.native.length(1, 0)[0] == PROMPTS[1] + new_tokens - 1
    assert graphed.get_seq_length() == eager.get_seq_length() == max(PROMPTS) + new_tokens - 1


def test_graph_replay_follows_beam_reordering(cuda):
    """Beam search reorders rows between replays (forks and rkv_batch_set):
    the replayed steps read the new ids from device memory."""
    model = tiny_model("llama", dtype=torch.bfloat16, device=cuda)
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch(PROMPTS[:2], device=cuda)
    options = dict(budget=16, buffer=8, window=4)
    beams = dict(num_beams=3, num_return_sequences=3, do_sample=False, max_new_tokens=30,
                 min_new_tokens=30, return_dict_in_generate=True)
    runs = {}
    for graph in (False, True):
        cache = rkv.hf.RkvCache(model, cuda_graph=graph, **options)
        runs[graph] = (model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache,
                                      **beams).sequences, cache)
    assert torch.equal(runs[True][0], runs[False][0])
    assert runs[True][1].graph_stats["replays"] > 20 and runs[True][1].forks > 0
    assert runs[True][1].native.stats().compressions > 0


def test_eager_decode_steps_make_no_host_sync(cuda):
    """Steps of the model called directly (no generate around them), through
    compressions: torch raises on any synchronising call."""
    model = tiny_model("llama", dtype=torch.bfloat16, device=cuda)
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch(PROMPTS, device=cuda)
    cache = rkv.hf.RkvCache(model, budget=16, buffer=8, window=4)
    out = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
    token = out.logits[:, -1:].argmax(dim=-1)
    position = mask.sum(dim=1, keepdim=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(30):
            out = model(input_ids=token, position_ids=position, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(dim=-1)
            position = position + 1
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert cache.native.stats().compressions > 0
    assert cache.native.length(2, 0)[0] == PROMPTS[2] + 30
