"""What transformers users do with a cache, through librkv's sequence calls,
against DynamicCache at a budget larger than the sequences (tokens identical):
beam search (reorder_cache forks rows, rkv_seq_copy), num_return_sequences
(each distinct prompt prefilled once and forked), assisted decoding (rejected
drafts rolled back, rkv_seq_truncate), batch_repeat_interleave and
batch_select_indices; and the clear error where rollback cannot work."""
import pytest
import torch
from conftest import left_padded_batch, tiny_model
from transformers import DynamicCache

import rkv
import rkv.hf

PROMPTS = [7, 12, 3]
LARGE = dict(budget=96, buffer=16, window=4)  # larger than any sequence here: nothing evicted


def rkv_model(family="llama", **overrides):
    model = tiny_model(family, **overrides)
    model.set_attn_implementation("rkv")
    return model


def run(model, cache, ids, mask, **options):
    return model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache,
                          return_dict_in_generate=True, **options).sequences


class Spy:
    """Counts the calls of some rkv.Cache methods (and passes them on)."""

    def __init__(self, monkeypatch, *names):
        self.counts = dict.fromkeys(names, 0)
        for name in names:
            original = getattr(rkv.Cache, name)

            def spy(cache, *args, _name=name, _original=original, **kwargs):
                self.counts[_name] += 1
                return _original(cache, *args, **kwargs)

            monkeypatch.setattr(rkv.Cache, name, spy)


@pytest.mark.parametrize("method", ["rkv", "h2o", "full"])
def test_beam_search_equals_dynamic_cache(method, monkeypatch):
    model = tiny_model("llama")
    ids, mask = left_padded_batch(PROMPTS)
    options = dict(num_beams=3, num_return_sequences=2, do_sample=False, max_new_tokens=16,
                   min_new_tokens=16)
    expected = run(model, DynamicCache(config=model.config), ids, mask, **options)
    model.set_attn_implementation("rkv")
    spy = Spy(monkeypatch, "copy", "append")
    cache = rkv.hf.RkvCache(model, method=method, max_len=128, **LARGE)
    got = run(model, cache, ids, mask, **options)
    assert torch.equal(got, expected)
    # The 3 beams of a prompt are one prefill and two forks; later steps fork
    # the beams that continue more than once.
    assert spy.counts["append"] >= model.config.num_hidden_layers
    assert cache.forks == spy.counts["copy"] > 2 * len(PROMPTS)
    assert cache.native.stats().tokens_evicted == 0


def test_num_return_sequences_forks_each_prompt(monkeypatch):
    model = tiny_model("qwen3")
    ids, mask = left_padded_batch(PROMPTS)
    options = dict(do_sample=True, num_return_sequences=4, max_new_tokens=12, min_new_tokens=12,
                   top_k=0, top_p=1.0, temperature=1.0)
    torch.manual_seed(11)
    expected = run(model, DynamicCache(config=model.config), ids, mask, **options)
    model.set_attn_implementation("rkv")
    spy = Spy(monkeypatch, "copy")
    cache = rkv.hf.RkvCache(model, **LARGE)
    torch.manual_seed(11)
    got = run(model, cache, ids, mask, **options)
    assert torch.equal(got, expected)
    assert spy.counts["copy"] == 3 * len(PROMPTS)  # one prefill per prompt, 3 forks of it
    for prompt_rows in range(len(PROMPTS)):  # the forks hold what their source holds
        first = 4 * prompt_rows
        lengths = {cache.native.length(first + i, 0) for i in range(4)}
        assert len(lengths) == 1


@pytest.mark.parametrize("method,max_rollback", [("rkv", 4), ("snapkv", 4), ("h2o", 4),
                                                 ("streamingllm", 0), ("full", 0)])
def test_assisted_decoding_equals_dynamic_cache(method, max_rollback, monkeypatch):
    """Greedy assisted decoding with a drafting model that is often wrong: the
    rejected drafts are rolled back in librkv and the tokens are those of
    plain greedy decoding with DynamicCache."""
    model = tiny_model("llama")
    assistant = tiny_model("llama", seed=5, num_hidden_layers=1)
    ids, mask = left_padded_batch([9])
    options = dict(do_sample=False, max_new_tokens=24, min_new_tokens=24)
    expected = run(model, DynamicCache(config=model.config), ids, mask, **options)
    model.set_attn_implementation("rkv")
    spy = Spy(monkeypatch, "truncate")
    cache = rkv.hf.RkvCache(model, method=method, max_rollback=max_rollback, max_len=128, **LARGE)
    got = run(model, cache, ids, mask, assistant_model=assistant, num_assistant_tokens=4,
              num_assistant_tokens_schedule="constant", **options)
    assert torch.equal(got, expected)
    assert spy.counts["truncate"] > 0  # drafts were rejected and rolled back
    logical = cache.native.length(0, 0)[0]
    assert logical == 9 + 24 - 1  # every accepted token, none of the rejected ones


def test_assisted_decoding_without_rollback_room_fails_clearly():
    """R-KV keeps the queries of its window: with max_rollback = 0 it can roll
    nothing back, and the error says what to set."""
    model = tiny_model("llama")
    assistant = tiny_model("llama", seed=5, num_hidden_layers=1)
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch([9])
    cache = rkv.hf.RkvCache(model, method="rkv", max_rollback=0, **LARGE)
    with pytest.raises(rkv.BadStateError, match="max_rollback >= the assistant's draft length"):
        run(model, cache, ids, mask, assistant_model=assistant, num_assistant_tokens=4,
            num_assistant_tokens_schedule="constant", do_sample=False, max_new_tokens=24)


def test_compressed_drafts_cannot_be_rolled_back():
    """Once tokens went through a compression they are gone: crop refuses
    (BadStateError naming the limit) and nothing changes."""
    model = rkv_model()
    ids, mask = left_padded_batch([20])
    cache = rkv.hf.RkvCache(model, method="streamingllm", budget=8, buffer=4, window=2, sink=2)
    model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
    before = cache.native.length(0, 0)
    limit = cache.native.rollback_limit(0)
    with pytest.raises(rkv.BadStateError, match=f"can roll back {limit}"):
        cache.crop(-(limit + 1))
    assert cache.native.length(0, 0) == before and cache.get_seq_length() == 20
    cache.crop(-limit)
    assert cache.get_seq_length() == 20 - limit


def decode_steps(model, cache, ids, steps):
    """Greedy steps with model(...) directly: the logits of each."""
    logits = []
    for _ in range(steps):
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        logits.append(out.logits[:, -1])
        ids = out.logits[:, -1:].argmax(dim=-1)
    return torch.stack(logits, dim=1)


def test_batch_repeat_interleave_and_select_indices():
    model = tiny_model("llama")
    ids = torch.randint(3, 256, (2, 8), generator=torch.Generator().manual_seed(4))
    caches = {"dynamic": DynamicCache(config=model.config)}
    results = {}
    for name in ("dynamic", "rkv"):
        if name == "rkv":
            model.set_attn_implementation("rkv")
            caches[name] = rkv.hf.RkvCache(model, max_batch_size=4, **LARGE)
        cache = caches[name]
        first = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        cache.batch_repeat_interleave(2)  # rows 0 0 1 1
        step = decode_steps(model, cache, first.repeat_interleave(2, dim=0), 5)
        cache.batch_select_indices(torch.tensor([3, 0]))
        after = decode_steps(model, cache, step[:, -1:].argmax(-1)[[3, 0]], 5)
        results[name] = (step, after)
    torch.testing.assert_close(results["rkv"][0], results["dynamic"][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results["rkv"][1], results["dynamic"][1], rtol=1e-4, atol=1e-4)
    assert caches["rkv"].forks == 2
    with pytest.raises(ValueError, match="max_batch_size=8"):
        caches["rkv"].batch_repeat_interleave(4)
