"""librkv's experimental functions (``rkv/rkv_experimental.h``): they may
change or go in any minor version before 1.0, so they live here, under an
explicit name, and not on :class:`rkv.Cache`."""
from __future__ import annotations

import numpy as np

from . import capi as _c
from ._arrays import stream_handle
from .cache import Cache
from .errors import InvalidArgumentError

__all__ = ["scores", "sync_lengths", "set_matmul_path"]

_SCORE_KINDS = {"importance": _c.RKV_SCORE_IMPORTANCE, "redundancy": _c.RKV_SCORE_REDUNDANCY,
                "final": _c.RKV_SCORE_FINAL}
_MATMUL_PATHS = {"auto": _c.RKV_MATMUL_AUTO, "cublaslt": _c.RKV_MATMUL_CUBLASLT,
                 "fused": _c.RKV_MATMUL_FUSED, "wgmma": _c.RKV_MATMUL_WGMMA,
                 "wgmma_int8": _c.RKV_MATMUL_WGMMA_INT8}


def scores(cache: Cache, seq: int, layer: int, head: int, kind: str = "final") -> np.ndarray:
    """The scores the next compression of (seq, layer) would rank for one KV
    head ("importance", "redundancy" or "final"), one per candidate slot
    (``rkv_seq_scores``; synchronous on CUDA)."""
    if kind not in _SCORE_KINDS:
        raise InvalidArgumentError(f"unknown score kind {kind!r}: one of {', '.join(_SCORE_KINDS)}")
    with cache._lock:
        _, physical = cache.length(seq, layer)
        out = np.empty(max(physical, 1), np.float32)
        count = _c.rkv_seq_scores(cache._h(), seq, layer, head, _SCORE_KINDS[kind],
                                  out.ctypes.data, out.size)
    return out[:count].copy()


def sync_lengths(cache: Cache, *, stream=None) -> None:
    """Copy the device bookkeeping into the host's after replaying graphs of
    calls with host ids (``rkv_cache_sync_lengths``; waits for `stream`).
    Batches do not need it: :meth:`rkv.Batch.advance` keeps the host current."""
    with cache._lock:
        _c.rkv_cache_sync_lengths(cache._h(), stream_handle(stream))


def set_matmul_path(cache: Cache, path: str) -> None:
    """How a CUDA cache computes R-KV's matrix products: "auto", "cublaslt",
    "fused", "wgmma" or "wgmma_int8" (``rkv_cache_set_matmul_path``; for
    benchmarks and tests)."""
    if path not in _MATMUL_PATHS:
        raise InvalidArgumentError(f"unknown matmul path {path!r}: one of {', '.join(_MATMUL_PATHS)}")
    with cache._lock:
        _c.rkv_cache_set_matmul_path(cache._h(), _MATMUL_PATHS[path])
