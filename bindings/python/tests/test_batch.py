"""rkv.Batch: decode steps through a batch whose members change, advanced on
the host, hold and attend exactly as the same steps made with host ids; its
lifetime is bounded by its cache's; bad ids, shapes and states are refused."""
import numpy as np
import pytest

import rkv

SEQS, ENTRIES, LAYERS, H, HQ, D = 5, 4, 2, 2, 4, 16


def make(**options):
    base = dict(max_seqs=SEQS, num_layers=LAYERS, num_kv_heads=H, num_q_heads=HQ, head_dim=D,
                budget=12, buffer=6, window=3, kernel=3, sink=2, max_len=64)
    base.update(options)
    return rkv.Cache(**base)


def rows(rng, heads):
    return rng.standard_normal((ENTRIES, heads, D)).astype(np.float32)


# Which sequences run at each step: members come and go, padding in between.
SCHEDULE = [[0, 1, 2], [0, 1, 2], [2, -1, 0, 4], [4, 3], [1, 3, 4, 0], [0, -1, -1, 1]]


@pytest.mark.parametrize("method", ["rkv", "snapkv", "h2o", "streamingllm", "keydiff", "random", "full"])
def test_batch_steps_equal_host_id_steps(method):
    rng = np.random.default_rng(1)
    with make(method=method, seed=5) as by_batch, make(method=method, seed=5) as by_ids, \
            rkv.Batch(by_batch, ENTRIES) as batch:
        for step in range(60):
            ids = SCHEDULE[step % len(SCHEDULE)]
            # compress before the step, as a graph-replaying engine must
            for cache in (by_batch, by_ids):
                if method != "full" and cache.compress_due():
                    cache.compress()
            batch.set(ids)
            assert batch.ids == tuple(ids) + (-1,) * (ENTRIES - len(ids))
            for layer in range(LAYERS):
                k, v, q = rows(rng, H), rows(rng, H), rows(rng, HQ)
                by_batch.append(layer, batch, k, v, q=q)
                sentinel = np.full((ENTRIES, HQ, D), 7.0, np.float32)
                out = by_batch.attend(layer, batch, q, out=sentinel)
                live = [i for i, s in enumerate(ids) if s >= 0]
                seqs = [ids[i] for i in live]
                by_ids.append(layer, seqs, k[live], v[live], q=q[live])
                expected = by_ids.attend(layer, seqs, q[live])
                np.testing.assert_array_equal(out[live], expected)
                padding = [i for i in range(ENTRIES) if i not in live]
                assert np.all(out[padding] == 7.0)  # padding rows untouched
            batch.advance(1)
            if method == "full" and step == 40:
                break
        for seq in range(SEQS):
            for layer in range(LAYERS):
                a, b = by_batch.view(seq, layer), by_ids.view(seq, layer)
                assert (a.length, a.logical_length) == (b.length, b.logical_length)
                np.testing.assert_array_equal(a.k, b.k)
                np.testing.assert_array_equal(a.positions, b.positions)
        assert by_batch.stats().compressions == by_ids.stats().compressions
        if method != "full":
            assert by_batch.stats().compressions > 0


def test_one_advance_accounts_for_several_steps():
    rng = np.random.default_rng(2)
    with make() as cache, rkv.Batch(cache, 2) as batch:
        batch.set([3, 1])
        for _ in range(3):
            for layer in range(LAYERS):
                cache.append(layer, batch, rng.standard_normal((2, H, D)).astype(np.float32),
                             rng.standard_normal((2, H, D)).astype(np.float32),
                             q=rng.standard_normal((2, HQ, D)).astype(np.float32))
        assert cache.length(3, 0) == (0, 0)  # the host has not been told yet
        assert list(cache.view_layer(0).lengths) == [0, 3, 0, 3, 0]  # the memory has
        batch.advance(3)
        assert cache.length(3, 1) == (3, 3) and cache.length(1, 0) == (3, 3)


def test_transformers_shaped_rows():
    """[n, H, 1, D] (transformers' decode step) is one token per entry too."""
    rng = np.random.default_rng(3)
    k = rng.standard_normal((ENTRIES, H, 1, D)).astype(np.float32)
    with make(method="streamingllm") as cache, rkv.Batch(cache, ENTRIES) as batch:
        batch.set([2])
        cache.append(0, batch, k, k)
        batch.advance(1)
        np.testing.assert_array_equal(cache.view(2, 0).k[:, 0], k[0, :, 0])


def test_lifetime():
    cache = make()
    batch = rkv.Batch(cache, 2)
    with batch:
        batch.set([0])
    assert batch.closed
    batch.close()  # idempotent
    with pytest.raises(ValueError, match="closed rkv.Batch"):
        batch.set([1])
    other = rkv.Batch(cache, 2)
    cache.close()  # closes its batches: a batch never outlives its cache
    assert other.closed
    with pytest.raises(ValueError, match="closed"):
        other.advance(1)
    with pytest.raises(ValueError, match="closed rkv.Cache"):
        rkv.Batch(cache, 2)


def test_bad_input_leaves_cache_and_batch_unchanged():
    rng = np.random.default_rng(4)
    k, q = rng.standard_normal((ENTRIES, H, D)).astype(np.float32), \
        rng.standard_normal((ENTRIES, HQ, D)).astype(np.float32)
    with make() as cache, make() as other, rkv.Batch(cache, ENTRIES) as batch:
        batch.set([1, 2])
        with pytest.raises(rkv.OutOfRangeError, match="seq_ids\\[1\\] is 5"):
            batch.set([0, 5])
        with pytest.raises(rkv.OutOfRangeError):
            batch.set([-2])
        with pytest.raises(rkv.InvalidArgumentError, match="twice"):
            batch.set([3, 3])
        with pytest.raises(rkv.InvalidArgumentError, match="4 entries"):
            batch.set([0, 1, 2, 3, 4])
        assert batch.ids == (1, 2, -1, -1)
        with pytest.raises(rkv.InvalidArgumentError):
            batch.advance(-1)
        with pytest.raises(rkv.InvalidArgumentError, match="another cache"):
            other.append(0, batch, k, k, q=q)
        with pytest.raises(rkv.CapacityError, match="args->k.extent"):
            cache.append(0, batch, k[:2], k[:2], q=q)  # a row per entry, padding included
        with pytest.raises(rkv.CapacityError, match="args->out.extent"):
            cache.attend(0, batch, q, out=np.zeros((2, HQ, D), np.float32))
        with pytest.raises(rkv.MissingQueriesError):
            cache.append(0, batch, k, k)  # R-KV keeps queries
        with pytest.raises(rkv.InvalidArgumentError, match="PROMPT"):
            cache.append(0, batch, k, k, q=q, prompt=True)
        with pytest.raises(rkv.InvalidArgumentError, match="one token per entry"):
            cache.append(0, batch, k, k, q=q, num_tokens=[1, 1, 1, 1])
        with pytest.raises(rkv.InvalidArgumentError, match="one token per entry"):
            two = rng.standard_normal((ENTRIES, H, 2, D)).astype(np.float32)
            cache.append(0, batch, two, two, q=q)
        with pytest.raises(rkv.OutOfRangeError):
            cache.append(LAYERS, batch, k, k, q=q)
        assert cache.length(1, 0) == (0, 0) and list(cache.view_layer(0).lengths) == [0] * SEQS


def test_a_step_past_capacity_faults_the_cache():
    """A batch append never compresses: a step into a full sequence drops the
    token, and the advance that accounts for it faults the cache."""
    rng = np.random.default_rng(5)
    with make(method="full", max_len=4) as cache, rkv.Batch(cache, 1) as batch:
        batch.set([0])
        for step in range(5):
            for layer in range(LAYERS):
                x = rng.standard_normal((1, H, D)).astype(np.float32)
                cache.append(layer, batch, x, x)
            if step < 4:
                batch.advance(1)
        with pytest.raises(rkv.CapacityError, match="sequence 0"):
            batch.advance(1)
        with pytest.raises(rkv.FaultedError):
            cache.compress()
