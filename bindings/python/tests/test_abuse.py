"""The binding under abuse (issue 11): arrays shorter than the call says,
read-only outputs, and a cache closed under a view or under a call in flight.
A Python user gets an exception, never a read past an array, a write into
immutable memory or a segfault.

The lifetime cases run in a child interpreter: on a binding without the fix
they crash the process (a read of unmapped memory), and a crash must fail the
test, not end the test run."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rkv

H, HQ, D = 2, 4, 16


def make(**options):
    base = dict(max_seqs=2, num_layers=1, num_kv_heads=H, num_q_heads=HQ, head_dim=D,
                budget=16, buffer=8, window=4)
    base.update(options)
    return rkv.Cache(**base)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- finding 2: every array must hold the tokens the call reads from it --------
# Since librkv 0.2 every rkv_tensor carries its extent and the library checks
# each access against it: the binding sets the extent of every array, and the
# library's CapacityError names the tensor that is too short.

def test_v_and_q_shorter_than_k_are_refused():
    """k holds 12 tokens, v 2 and q 1: the token count must not come from k alone."""
    with make() as cache:
        k = randn(1, H, 12, D)
        with pytest.raises(rkv.CapacityError, match=r"args->v\.extent is 64 elements"):
            cache.append(0, [0], k, randn(1, H, 2, D), q=randn(1, HQ, 12, D))
        with pytest.raises(rkv.CapacityError, match=r"args->q\.extent"):
            cache.append(0, [0], k, randn(1, H, 12, D), q=randn(1, HQ, 1, D))
        # one token and no token axis: legal strides to the library (stride 0),
        # a mistake only the binding can see
        with pytest.raises(rkv.InvalidArgumentError, match="q is \\[n, heads, dim\\]"):
            cache.append(0, [0], k, randn(1, H, 12, D), q=randn(1, HQ, D))
        assert cache.length(0, 0) == (0, 0)


def test_packed_varlen_with_a_short_v_is_refused():
    with make() as cache:
        k, v = randn(12, H, D), randn(2, H, D)
        with pytest.raises(rkv.CapacityError, match=r"args->v\.extent"):
            cache.append(0, [0, 1], k, v, num_tokens=[6, 6], token_offsets=[0, 6])
        # offsets past the end of an array that is long enough for the counts alone
        with pytest.raises(rkv.CapacityError, match=r"args->k\.extent is 384 elements"):
            cache.append(0, [0, 1], k, randn(20, H, D), num_tokens=[6, 6], token_offsets=[0, 8])
        assert cache.length(0, 0) == (0, 0) and cache.length(1, 0) == (0, 0)


def test_extent_follows_strides_not_the_base_buffer():
    """A view of every other token of a larger array: its extent ends at its
    own last element, so a call that reads one token past the view is refused
    although the base buffer would hold it."""
    with make() as cache:
        base = randn(1, H, 12, D)
        every_other = base[:, :, ::2]  # 6 tokens, stride 2 * D
        with pytest.raises(rkv.CapacityError, match=r"args->k\.extent"):
            cache.append(0, [0], every_other, every_other, num_tokens=[6], token_offsets=[1])
        cache.append(0, [0], every_other, every_other, num_tokens=[5], token_offsets=[1])
        np.testing.assert_array_equal(cache.view(0, 0).k, base[0, :, 2::2])


def test_host_index_arrays_must_match_the_entries():
    """The library reads num_seqs entries of num_tokens and token_offsets: it
    cannot see their length, so the binding checks it."""
    with make() as cache:
        k = randn(2, H, 6, D)
        with pytest.raises(rkv.InvalidArgumentError, match="num_tokens has 1 entries for 2"):
            cache.append(0, [0, 1], k, k, num_tokens=[6])
        with pytest.raises(rkv.InvalidArgumentError, match="token_offsets has 3 entries for 2"):
            cache.append(0, [0, 1], k, k, num_tokens=[3, 3], token_offsets=[0, 1, 2])


def test_an_empty_array_is_refused():
    """An empty array has no extent to give (0 would mean "unchecked" to the
    library): the binding refuses it before the call."""
    with make() as cache:
        empty = np.zeros((1, H, 1, D), np.float32)[:, :, :0]
        with pytest.raises(rkv.InvalidArgumentError, match="k is empty"):
            cache.append(0, [0], empty, empty)
        assert cache.length(0, 0) == (0, 0)


def test_arrays_that_hold_enough_tokens_still_pass():
    """The check refuses only what reads past an array: longer arrays, left
    padding and packed inputs with room to spare are fine."""
    with make() as cache:
        k, v, q = randn(1, H, 12, D), randn(1, H, 14, D, seed=1), randn(1, HQ, 12, D, seed=2)
        cache.append(0, [0], k, v, q=q, num_tokens=[10], token_offsets=[2])
        np.testing.assert_array_equal(cache.view(0, 0).v, v[0, :, 2:12])
        packed = randn(12, H, D, seed=3)
        cache.append(0, [1], packed, randn(20, H, D, seed=4), num_tokens=[6], token_offsets=[6])
        np.testing.assert_array_equal(cache.view(1, 0).k, packed[6:].transpose(1, 0, 2))


# --- finding 3: attend never writes into read-only memory ------------------------

def test_attend_refuses_read_only_outputs():
    with make() as cache:
        cache.append(0, [0], randn(1, H, 5, D), randn(1, H, 5, D), q=randn(1, HQ, 5, D))
        query = randn(1, HQ, D, seed=7)
        frozen = bytes(4 * HQ * D)
        out = np.frombuffer(frozen, dtype=np.float32).reshape(1, HQ, D)
        with pytest.raises(rkv.InvalidArgumentError, match="read-only"):
            cache.attend(0, [0], query, out=out)
        assert frozen == bytes(4 * HQ * D)  # immutable bytes stay as they were
        broadcast = np.broadcast_to(np.zeros(D, np.float32), (1, HQ, D))
        with pytest.raises(rkv.InvalidArgumentError, match="read-only"):
            cache.attend(0, [0], query, out=broadcast)
        assert not broadcast.any()
        writable = np.zeros((1, HQ, D), np.float32)
        assert cache.attend(0, [0], query, out=writable) is writable and writable.any()


# --- finding 4: closing never leaves a segfault behind ----------------------------

def run_child(source: str) -> subprocess.CompletedProcess:
    """Runs source in a fresh interpreter that imports this rkv."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True,
                          timeout=300, env=None)


def expect_clean_exit(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (
        f"the child exited with {result.returncode} (a negative code is a signal: "
        f"{-result.returncode} is SIGSEGV when 11)\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")


# Caches of several MiB: their memory is unmapped when freed, so a read after
# the free faults instead of finding stale bytes.
BIG = "dict(max_seqs=1, num_layers=1, num_kv_heads=8, num_q_heads=8, head_dim=128, budget=448, buffer=64, window=8)"


def test_a_view_read_after_close_keeps_its_memory():
    expect_clean_exit(run_child(f"""
        import numpy as np, rkv
        cache = rkv.Cache(**{BIG})
        k = np.random.default_rng(0).standard_normal((1, 8, 300, 128)).astype(np.float32)
        cache.append(0, [0], k, k, q=k)
        view, layer = cache.view(0, 0), cache.view_layer(0)
        before = view.k.copy()
        cache.close()
        assert cache.closed
        # the views keep the memory alive: the same values, read after close
        assert np.array_equal(view.k, before) and np.array_equal(view.v, before)
        assert int(view.positions[0, -1]) == 299 and int(layer.lengths[0]) == 300
        try:
            cache.view(0, 0)
        except ValueError as e:
            assert "closed" in str(e)
        else:
            raise SystemExit("a closed cache gave a view")
        del view, layer  # the last owners: the memory goes now
        print("ok")
    """))


def test_close_from_another_thread_waits_for_the_call_in_flight():
    expect_clean_exit(run_child(f"""
        import threading, time
        import numpy as np, rkv
        cache = rkv.Cache(**{BIG})
        n = 3000  # a prompt compressed chunk by chunk: seconds inside rkv_append, GIL released
        k = np.random.default_rng(0).standard_normal((1, 8, n, 128)).astype(np.float32)
        inside = threading.Event()
        outcome = []
        def append():
            inside.set()
            try:
                cache.append(0, [0], k, k, q=k)
                outcome.append("appended")
            except ValueError as e:  # closed before the call started
                outcome.append(str(e))
        worker = threading.Thread(target=append)
        worker.start()
        inside.wait()
        time.sleep(0.05)  # the worker is inside the C call now
        started = time.perf_counter()
        cache.close()  # waits for the append; never frees memory under it
        waited = time.perf_counter() - started
        worker.join()
        assert outcome == ["appended"], outcome
        assert cache.closed
        print(f"close waited {{waited:.3f}} s")
    """))


def test_calls_from_two_threads_are_serialised():
    """The C API forbids two calls on one cache at once; the binding keeps the
    rule for its users (appends from two threads both land, whole)."""
    import threading
    with make(max_seqs=2, budget=64, buffer=64) as cache:
        k = randn(1, H, 40, D)
        threads = [threading.Thread(target=cache.append, args=(0, [seq], k, k), kwargs=dict(q=randn(1, HQ, 40, D)))
                   for seq in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert cache.length(0, 0) == (40, 40) and cache.length(1, 0) == (40, 40)
        np.testing.assert_array_equal(cache.view(1, 0).k, k[0])
