#!/usr/bin/env python3
"""The zero-copy layout contract of a layer view (rkv.h, "Views"; README.md,
"Zero-copy attention"), on a GPU, with PyTorch.

A CUDA cache is built through the C API (ctypes on librkv.so), sequences get
random tokens of different lengths (through compressions), and the layer view's
K and V become torch tensors *without a copy* (__cuda_array_interface__ with the
view's strides). Then decode attention is computed three ways for a batch of
sequences in a shuffled order:
  - as FlashInfer's paged decode reads the pools: HND pages of page_size =
    capacity, kv_indptr = [0, 1, ..., n], kv_indices = the slots,
    kv_last_page_len = lengths[slots];
  - as flash-attn's flash_attn_with_kvcache reads its caches: k_cache / v_cache
    = the view permuted to [max_seqs, capacity, heads, dim] (strides of HND),
    cache_batch_idx = the slots, cache_seqlens = lengths[slots];
  - by rkv_attend;
and every one is compared with a float64 reference. When FlashInfer or
flash-attn are installed, their kernels are run on the same tensors too (and
the output says whether they were).

Usage: python3 tests/gpu/test_view_layouts.py [--lib build-gpu/librkv.so]
Exit 0 on success, 1 on a failure, 77 without torch or a CUDA device.
"""
import argparse
import ctypes as C
import glob
import math
import os
import sys

SKIP = 77

try:
    import torch
except ImportError:
    print("SKIP: PyTorch is not installed (pip install torch; the test runs on an H100/H200: tools/gpu_check.sh)")
    sys.exit(SKIP)
if not torch.cuda.is_available():
    print("SKIP: no CUDA device (run on an H100/H200: tools/gpu_check.sh)")
    sys.exit(SKIP)

# --- the C API (rkv.h 0.2.0) ---------------------------------------------------
RKV_DTYPE_F32, RKV_DTYPE_F16 = 0, 1
RKV_DEVICE_CUDA = 1
RKV_METHOD_RKV = 0
RKV_APPEND_PROMPT = 1


class Params(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("max_seqs", C.c_int32), ("num_layers", C.c_int32),
                ("num_kv_heads", C.c_int32), ("num_q_heads", C.c_int32), ("head_dim", C.c_int32),
                ("dtype", C.c_int), ("device_type", C.c_int), ("device_id", C.c_int32),
                ("method", C.c_int), ("mode", C.c_int), ("budget", C.c_int32), ("buffer", C.c_int32),
                ("window", C.c_int32), ("kernel", C.c_int32), ("lambda_", C.c_float),
                ("threshold", C.c_float), ("pooling", C.c_int), ("sink", C.c_int32),
                ("guards", C.c_uint32), ("max_prompt_len", C.c_int32), ("max_len", C.c_int32),
                ("seed", C.c_uint64), ("auto_compress", C.c_int32), ("max_rollback", C.c_int32),
                ("reserved", C.c_uint32)]


class Tensor(C.Structure):
    _fields_ = [("data", C.c_void_p), ("dtype", C.c_int), ("num_heads", C.c_int32), ("head_dim", C.c_int32),
                ("stride_seq", C.c_int64), ("stride_token", C.c_int64), ("stride_head", C.c_int64),
                ("extent", C.c_int64)]


class AppendArgs(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("layer", C.c_int32), ("num_seqs", C.c_int32),
                ("seq_ids", C.POINTER(C.c_int32)), ("num_tokens", C.POINTER(C.c_int32)),
                ("token_offsets", C.POINTER(C.c_int64)), ("k", Tensor), ("v", Tensor), ("q", Tensor),
                ("flags", C.c_uint32), ("batch", C.c_void_p)]


class AttendArgs(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("layer", C.c_int32), ("num_seqs", C.c_int32),
                ("seq_ids", C.POINTER(C.c_int32)), ("batch", C.c_void_p), ("q", Tensor), ("out", Tensor),
                ("scale", C.c_float), ("flags", C.c_uint32)]


class LayerView(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("k", C.c_void_p), ("v", C.c_void_p),
                ("positions", C.POINTER(C.c_int32)), ("lengths", C.POINTER(C.c_int32)),
                ("dtype", C.c_int), ("device_type", C.c_int), ("device_id", C.c_int32),
                ("max_seqs", C.c_int32), ("num_kv_heads", C.c_int32), ("head_dim", C.c_int32),
                ("capacity", C.c_int32), ("stride_seq", C.c_int64), ("stride_head", C.c_int64),
                ("stride_token", C.c_int64), ("positions_stride_seq", C.c_int64),
                ("positions_stride_head", C.c_int64)]


def load(path):
    lib = C.CDLL(path)
    lib.rkv_error_message.restype = C.c_char_p
    lib.rkv_version_string.restype = C.c_char_p
    lib.rkv_cache_create.argtypes = [C.POINTER(Params), C.POINTER(C.c_void_p)]
    lib.rkv_cache_destroy.argtypes = [C.c_void_p]
    lib.rkv_params_default.argtypes = [C.POINTER(Params), C.c_size_t]
    lib.rkv_append.argtypes = [C.c_void_p, C.POINTER(AppendArgs), C.c_void_p]
    lib.rkv_attend.argtypes = [C.c_void_p, C.POINTER(AttendArgs), C.c_void_p]
    lib.rkv_view_layer.argtypes = [C.c_void_p, C.c_int32, C.POINTER(LayerView)]
    return lib


def check(lib, status, what):
    if status != 0:
        raise RuntimeError(f"{what}: status {status}: {lib.rkv_error_message().decode()}")


class DeviceArray:
    """A CUDA buffer torch can wrap without a copy (strides in elements)."""

    def __init__(self, pointer, shape, strides, typestr, itemsize):
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "strides": tuple(s * itemsize for s in strides), "typestr": typestr,
            "data": (pointer, False), "version": 3}


def wrap(pointer, shape, strides, dtype):
    typestr, size = {torch.float16: ("<f2", 2), torch.int32: ("<i4", 4)}[dtype]
    return torch.as_tensor(DeviceArray(pointer, shape, strides, typestr, size), device="cuda")


def rkv_tensor(t, dtype):
    """A [rows, heads, dim] torch tensor as an rkv_tensor (one token per row)."""
    return Tensor(t.data_ptr(), dtype, t.shape[1], t.shape[2], t.stride(0), 0, t.stride(1), t.numel())


# --- attention as the libraries read the memory ------------------------------------


def gather_like_flashinfer(k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len, i):
    """The K and V rows FlashInfer's paged decode reads for request i with
    kv_layout "HND": pages kv_indices[kv_indptr[i]:kv_indptr[i+1]] of the
    [num_pages, H, page_size, D] pools, every page full but the last, which holds
    kv_last_page_len[i] tokens. Returns [H, tokens, D] each."""
    page_size = k_pages.shape[2]
    pages = kv_indices[kv_indptr[i]:kv_indptr[i + 1]].tolist()
    keys, values = [], []
    for n, page in enumerate(pages):
        used = int(kv_last_page_len[i]) if n == len(pages) - 1 else page_size
        keys.append(k_pages[page, :, :used, :])
        values.append(v_pages[page, :, :used, :])
    return torch.cat(keys, dim=1), torch.cat(values, dim=1)


def gather_like_flash_attn(k_cache, v_cache, cache_seqlens, cache_batch_idx, b):
    """The K and V rows flash_attn_with_kvcache (no new tokens) reads for batch
    entry b: k_cache[cache_batch_idx[b], :cache_seqlens[b]] of [B_cache, seqlen, H, D]
    caches, whose strides it takes as they are (only the last dim must be
    contiguous). Returns [H, tokens, D] each."""
    assert k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1
    slot, length = int(cache_batch_idx[b]), int(cache_seqlens[b])
    return k_cache[slot, :length].transpose(0, 1), v_cache[slot, :length].transpose(0, 1)


def attend(q, k, v, scale, dtype):
    """Decode attention of one entry: q [Hq, D], k and v [Hkv, tokens, D] (GQA)."""
    group = q.shape[0] // k.shape[0]
    k, v = k.to(dtype), v.to(dtype)
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    for h in range(q.shape[0]):
        p = torch.softmax((k[h // group] @ q[h].to(dtype)) * scale, dim=0)
        out[h] = p @ v[h // group]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", help="librkv.so (default: the first build*/librkv.so)")
    args = parser.parse_args()
    path = args.lib or next(iter(sorted(glob.glob(os.path.join(os.path.dirname(__file__), "../../build*/librkv.so")))),
                            None)
    if not path:
        print("librkv.so not found: pass --lib")
        return 1
    lib = load(path)
    print(f"librkv {lib.rkv_version_string().decode()} from {path}; torch {torch.__version__}")

    seqs, kv_heads, q_heads, dim, budget, buffer, window = 5, 2, 8, 128, 48, 16, 4
    params = Params()
    check(lib, lib.rkv_params_default(C.byref(params), C.sizeof(params)), "rkv_params_default")
    params.max_seqs, params.num_layers, params.num_kv_heads, params.num_q_heads, params.head_dim = \
        seqs, 1, kv_heads, q_heads, dim
    params.dtype, params.device_type = RKV_DTYPE_F16, RKV_DEVICE_CUDA
    params.method, params.budget, params.buffer, params.window = RKV_METHOD_RKV, budget, buffer, window
    cache = C.c_void_p()
    check(lib, lib.rkv_cache_create(C.byref(params), C.byref(cache)), "rkv_cache_create")
    stream = torch.cuda.current_stream().cuda_stream
    torch.manual_seed(0)
    originals = []  # (k, v) [tokens, heads, dim] appended to each sequence
    try:
        # Sequences of different lengths, two of them through compressions.
        for seq, tokens in enumerate([7, 150, 33, 64, 90]):
            k = torch.randn(tokens, kv_heads, dim, device="cuda", dtype=torch.float16)
            v = torch.randn(tokens, kv_heads, dim, device="cuda", dtype=torch.float16)
            q = torch.randn(tokens, q_heads, dim, device="cuda", dtype=torch.float16)
            ids, counts = (C.c_int32 * 1)(seq), (C.c_int32 * 1)(tokens)
            a = AppendArgs()
            a.struct_size = C.sizeof(a)
            a.num_seqs, a.seq_ids, a.num_tokens = 1, ids, counts
            for name, t, heads in (("k", k, kv_heads), ("v", v, kv_heads), ("q", q, q_heads)):
                setattr(a, name, Tensor(t.data_ptr(), RKV_DTYPE_F16, heads, dim, 0, t.stride(0), t.stride(1),
                                        t.numel()))
            check(lib, lib.rkv_append(cache, C.byref(a), C.c_void_p(stream)), "rkv_append")
            originals.append((k, v))

        view = LayerView()
        view.struct_size = C.sizeof(view)
        check(lib, lib.rkv_view_layer(cache, 0, C.byref(view)), "rkv_view_layer")
        shape = (view.max_seqs, view.num_kv_heads, view.capacity, view.head_dim)
        strides = (view.stride_seq, view.stride_head, view.stride_token, 1)
        k_pages = wrap(view.k, shape, strides, torch.float16)  # HND pools, no copy
        v_pages = wrap(view.v, shape, strides, torch.float16)
        lengths = wrap(C.cast(view.lengths, C.c_void_p).value, (view.max_seqs,), (1,), torch.int32)
        assert k_pages.data_ptr() == view.k and k_pages.is_contiguous(), "HND is contiguous per layer"
        torch.cuda.synchronize()
        held = lengths.tolist()
        print(f"capacity {view.capacity}; held per sequence {held}")
        capacity = budget + buffer
        assert view.capacity == capacity and held[0] == 7 and held[2] == 33 and held[3] == capacity
        assert budget <= held[1] <= capacity and budget <= held[4] <= capacity  # compressed on the way
        # The contract itself: slot j of head h of sequence s holds the token at
        # positions[s, h, j], as it was appended.
        positions = wrap(C.cast(view.positions, C.c_void_p).value, shape[:3],
                         (view.positions_stride_seq, view.positions_stride_head, 1), torch.int32)
        for s, (k, v) in enumerate(originals):
            for h in range(kv_heads):
                at = positions[s, h, :held[s]].long()
                assert torch.equal(k_pages[s, h, :held[s]], k[at, h]), f"sequence {s}, head {h}: K rows"
                assert torch.equal(v_pages[s, h, :held[s]], v[at, h]), f"sequence {s}, head {h}: V rows"

        slots = [3, 0, 4, 1]  # a batch in shuffled order; slot 2 is not in it
        batch = len(slots)
        q = torch.randn(batch, q_heads, dim, device="cuda", dtype=torch.float16)
        scale = 1.0 / math.sqrt(dim)
        slot_tensor = torch.tensor(slots, dtype=torch.int32, device="cuda")

        # FlashInfer's metadata: one page per sequence, page index = slot.
        kv_indptr = torch.arange(batch + 1, dtype=torch.int32, device="cuda")
        kv_indices = slot_tensor
        kv_last_page_len = lengths[slot_tensor.long()]
        # flash-attn's caches: the same memory seen as [max_seqs, capacity, heads, dim].
        k_cache, v_cache = k_pages.permute(0, 2, 1, 3), v_pages.permute(0, 2, 1, 3)
        assert k_cache.data_ptr() == view.k
        assert k_cache.stride() == (view.stride_seq, view.stride_token, view.stride_head, 1)
        cache_seqlens = lengths[slot_tensor.long()].contiguous()

        failures = 0
        paged = torch.empty(batch, q_heads, dim, device="cuda", dtype=torch.float32)
        dense = torch.empty_like(paged)
        exact = torch.empty(batch, q_heads, dim, device="cuda", dtype=torch.float64)
        for b in range(batch):
            kp, vp = gather_like_flashinfer(k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len, b)
            kd, vd = gather_like_flash_attn(k_cache, v_cache, cache_seqlens, slot_tensor, b)
            # Both readings of the view see the very same rows: those the
            # sequence holds (slots 0 .. lengths-1 of every head).
            n = held[slots[b]]
            if not (torch.equal(kp, kd) and torch.equal(vp, vd) and kp.shape[1] == n
                    and torch.equal(kp, k_pages[slots[b], :, :n]) and torch.equal(vp, v_pages[slots[b], :, :n])):
                print(f"FAIL: entry {b} (slot {slots[b]}): the two readings of the view differ")
                failures += 1
            paged[b] = attend(q[b], kp, vp, scale, torch.float32)
            dense[b] = attend(q[b], kd, vd, scale, torch.float32)
            exact[b] = attend(q[b], kp, vp, scale, torch.float64)

        # rkv_attend over the same sequences.
        out = torch.empty(batch, q_heads, dim, device="cuda", dtype=torch.float32)
        ids = (C.c_int32 * batch)(*slots)
        at = AttendArgs()
        at.struct_size = C.sizeof(at)
        at.num_seqs, at.seq_ids = batch, ids
        at.q, at.out = rkv_tensor(q, RKV_DTYPE_F16), rkv_tensor(out, RKV_DTYPE_F32)
        check(lib, lib.rkv_attend(cache, C.byref(at), C.c_void_p(stream)), "rkv_attend")
        torch.cuda.synchronize()

        results = [("FlashInfer's paged layout", paged), ("flash-attn's kvcache layout", dense),
                   ("rkv_attend", out)]

        library_runs = []  # (name, a function running the library's kernel on the view)
        try:  # FlashInfer itself, when installed
            import flashinfer
            workspace = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")
            wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "HND")
            wrapper.plan(kv_indptr, kv_indices, kv_last_page_len.contiguous(), q_heads, kv_heads, dim,
                         view.capacity, q_data_type=torch.float16, kv_data_type=torch.float16)
            library_runs.append(("FlashInfer BatchDecodeWithPagedKVCacheWrapper (HND)",
                                 lambda: wrapper.run(q, (k_pages, v_pages)).float()))
        except ImportError:
            print("FlashInfer is not installed: its layout is checked by the emulation only")
        except Exception as error:  # installed but unusable here (e.g. its JIT needs a compiler)
            print(f"FlashInfer did not run ({type(error).__name__}: {error}): checked by the emulation only")
        try:  # flash-attn itself, when installed
            from flash_attn import flash_attn_with_kvcache
            library_runs.append(("flash-attn flash_attn_with_kvcache", lambda: flash_attn_with_kvcache(
                q.unsqueeze(1), k_cache, v_cache, cache_seqlens=cache_seqlens, cache_batch_idx=slot_tensor,
                softmax_scale=scale).squeeze(1).float()))
        except ImportError:
            print("flash-attn is not installed: its layout is checked by the emulation only")
        for name, run in library_runs:
            results.append((name, run()))
        torch.cuda.synchronize()

        largest = exact.abs().max().item()
        print(f"{'computed as':48s} {'max |x - float64|':>18s} {'relative':>10s}")
        for name, x in results:
            error = (x.double() - exact).abs().max().item()
            relative = error / largest
            ok = relative < 2e-3
            failures += not ok
            print(f"{name:48s} {error:18.3e} {relative:10.2e} {'ok' if ok else 'FAIL'}")
        # Slots outside a sequence's length (and sequences outside the batch) are
        # not read: poison them and run the real kernels again.
        if len(results) > 3:
            saved_k, saved_v = k_pages.clone(), v_pages.clone()
            for slot in range(view.max_seqs):
                k_pages[slot, :, held[slot]:].fill_(float("nan"))
                v_pages[slot, :, held[slot]:].fill_(float("nan"))
            k_pages[2].fill_(float("nan"))
            v_pages[2].fill_(float("nan"))
            for name, run in library_runs:
                if not torch.equal(run(), dict(results)[name]):
                    print(f"FAIL: {name} read memory outside the held tokens of the batch")
                    failures += 1
            k_pages.copy_(saved_k)
            v_pages.copy_(saved_v)
    finally:
        lib.rkv_cache_destroy(cache)
    print("PASS" if failures == 0 else f"{failures} failure(s)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
