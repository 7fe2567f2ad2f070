"""Batches of sequence ids in the cache's memory (``rkv_batch``): what lets a
decode step captured in a CUDA graph serve whichever sequences are running.

    with rkv.Batch(cache, 8) as batch:
        batch.set([3, 0, 5])                 # entries 3.. are padding (-1)
        for layer in range(num_layers):      # or: replay a graph of these calls
            cache.append(layer, batch, k[layer], v[layer], q=q[layer])   # [8, H, D] each
            cache.attend(layer, batch, q[layer], out[layer])
        batch.advance(1)                     # host bookkeeping, no sync
        if cache.compress_due():
            cache.compress()                 # outside the graph

Calls with a batch enqueue device work only; :meth:`Batch.advance` records on
the host what they did, so compression scheduling stays right without reading
lengths back. Between a batch append and its advance, call nothing else on
those sequences. A batch append never compresses: compress due sequences
before each step (a step past a sequence's capacity drops its token, and the
advance that accounts for it faults the cache).
"""
from __future__ import annotations

import numpy as np

from . import capi as _c
from ._arrays import host_ints, stream_handle
from .cache import Cache

__all__ = ["Batch"]


class _BatchHandle:
    """Owns the C batch and keeps the C cache it belongs to alive: the batch is
    destroyed first, then the cache's handle is let go."""
    __slots__ = ("raw", "cache_handle")

    def __init__(self, raw, cache_handle):
        self.raw = raw
        self.cache_handle = cache_handle

    def __del__(self):
        raw, self.raw = self.raw, None
        if raw is not None and _c is not None:  # _c is None at interpreter shutdown
            _c.rkv_batch_destroy(raw)
        self.cache_handle = None


class Batch:
    """``max_entries`` sequence ids (1 .. 65535) of one :class:`Cache`, all
    padding (-1) until :meth:`set`. Pass it as the ``seqs`` of
    :meth:`Cache.append` and :meth:`Cache.attend`: their tensors then have
    ``max_entries`` rows, one token each.

    A batch never outlives its cache: it keeps the cache's memory alive while
    it is open, :meth:`Cache.close` closes it, and a closed batch (or one whose
    cache is closed) refuses every call with ValueError. Use it as a context
    manager or call :meth:`close` (idempotent). Calls are serialised with the
    cache's.
    """

    def __init__(self, cache: Cache, max_entries: int):
        self.cache = cache
        self.max_entries = int(max_entries)
        self._ids = (-1,) * max(self.max_entries, 0)
        self._handle = None
        with cache._lock:
            raw = _c.rkv_batch_create(cache._h(), self.max_entries)
            self._handle = _BatchHandle(raw, cache._handle)
            cache._batches.add(self)

    # --- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Free the batch (on CUDA, cudaFree waits for the device)."""
        with self.cache._lock:
            handle, self._handle = self._handle, None
        del handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _raw(self):
        """The raw batch; call with the cache's lock held."""
        if self._handle is None:
            raise ValueError("operation on a closed rkv.Batch")
        self.cache._h()  # raises if the cache was closed
        return self._handle.raw

    # --- contents -------------------------------------------------------------
    @property
    def ids(self) -> tuple[int, ...]:
        """The entries as last set (-1 = padding)."""
        return self._ids

    def set(self, seq_ids, *, stream=None) -> None:
        """Entries 0 .. len(seq_ids)-1 become these sequences (-1 = padding),
        the rest padding. Ids must be sequences of the cache, distinct. On CUDA
        a kernel writes them in stream order: work enqueued earlier on the
        stream still sees the previous ids. No sync."""
        ids = host_ints(seq_ids, np.int32, "seq_ids")
        with self.cache._lock:
            raw = self._raw()
            _c.rkv_batch_set(raw, ids.ctypes.data if ids.size else None, int(ids.size),
                             stream_handle(stream))
        self._ids = tuple(int(i) for i in ids) + (-1,) * (self.max_entries - ids.size)

    def advance(self, steps: int = 1) -> None:
        """Record on the host that every non-padding sequence got `steps` more
        tokens in every layer (the batch steps enqueued or replayed since the
        last advance). Host-only. A step that went past a sequence's capacity
        faults the cache (CapacityError naming the sequence)."""
        with self.cache._lock:
            _c.rkv_batch_advance(self._raw(), int(steps))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"ids={list(self._ids)}"
        return f"<rkv.Batch max_entries={self.max_entries} {state}>"
