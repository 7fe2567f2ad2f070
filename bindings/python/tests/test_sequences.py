"""Sequences (librkv 0.2): rollback (Cache.truncate, rollback_limit,
max_rollback), fork (Cache.copy) and per-request budgets (set_budget,
get_budget), each with the bad inputs of issue 10 as exceptions that leave the
cache unchanged."""
import numpy as np
import pytest

import rkv

H, HQ, D, LAYERS = 2, 4, 16, 2


def make(**options):
    base = dict(max_seqs=4, num_layers=LAYERS, num_kv_heads=H, num_q_heads=HQ, head_dim=D,
                budget=16, buffer=8, window=4, kernel=3)
    base.update(options)
    return rkv.Cache(**base)


class Tokens:
    """A reproducible stream of tokens: token t of a sequence has the same
    K/V/Q wherever it is appended."""

    def __init__(self, seed=0, count=200):
        rng = np.random.default_rng(seed)
        self.k = rng.standard_normal((LAYERS, count, H, D)).astype(np.float32)
        self.v = rng.standard_normal((LAYERS, count, H, D)).astype(np.float32)
        self.q = rng.standard_normal((LAYERS, count, HQ, D)).astype(np.float32)

    def append(self, cache, seq, first, count, prompt=False):
        """Tokens first .. first+count-1 into every layer of `seq` ([n, T, H, D])."""
        for layer in range(LAYERS):
            part = slice(first, first + count)
            cache.append(layer, [seq], self.k[layer, None, part], self.v[layer, None, part],
                         q=self.q[layer, None, part], layout="bthd", prompt=prompt)


def snapshot(cache, seq):
    """Everything a sequence holds, copied out of the cache."""
    out = []
    for layer in range(LAYERS):
        view = cache.view(seq, layer)
        out.append((view.length, view.logical_length, view.k.copy(), view.v.copy(),
                    view.positions.copy()))
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for (la, ga, ka, va, pa), (lb, gb, kb, vb, pb) in zip(a, b):
        assert (la, ga) == (lb, gb)
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_array_equal(pa, pb)


# --- rollback ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["rkv", "snapkv", "h2o", "streamingllm", "keydiff", "full"])
def test_drafts_rolled_back_equal_drafts_never_made(method):
    """Prompt, decode, 3 drafts rolled back, decode on past two compressions:
    bit for bit the cache of a run that never drafted."""
    tokens, drafts = Tokens(1), Tokens(2)
    with make(method=method, max_rollback=4, max_len=128) as a, \
            make(method=method, max_rollback=4, max_len=128) as b:
        for cache in (a, b):
            tokens.append(cache, 0, 0, 10, prompt=True)
            tokens.append(cache, 0, 10, 4)
        drafts.append(b, 0, 14, 3)  # another sequence's tokens at positions 14 .. 16
        assert b.rollback_limit(0) >= 3
        b.truncate(0, 3)
        assert b.length(0, 0) == (14, 14)
        assert_same(snapshot(a, 0), snapshot(b, 0))
        for cache in (a, b):
            for t in range(14, 60):
                tokens.append(cache, 0, t, 1)
        assert a.stats(0).compressions > 0 or method == "full"
        assert_same(snapshot(a, 0), snapshot(b, 0))


def test_rollback_limit_and_the_refusal_that_names_it():
    tokens = Tokens(3)
    with make(max_rollback=2) as cache:
        tokens.append(cache, 0, 0, 24, prompt=True)  # exactly budget + buffer: nothing compressed yet
        assert cache.rollback_limit(0) == 2  # R-KV keeps window + max_rollback queries
        before = snapshot(cache, 0)
        with pytest.raises(rkv.BadStateError, match="2") as e:
            cache.truncate(0, 3)
        assert "rkv_seq_rollback_limit" in e.value.message or "roll" in e.value.message
        assert_same(before, snapshot(cache, 0))  # unchanged
        with pytest.raises(rkv.InvalidArgumentError):
            cache.truncate(0, -1)
        with pytest.raises(rkv.OutOfRangeError):
            cache.truncate(9, 1)
        cache.truncate(0, 0)  # nothing to do
        cache.truncate(0, 2)
        assert cache.length(0, 1) == (22, 22)
        # a compression: the tokens before it can no longer be rolled back
        tokens.append(cache, 0, 22, 3)  # 25 > 24 held: compressed to 16 first
        assert cache.stats(0).compressions == LAYERS
        assert cache.rollback_limit(0) <= 2
        with pytest.raises(rkv.BadStateError):
            cache.truncate(0, 5)


def test_full_rolls_back_everything_not_compressed():
    tokens = Tokens(4)
    with make(method="full", max_len=64) as cache:
        tokens.append(cache, 0, 0, 30, prompt=True)
        assert cache.rollback_limit(0) == 30
        cache.truncate(0, 30)
        assert cache.length(0, 0) == (0, 0)
        assert cache.stats(0).tokens_appended == 0


def test_max_rollback_is_a_parameter():
    with make(max_rollback=16) as cache:
        assert cache.params["max_rollback"] == 16 and cache.get("max_rollback") == 16
    low, high = rkv.Param.MAX_ROLLBACK.bounds
    assert low == 0 and high >= 16
    with pytest.raises(rkv.OutOfRangeError):
        make(max_rollback=int(high) + 1)
    assert rkv.cache_size(max_seqs=4, num_layers=LAYERS, num_kv_heads=H, num_q_heads=HQ, head_dim=D,
                          budget=16, buffer=8, window=4, max_rollback=16) > rkv.cache_size(
        max_seqs=4, num_layers=LAYERS, num_kv_heads=H, num_q_heads=HQ, head_dim=D,
        budget=16, buffer=8, window=4)


# --- fork -------------------------------------------------------------------

# Not "random": its scores hash the sequence id (docs/algorithm.md), so a fork
# under Random evicts differently from its source at the next compression.
@pytest.mark.parametrize("method", ["rkv", "h2o", "streamingllm"])
def test_copy_forks_a_sequence(method):
    """The fork holds what its source holds; given the same tokens both evolve
    identically (compressions included), given different ones independently."""
    tokens, other = Tokens(5), Tokens(6)
    with make(method=method, seed=3) as cache:
        tokens.append(cache, 1, 0, 20, prompt=True)
        cache.copy(1, 3)
        assert_same(snapshot(cache, 1), snapshot(cache, 3))
        assert cache.get_budget(3) == cache.get_budget(1)
        for t in range(20, 50):
            tokens.append(cache, 1, t, 1)
            tokens.append(cache, 3, t, 1)
        assert cache.stats(1).compressions > 0
        assert_same(snapshot(cache, 1), snapshot(cache, 3))
        before = snapshot(cache, 1)
        other.append(cache, 3, 50, 5)
        assert_same(before, snapshot(cache, 1))  # the source does not see the fork's tokens
        assert cache.length(3, 0)[0] == 55 and cache.length(1, 0)[0] == 50


def test_copy_refuses_a_busy_or_the_same_slot():
    tokens = Tokens(7)
    with make() as cache:
        tokens.append(cache, 0, 0, 5)
        tokens.append(cache, 2, 0, 7)
        before = [snapshot(cache, s) for s in range(4)]
        with pytest.raises(rkv.BadStateError) as e:
            cache.copy(0, 2)  # slot 2 holds a request
        assert "2" in e.value.message
        with pytest.raises(rkv.InvalidArgumentError):
            cache.copy(0, 0)
        with pytest.raises(rkv.OutOfRangeError):
            cache.copy(0, 4)
        with pytest.raises(rkv.OutOfRangeError):
            cache.copy(-3, 1)
        for s in range(4):
            assert_same(before[s], snapshot(cache, s))
        cache.reset(2)
        cache.copy(0, 2)  # empty now
        assert_same(snapshot(cache, 0), snapshot(cache, 2))


# --- per-request budgets -------------------------------------------------------

def test_per_request_budget():
    tokens = Tokens(8)
    with make(method="snapkv", auto_compress=1) as cache:
        assert cache.get_budget(0) == 16
        cache.set_budget(0, 8)
        assert cache.get_budget(0) == 8 and cache.get_budget(1) == 16
        for seq in (0, 1):
            tokens.append(cache, seq, 0, 40, prompt=True)
        for layer in range(LAYERS):
            assert cache.length(0, layer)[1] <= 8 + 8
            assert cache.length(1, layer)[1] > 8 + 8
        cache.compress(0)
        assert cache.length(0, 0) == (40, 8)
        cache.copy(0, 2)
        assert cache.get_budget(2) == 8  # a fork keeps its source's budget
        cache.reset(0)
        assert cache.get_budget(0) == 16  # reset restores the cache's


def test_budget_bounds_and_state():
    tokens = Tokens(9)
    with make(sink=2) as cache:
        with pytest.raises(rkv.OutOfRangeError) as e:
            cache.set_budget(0, 17)  # above the cache's budget: no memory for it
        assert "16" in e.value.message
        with pytest.raises(rkv.OutOfRangeError):
            cache.set_budget(0, 4)  # not above the window
        with pytest.raises(rkv.OutOfRangeError):
            cache.set_budget(7, 8)
        tokens.append(cache, 0, 0, 3)
        with pytest.raises(rkv.BadStateError):
            cache.set_budget(0, 8)  # only while the sequence is empty
        assert cache.get_budget(0) == 16
    with make(method="full", max_len=32) as cache:
        with pytest.raises(rkv.UnsupportedError):
            cache.set_budget(0, 8)
        assert cache.get_budget(0) == 32


def test_device_ids_out_of_range():
    with pytest.raises(rkv.OutOfRangeError):
        make(device="cuda:5000")  # beyond the parameter's bounds on any machine
    with pytest.raises((rkv.OutOfRangeError, rkv.UnsupportedError)) as e:
        make(device="cuda:999")  # no machine has 1000 GPUs; CPU builds have none
    assert "device" in e.value.message.lower() or "CUDA" in e.value.message
