"""The Cache class: round trips through every input layout, views without
copies, compression, stats, attention, lifetime."""
import threading
import time

import numpy as np
import pytest

import rkv

H, HQ, D = 2, 4, 16


def make(**options):
    base = dict(max_seqs=4, num_layers=2, num_kv_heads=H, num_q_heads=HQ, head_dim=D,
                budget=16, buffer=8, window=4)
    base.update(options)
    return rkv.Cache(**base)


def randn(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_round_trip_prompt_then_decode():
    k, v, q = randn(1, H, 10, D, seed=1), randn(1, H, 10, D, seed=2), randn(1, HQ, 10, D, seed=3)
    with make() as cache:
        cache.append(1, [2], k, v, q=q, prompt=True)
        view = cache.view(2, 1)
        assert (view.length, view.logical_length) == (10, 10)
        np.testing.assert_array_equal(view.k, k[0])
        np.testing.assert_array_equal(view.v, v[0])
        np.testing.assert_array_equal(view.positions, np.tile(np.arange(10), (H, 1)))
        # a decode step: [n, H, D]
        k1, v1, q1 = randn(1, H, D, seed=4), randn(1, H, D, seed=5), randn(1, HQ, D, seed=6)
        cache.append(1, [2], k1, v1, q=q1)
        view = cache.view(2, 1)
        np.testing.assert_array_equal(view.k[:, 10], k1[0])
        assert cache.length(2, 1) == (11, 11)
        assert cache.length(2, 0) == (0, 0)  # other layers untouched


def test_views_share_the_cache_memory():
    with make() as cache:
        cache.append(0, [0], randn(1, H, 5, D), randn(1, H, 5, D), q=randn(1, HQ, 5, D))
        view = cache.view(0, 0)
        layer = cache.view_layer(0)
        # the same bytes, not a copy
        assert view.k.__array_interface__["data"][0] == layer.k.__array_interface__["data"][0]
        assert np.shares_memory(layer.k[0, :, :5], view.k)
        assert layer.k.shape == (4, H, layer.capacity, D)
        assert layer.capacity == 16 + 8
        np.testing.assert_array_equal(layer.lengths, [5, 0, 0, 0])
        assert not view.positions.flags.writeable


def test_layouts_agree():
    """bhtd, bthd, packed varlen and left-padded inputs store the same tokens."""
    k, v, q = randn(2, H, 6, D, seed=1), randn(2, H, 6, D, seed=2), randn(2, HQ, 6, D, seed=3)
    with make() as a, make() as b, make() as c, make() as d:
        a.append(0, [0, 1], k, v, q=q)
        b.append(0, [0, 1], k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3),
                 q=q.transpose(0, 2, 1, 3), layout="bthd")
        packed = lambda x: np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(12, x.shape[1], D))
        c.append(0, [0, 1], packed(k), packed(v), q=packed(q), num_tokens=[6, 6],
                 token_offsets=[0, 6])
        # left padding: sequence 1 has only its last 4 tokens
        d.append(0, [0, 1], k, v, q=q, num_tokens=[6, 4], token_offsets=[0, 2])
        for cache in (a, b, c):
            for seq in (0, 1):
                np.testing.assert_array_equal(cache.view(seq, 0).k, k[seq])
                np.testing.assert_array_equal(cache.view(seq, 0).v, v[seq])
        np.testing.assert_array_equal(d.view(1, 0).k, k[1, :, 2:])
        assert d.view(1, 0).logical_length == 4


def test_input_dtypes_and_strides():
    k = randn(1, H, 3, 2 * D)[..., :D]  # strided rows, contiguous last axis
    with make() as cache:
        cache.append(0, [0], k, k.astype(np.float16), q=randn(1, HQ, 3, D))
        view = cache.view(0, 0)
        np.testing.assert_array_equal(view.k, k[0])
        np.testing.assert_array_equal(view.v, k[0].astype(np.float16).astype(np.float32))
    with pytest.raises(rkv.InvalidArgumentError, match="contiguous"):
        with make() as cache:
            cache.append(0, [0], k[..., ::2], k[..., ::2])
    with pytest.raises(rkv.InvalidArgumentError, match="dtype"):
        with make() as cache:
            cache.append(0, [0], k.astype(np.float64), k)


def test_bf16_storage_reads_as_bits():
    k = randn(1, H, 3, D)
    with make(dtype="bf16") as cache:
        cache.append(0, [0], k, k, q=randn(1, HQ, 3, D))
        bits = cache.view(0, 0).k
        assert bits.dtype == np.uint16
        as_float = (bits.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_allclose(as_float, k[0], rtol=1e-2)


def test_fp8_storage_has_scales():
    """FP8 E4M3 storage: uint8 bytes and float32 scales; value = fp8 * scale."""
    k = randn(1, H, 3, D, seed=7) * 5
    with make(dtype="fp8") as cache:
        cache.append(0, [0], k, k, q=randn(1, HQ, 3, D))
        view = cache.view(0, 0)
        assert view.dtype == rkv.DType.FP8_E4M3 and view.k.dtype == np.uint8
        assert view.k_scale.shape == (H, 3) and view.k_scale.dtype == np.float32
        mantissa, exponent = np.frexp(view.k_scale)
        assert (mantissa == 0.5).all()  # powers of two
        # E4M3 by its definition: sign, 4 exponent bits (bias 7), 3 mantissa bits
        b = view.k.astype(np.int32)
        e, m = (b >> 3) & 15, b & 7
        value = np.where(e == 0, m / 512.0, (1 + m / 8.0) * np.exp2(e - 7.0)) * np.where(b & 128, -1, 1)
        np.testing.assert_allclose(value * view.k_scale[..., None], k[0], rtol=1 / 16, atol=1e-3)
        assert cache.view_layer(0).k_scale.shape == (4, H, 16 + 8)
    with make(dtype="bf16") as cache:
        assert cache.view(0, 0).k_scale is None


def test_compression_keeps_the_budget():
    with make(method="snapkv") as cache:
        n = 24 + 5
        cache.append(0, [0], randn(1, H, n, D), randn(1, H, n, D), q=randn(1, HQ, n, D))
        logical, held = cache.length(0, 0)
        assert logical == n and held <= 24
        cache.compress(0, 0)
        assert cache.length(0, 0) == (n, 16)
        view = cache.view(0, 0)
        for head in range(H):
            kept = cache.positions(0, 0, head)
            np.testing.assert_array_equal(kept, view.positions[head])
            assert list(kept[-4:]) == list(range(n - 4, n))  # the window stays
            assert np.all(np.diff(kept) > 0)  # position mode: sorted
        stats = cache.stats(0)
        assert stats.tokens_held == 16 and stats.compressions >= 1
        assert stats.tokens_appended == n and stats.tokens_evicted == n - 16
        assert cache.stats().bytes_allocated == rkv.cache_size(
            max_seqs=4, num_layers=2, num_kv_heads=H, num_q_heads=HQ, head_dim=D,
            budget=16, buffer=8, window=4, method="snapkv")


def test_compress_due_reset_and_params():
    with make(auto_compress=0) as cache:
        assert not cache.compress_due(0, 0)
        cache.append(0, [0], randn(1, H, 24, D), randn(1, H, 24, D), q=randn(1, HQ, 24, D))
        assert cache.compress_due(0, 0) and cache.compress_due()
        cache.compress()  # every due sequence and layer
        assert cache.length(0, 0) == (24, 16)
        cache.reset(0)
        assert cache.length(0, 0) == (0, 0)
        params = cache.params
        assert params["method"] == rkv.Method.RKV and params["budget"] == 16
        assert params["auto_compress"] == 0 and params["device_type"] == rkv.Device.CPU
        cache.set("lambda", 0.25)
        cache.set(rkv.Param.POOLING, "mean")
        assert cache.params["lambda"] == pytest.approx(0.25)
        assert cache.params["pooling"] == rkv.Pooling.MEAN
    with make(seed=2**63 + 1, method="random") as cache:
        assert cache.params["seed"] == 2**63 + 1  # not rounded through a double


def test_attend_matches_numpy():
    k, v, q = randn(1, H, 7, D, seed=1), randn(1, H, 7, D, seed=2), randn(1, HQ, 7, D, seed=3)
    query = randn(1, HQ, D, seed=4)
    with make() as cache:
        cache.append(0, [3], k, v, q=q)
        out = cache.attend(0, [3], query)
        for h in range(HQ):
            g = h // (HQ // H)
            logits = k[0, g] @ query[0, h] / np.sqrt(D)
            p = np.exp(logits - logits.max())
            p /= p.sum()
            np.testing.assert_allclose(out[0, h], p @ v[0, g], rtol=1e-4, atol=1e-5)


def test_close_twice_and_use_after_close():
    cache = make()
    assert not cache.closed
    cache.close()
    cache.close()  # idempotent
    assert cache.closed and "closed" in repr(cache)
    with pytest.raises(ValueError, match="closed"):
        cache.view(0, 0)
    with make() as cache:
        pass
    assert cache.closed
    cache.close()


def test_gil_is_released_during_compression():
    """While one thread compresses a large cache, another keeps running Python."""
    big = dict(max_seqs=1, num_layers=1, num_kv_heads=8, num_q_heads=8, head_dim=128,
               budget=1024, buffer=1024, window=8, auto_compress=0)
    with rkv.Cache(**big) as cache:
        n = 2048
        cache.append(0, [0], randn(1, 8, n, 128), randn(1, 8, n, 128), q=randn(1, 8, n, 128))
        started = time.perf_counter()
        worker = threading.Thread(target=cache.compress, args=(0, 0))
        ticks = []
        worker.start()
        while worker.is_alive():
            ticks.append(time.perf_counter())
        worker.join()
        elapsed = time.perf_counter() - started
        assert cache.length(0, 0) == (n, 1024)
    gaps = np.diff([started] + ticks)
    assert elapsed > 0.02, "compression too quick to tell"
    # With the GIL held through the call, this thread would stall for all of it.
    assert len(ticks) > 100 and gaps.max() < 0.5 * elapsed


def test_version():
    assert rkv.__version__ == rkv.capi.rkv_version_string()
    assert rkv.capi.rkv_version_number() == rkv.capi.RKV_VERSION_NUMBER


def test_one_naming_rule():
    """Methods are the C functions without rkv_ and their object; experimental
    functions live in rkv.experimental, not on the Cache."""
    with make(method="snapkv") as cache:
        n = 20
        cache.append(0, [1], randn(1, H, n, D), randn(1, H, n, D), q=randn(1, HQ, n, D))
        assert cache.get("budget") == 16 and cache.get(rkv.Param.METHOD) == rkv.Method.SNAPKV
        assert cache.get("lambda") == pytest.approx(0.1)
        scores = rkv.experimental.scores(cache, 1, 0, 0, "importance")
        assert scores.shape == (n - 4,) and np.all(scores >= 0)  # one per candidate (length - window)
        with pytest.raises(rkv.InvalidArgumentError, match="score kind"):
            rkv.experimental.scores(cache, 1, 0, 0, "novelty")
        with pytest.raises(rkv.UnsupportedError):
            rkv.experimental.set_matmul_path(cache, "fused")  # a CPU cache has one path
        with pytest.raises(rkv.UnsupportedError):
            rkv.experimental.set_matmul_path(cache, "wgmma_int8")
        with pytest.raises(rkv.InvalidArgumentError, match="matmul path"):
            rkv.experimental.set_matmul_path(cache, "int8")
        rkv.experimental.set_matmul_path(cache, "auto")
        rkv.experimental.sync_lengths(cache)  # a CPU cache: already in agreement
        assert cache.length(1, 0) == (n, n)
    for old in ("set_param", "seq_length", "kept_positions", "layer_view", "inspect_scores"):
        assert not hasattr(rkv.Cache, old)
    assert not hasattr(rkv, "KVView")
