"""librkv through ctypes, for the tools that must run where the SWIG binding is
not built (the GPU machine): the structs and functions the benchmarks use,
declared from include/rkv/rkv.h. The library checks every struct_size, so a
layout that drifts from the header fails loudly (RKV_ERR_STRUCT_SIZE), and
`python3 tools/rkv_ctypes.py LIBRARY` checks the layouts and one attention
call on a CPU cache against a plain-Python reference (a CTest runs it).
"""
import ctypes
import math
import os
import random
import sys

F32, F16, BF16, FP8_E4M3 = 0, 1, 2, 3
CPU, CUDA = 0, 1
METHOD_RKV, METHOD_FULL = 0, 6
ATTEND_AUTO, ATTEND_WIDE, ATTEND_NARROW, ATTEND_TENSOR = 0, 1, 2, 3


class CacheParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t),
                ("max_seqs", ctypes.c_int32), ("num_layers", ctypes.c_int32),
                ("num_kv_heads", ctypes.c_int32), ("num_q_heads", ctypes.c_int32),
                ("head_dim", ctypes.c_int32),
                ("dtype", ctypes.c_int), ("device_type", ctypes.c_int), ("device_id", ctypes.c_int32),
                ("method", ctypes.c_int), ("mode", ctypes.c_int),
                ("budget", ctypes.c_int32), ("buffer", ctypes.c_int32), ("window", ctypes.c_int32),
                ("kernel", ctypes.c_int32), ("lambda_", ctypes.c_float), ("threshold", ctypes.c_float),
                ("pooling", ctypes.c_int), ("sink", ctypes.c_int32), ("guards", ctypes.c_uint32),
                ("max_prompt_len", ctypes.c_int32), ("max_len", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("auto_compress", ctypes.c_int32),
                ("max_rollback", ctypes.c_int32), ("reserved", ctypes.c_uint32)]


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int),
                ("num_heads", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("stride_seq", ctypes.c_int64), ("stride_token", ctypes.c_int64),
                ("stride_head", ctypes.c_int64), ("extent", ctypes.c_int64)]


class AppendArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("layer", ctypes.c_int32), ("num_seqs", ctypes.c_int32),
                ("seq_ids", ctypes.POINTER(ctypes.c_int32)), ("num_tokens", ctypes.POINTER(ctypes.c_int32)),
                ("token_offsets", ctypes.POINTER(ctypes.c_int64)),
                ("k", Tensor), ("v", Tensor), ("q", Tensor), ("flags", ctypes.c_uint32),
                ("batch", ctypes.c_void_p)]


class AttendArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("layer", ctypes.c_int32), ("num_seqs", ctypes.c_int32),
                ("seq_ids", ctypes.POINTER(ctypes.c_int32)), ("batch", ctypes.c_void_p),
                ("q", Tensor), ("out", Tensor), ("scale", ctypes.c_float), ("flags", ctypes.c_uint32)]


class LayerView(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p),
                ("positions", ctypes.c_void_p), ("lengths", ctypes.c_void_p),
                ("dtype", ctypes.c_int), ("device_type", ctypes.c_int), ("device_id", ctypes.c_int32),
                ("max_seqs", ctypes.c_int32), ("num_kv_heads", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("capacity", ctypes.c_int32),
                ("stride_seq", ctypes.c_int64), ("stride_head", ctypes.c_int64), ("stride_token", ctypes.c_int64),
                ("positions_stride_seq", ctypes.c_int64), ("positions_stride_head", ctypes.c_int64),
                ("k_scale", ctypes.c_void_p), ("v_scale", ctypes.c_void_p),
                ("scale_stride_seq", ctypes.c_int64), ("scale_stride_head", ctypes.c_int64)]


class RkvError(RuntimeError):
    pass


class Library:
    """The functions of librkv the tools call; every status other than OK raises."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        lib = self.lib
        lib.rkv_status_name.restype = ctypes.c_char_p
        lib.rkv_error_message.restype = ctypes.c_char_p
        lib.rkv_version_string.restype = ctypes.c_char_p
        lib.rkv_params_default.argtypes = [ctypes.POINTER(CacheParams), ctypes.c_size_t]
        lib.rkv_cache_size.argtypes = [ctypes.POINTER(CacheParams), ctypes.POINTER(ctypes.c_uint64)]
        lib.rkv_cache_create.argtypes = [ctypes.POINTER(CacheParams), ctypes.POINTER(ctypes.c_void_p)]
        lib.rkv_cache_destroy.argtypes = [ctypes.c_void_p]
        lib.rkv_cache_destroy.restype = None
        lib.rkv_append.argtypes = [ctypes.c_void_p, ctypes.POINTER(AppendArgs), ctypes.c_void_p]
        lib.rkv_attend.argtypes = [ctypes.c_void_p, ctypes.POINTER(AttendArgs), ctypes.c_void_p]
        lib.rkv_view_layer.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(LayerView)]
        lib.rkv_cache_set_attend_plan.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int]

    def check(self, status, what):
        if status != 0:
            raise RkvError("%s: %s: %s" % (what, self.lib.rkv_status_name(status).decode(),
                                           self.lib.rkv_error_message().decode()))

    def version(self):
        return self.lib.rkv_version_string().decode()

    def params(self, **fields):
        p = CacheParams()
        self.check(self.lib.rkv_params_default(ctypes.byref(p), ctypes.sizeof(p)), "rkv_params_default")
        for name, value in fields.items():
            setattr(p, name, value)
        return p

    def cache_size(self, params):
        size = ctypes.c_uint64()
        self.check(self.lib.rkv_cache_size(ctypes.byref(params), ctypes.byref(size)), "rkv_cache_size")
        return size.value

    def create(self, params):
        cache = ctypes.c_void_p()
        self.check(self.lib.rkv_cache_create(ctypes.byref(params), ctypes.byref(cache)), "rkv_cache_create")
        return cache

    def destroy(self, cache):
        self.lib.rkv_cache_destroy(cache)

    def append(self, cache, layer, seq_ids, num_tokens, k, v, q=None, stream=None):
        """k, v, q: Tensor; seq_ids, num_tokens: lists (token offsets follow stride_seq)."""
        n = len(seq_ids)
        ids = (ctypes.c_int32 * n)(*seq_ids)
        tokens = (ctypes.c_int32 * n)(*num_tokens)
        a = AppendArgs()
        a.struct_size = ctypes.sizeof(a)
        a.layer, a.num_seqs, a.seq_ids, a.num_tokens = layer, n, ids, tokens
        a.k, a.v = k, v
        if q is not None:
            a.q = q
        self.check(self.lib.rkv_append(cache, ctypes.byref(a), stream), "rkv_append")

    def attend(self, cache, layer, seq_ids, q, out, scale=0.0, stream=None):
        ids = (ctypes.c_int32 * len(seq_ids))(*seq_ids)
        a = AttendArgs()
        a.struct_size = ctypes.sizeof(a)
        a.layer, a.num_seqs, a.seq_ids = layer, len(seq_ids), ids
        a.q, a.out, a.scale = q, out, scale
        self.check(self.lib.rkv_attend(cache, ctypes.byref(a), stream), "rkv_attend")

    def view_layer(self, cache, layer):
        view = LayerView()
        view.struct_size = ctypes.sizeof(view)
        self.check(self.lib.rkv_view_layer(cache, layer, ctypes.byref(view)), "rkv_view_layer")
        return view

    def set_attend_plan(self, cache, splits, variant):
        self.check(self.lib.rkv_cache_set_attend_plan(cache, splits, variant), "rkv_cache_set_attend_plan")


def self_check(path):
    """The layouts above against the library: a CPU cache, one append, one
    attention call, compared with plain Python."""
    rkv = Library(path)
    kv_heads, q_heads, dim, tokens = 2, 4, 8, 5
    p = rkv.params(max_seqs=2, num_layers=1, num_kv_heads=kv_heads, num_q_heads=q_heads, head_dim=dim,
                   method=METHOD_FULL, max_len=16, dtype=F32)
    cache = rkv.create(p)
    rng = random.Random(7)
    k = [rng.gauss(0, 1) for _ in range(tokens * kv_heads * dim)]
    v = [rng.gauss(0, 1) for _ in range(tokens * kv_heads * dim)]
    q = [rng.gauss(0, 1) for _ in range(q_heads * dim)]
    kb, vb, qb = ((ctypes.c_float * len(x))(*x) for x in (k, v, q))
    out = (ctypes.c_float * (q_heads * dim))()
    row = kv_heads * dim
    rkv.append(cache, 0, [1], [tokens], Tensor(ctypes.addressof(kb), F32, kv_heads, dim, 0, row, dim),
               Tensor(ctypes.addressof(vb), F32, kv_heads, dim, 0, row, dim))
    rkv.attend(cache, 0, [1], Tensor(ctypes.addressof(qb), F32, q_heads, dim, q_heads * dim, 0, dim),
               Tensor(ctypes.addressof(out), F32, q_heads, dim, q_heads * dim, 0, dim))
    view = rkv.view_layer(cache, 0)
    assert view.capacity == 16 and view.head_dim == dim and view.k_scale is None, "layer view fields"
    lengths = ctypes.cast(view.lengths, ctypes.POINTER(ctypes.c_int32))
    assert lengths[0] == 0 and lengths[1] == tokens, "lengths"
    worst = 0.0
    for h in range(q_heads):
        g = h // (q_heads // kv_heads)
        logits = [sum(q[h * dim + e] * k[(t * kv_heads + g) * dim + e] for e in range(dim)) / math.sqrt(dim)
                  for t in range(tokens)]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        total = sum(weights)
        for e in range(dim):
            want = sum(w / total * v[(t * kv_heads + g) * dim + e] for t, w in enumerate(weights))
            worst = max(worst, abs(out[h * dim + e] - want))
    rkv.destroy(cache)
    assert worst < 1e-5, "attention differs from the reference by %g" % worst
    print("rkv_ctypes: librkv %s, struct layouts and one attention call agree (max error %.2g)" %
          (rkv.version(), worst))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.exists(sys.argv[1]):
        sys.exit("usage: python3 tools/rkv_ctypes.py path/to/librkv.so")
    self_check(sys.argv[1])
