"""The Pythonic layer: :class:`Cache` over the raw module ``rkv.capi``.

A Cache holds the C handle and nothing else; every length, parameter and
statistic is read from the library when asked for. Errors come from the
library as the exceptions of :mod:`rkv.errors` with its message.

Names follow the C API's rule: a method is the C function without ``rkv_``
and without the object it is called on, ``rkv_seq_truncate(cache, seq, n)``
is ``cache.truncate(seq, n)``, ``rkv_cache_stats(cache, seq)`` is
``cache.stats(seq)``, ``rkv_batch_set(batch, ids)`` is ``batch.set(ids)``; a
getter without arguments is a property (``rkv_cache_get_params`` is
``cache.params``). Experimental functions live in :mod:`rkv.experimental`.
"""
from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import capi as _c
from ._arrays import describe, host_ints, stream_handle
from ._tensors import check_devices, check_writable, fill_tensor, pick_stream
from .enums import ALL, Device, Param
from .errors import InvalidArgumentError
from .params import ENUM_PARAMS, FLOAT_PARAMS, enum_value, make_params, param_key, params_dict
from .views import LayerView, SeqView, Stats, layer_view, seq_view, stats

if TYPE_CHECKING:
    from .batch import Batch

__all__ = ["Cache"]


class _Handle:
    """Owns the C cache. Its owners are the Cache (until close), every view made
    from it and every open Batch, so the memory a view points at lives as long
    as the view: the C cache is destroyed when the last of them lets go."""
    __slots__ = ("raw", "__weakref__")

    def __init__(self, raw):
        self.raw = raw

    def __del__(self):
        raw, self.raw = self.raw, None
        if raw is not None and _c is not None:  # _c is None at interpreter shutdown
            _c.rkv_cache_destroy(raw)


class Cache:
    """A librkv cache: the K/V memory of ``max_seqs`` sequences x ``num_layers``
    x ``num_kv_heads``, compressed to a fixed budget per head.

    Keyword options are the parameters of the C API in lower case (``budget``,
    ``buffer``, ``window``, ``method``, ``dtype``, ``max_rollback``, ``lambda_``
    or ``**{"lambda": x}``, ...); enums accept the enum, its value or its name
    (``method="snapkv"``). ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    All memory is allocated here, once.

    Use it as a context manager or call :meth:`close`; closing twice is fine.
    The C API forbids two calls on one cache at once; a Cache keeps that rule
    for you by serialising calls from several threads, and :meth:`close` waits
    for a call in flight.
    """

    def __init__(self, *, max_seqs: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 num_q_heads: int | None = None, device="cpu", **options):
        self._handle = None  # set first: __del__ runs even if creation fails
        # Held around every C call on the handle (reentrant: methods call methods).
        self._lock = threading.RLock()
        self._batches: weakref.WeakSet = weakref.WeakSet()
        if "lambda_" in options:
            options["lambda"] = options.pop("lambda_")
        options.update(max_seqs=max_seqs, num_layers=num_layers, num_kv_heads=num_kv_heads,
                       head_dim=head_dim)
        if num_q_heads is not None:
            options["num_q_heads"] = num_q_heads
        params = make_params(device, options)
        # Fixed for the cache's life: where arrays must live.
        self.device = Device(params.device_type)
        self.device_id = int(params.device_id)
        self._handle = _Handle(_c.rkv_cache_create(params))

    # --- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Free the cache and its memory, and close its batches. Waits for a
        call another thread has in flight; later calls raise ValueError. Memory
        that views still point at is freed with the last of them. Calling it
        again does nothing."""
        with self._lock:
            for batch in list(self._batches):
                batch.close()
            handle, self._handle = self._handle, None
        del handle  # the C cache goes here unless a view still holds it

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # A cache dropped without close() is freed here (no call can be in
        # flight: a call holds the Cache). Explicit close() or `with` is still
        # better: it frees device memory at a known point.
        self._handle = None

    def _h(self):
        """The raw handle; call with self._lock held, and keep holding it for as
        long as the C call uses the handle."""
        if self._handle is None:
            raise ValueError("operation on a closed rkv.Cache")
        return self._handle.raw

    # --- parameters -----------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """The parameters the cache runs with, by lower-case name
        (``rkv_cache_get_params``)."""
        raw = _c.rkv_cache_params()
        with self._lock:
            _c.rkv_cache_get_params(self._h(), raw)
        return params_dict(raw)

    def get(self, name: str | Param):
        """One parameter of the live cache (``rkv_cache_get``)."""
        key = param_key(name)
        with self._lock:
            value = _c.rkv_cache_get(self._h(), key)
        if key in ENUM_PARAMS:
            return ENUM_PARAMS[key](int(value))
        return value if key in FLOAT_PARAMS else int(value)

    def set(self, name: str | Param, value) -> None:
        """Change lambda, threshold, kernel, pooling, seed or auto_compress of a
        live cache (``rkv_cache_set``; the others fail with BadStateError).
        Applies from the next compression."""
        key = param_key(name)
        value = enum_value(ENUM_PARAMS.get(key, int), value)
        with self._lock:
            _c.rkv_cache_set(self._h(), key, float(value))

    # --- appending ------------------------------------------------------------
    def append(self, layer: int, seqs: Sequence[int] | int | "Batch", k, v, q=None, *,
               num_tokens: Sequence[int] | None = None,
               token_offsets: Sequence[int] | None = None,
               layout: str = "bhtd", prompt: bool = False, stream=None) -> None:
        """Append tokens' K, V (and Q) to one layer of one or many sequences.

        ``seqs`` is a list of sequence ids, or a :class:`Batch` of this cache
        (one token for every entry, padding included: the kernels read the ids
        from the batch's memory when they run; see :class:`Batch`).
        Shapes (``n`` = len(seqs), or the batch's max_entries; H heads, D head_dim):
          * ``[n, H, D]``: one token per sequence (a decode step);
          * ``[n, H, T, D]`` (``layout="bhtd"``, transformers) or ``[n, T, H, D]``
            (``layout="bthd"``): T tokens each, or ``num_tokens[i]`` starting at
            ``token_offsets[i]`` (left padding);
          * ``[total, H, D]`` with ``num_tokens`` and ``token_offsets``: packed varlen.
        Arrays: numpy (host), torch tensors (host or CUDA), anything with
        ``__cuda_array_interface__`` or DLPack; any strides with a contiguous
        last axis; float32, float16 or bfloat16. The library checks that every
        element it reads lies inside each array (CapacityError otherwise).
        ``prompt=True`` marks prompt tokens. Invalidates views of these sequences.
        """
        batch = _batch_of(self, seqs)
        args = _c.rkv_append_args()
        args.layer = layer
        args.flags = _c.RKV_APPEND_PROMPT if prompt else 0
        arrays = {"k": describe(k), "v": describe(v)}
        if q is not None:
            arrays["q"] = describe(q)
        if batch is not None:
            if num_tokens is not None or token_offsets is not None:
                raise InvalidArgumentError("a batch append takes one token per entry: "
                                           "num_tokens and token_offsets must be None")
            n, seq_ids, counts, offsets = batch.max_entries, None, None, None
        else:
            seq_ids = host_ints([seqs] if np.isscalar(seqs) else seqs, np.int32, "seq_ids")
            n = int(seq_ids.size)
            counts = None if num_tokens is None else host_ints(num_tokens, np.int32, "num_tokens")
            offsets = None if token_offsets is None else host_ints(token_offsets, np.int64,
                                                                   "token_offsets")
            # The library reads n entries of these host arrays: it cannot see their length.
            for what, array in (("num_tokens", counts), ("token_offsets", offsets)):
                if array is not None and array.size != n:
                    raise InvalidArgumentError(f"{what} has {array.size} entries for {n} seq_ids")
        args.num_seqs = n
        token_axes = {name: fill_tensor(getattr(args, name), array, name, layout,
                                        packed=counts is not None and len(array.shape) == 3)
                      for name, array in arrays.items()}
        tokens = token_axes["k"]
        if batch is not None and (tokens or 1) != 1:
            raise InvalidArgumentError(f"a batch append takes one token per entry; k has {tokens}")
        if batch is None and counts is None and (tokens or 1) > 1:  # T tokens each, from k's shape
            counts = np.full(n, tokens, np.int32)
        if batch is None:
            _check_token_axes(token_axes, counts, offsets)
        args.seq_ids = None if seq_ids is None else seq_ids.ctypes.data
        args.num_tokens = None if counts is None else counts.ctypes.data
        args.token_offsets = None if offsets is None else offsets.ctypes.data
        check_devices(self.device, self.device_id, arrays.values())
        with self._lock:
            raw = self._h()
            if batch is not None:
                args.batch = batch._raw()
            _c.rkv_append(raw, args, pick_stream(stream, arrays.values()))
        # seq_ids, counts, offsets and the arrays are alive until here: the
        # library has read them (it copies what it keeps) before returning.

    # --- compression ------------------------------------------------------------
    def compress(self, seq: int = ALL, layer: int = ALL, *, stream=None) -> None:
        """Compress now: one sequence if it holds more than its budget, or with
        seq=ALL every sequence that is due; one layer or all."""
        with self._lock:
            _c.rkv_compress(self._h(), seq, layer, stream_handle(stream))

    def compress_due(self, seq: int = ALL, layer: int = ALL) -> bool:
        """True if appending one more token would compress first."""
        with self._lock:
            return bool(_c.rkv_compress_due(self._h(), seq, layer))

    # --- sequences ----------------------------------------------------------------
    def reset(self, seq: int = ALL, *, stream=None) -> None:
        """Forget a sequence (or all) so its slot can serve a new request; its
        budget returns to the cache's."""
        with self._lock:
            _c.rkv_seq_reset(self._h(), seq, stream_handle(stream))

    def truncate(self, seq: int, tokens: int, *, stream=None) -> None:
        """Roll back the last `tokens` appended tokens of every layer of `seq`
        (speculative decoding rejects drafts). Allowed while they have not been
        through a compression (and, for methods that keep queries, while the
        queries that replace them in the window are held: ``max_rollback``);
        else BadStateError naming :meth:`rollback_limit`. Appending the same
        tokens again leaves the cache as if the drafts never came."""
        with self._lock:
            _c.rkv_seq_truncate(self._h(), int(seq), int(tokens), stream_handle(stream))

    def rollback_limit(self, seq: int) -> int:
        """How many tokens :meth:`truncate` accepts for `seq` now."""
        with self._lock:
            return int(_c.rkv_seq_rollback_limit(self._h(), int(seq)))

    def copy(self, src: int, dst: int, *, stream=None) -> None:
        """Fork: copy sequence `src`'s whole state into the empty slot `dst`
        (beam search, n > 1 sampling). The two then evolve independently."""
        with self._lock:
            _c.rkv_seq_copy(self._h(), int(src), int(dst), stream_handle(stream))

    def set_budget(self, seq: int, budget: int) -> None:
        """A smaller budget for one request (set while the sequence is empty;
        from the method's smallest up to the cache's budget). Reset restores
        the cache's; copy carries it."""
        with self._lock:
            _c.rkv_seq_set_budget(self._h(), int(seq), int(budget))

    def get_budget(self, seq: int) -> int:
        """The budget sequence `seq` compresses to."""
        with self._lock:
            return int(_c.rkv_seq_get_budget(self._h(), int(seq)))

    def length(self, seq: int, layer: int) -> tuple[int, int]:
        """(logical, physical): tokens appended so far, tokens held per head now."""
        with self._lock:
            logical, physical = _c.rkv_seq_length(self._h(), seq, layer)
        return int(logical), int(physical)

    def positions(self, seq: int, layer: int, head: int) -> np.ndarray:
        """Original positions held by one KV head, in slot order (a host copy;
        on CUDA it waits for the cache's work: for inspection, not decoding)."""
        with self._lock:  # the length and the copy from one state
            _, physical = self.length(seq, layer)
            out = np.empty(max(physical, 1), np.int32)
            count = _c.rkv_seq_positions(self._h(), seq, layer, head, out.ctypes.data, out.size)
        return out[:count].copy()

    # --- views --------------------------------------------------------------------
    def view(self, seq: int, layer: int) -> SeqView:
        """The held K, V and positions of (seq, layer), without copying."""
        raw = _c.rkv_seq_view()
        with self._lock:
            _c.rkv_view(self._h(), seq, layer, raw)
            owner = self._handle  # the view keeps the memory alive, even past close
        return seq_view(owner, raw)

    def view_layer(self, layer: int) -> LayerView:
        """One layer for every sequence slot, for one batched attention call."""
        raw = _c.rkv_layer_view()
        with self._lock:
            _c.rkv_view_layer(self._h(), layer, raw)
            owner = self._handle
        return layer_view(owner, raw)

    def stats(self, seq: int = ALL) -> Stats:
        raw = _c.rkv_stats()
        with self._lock:
            _c.rkv_cache_stats(self._h(), seq, raw)
        return stats(raw)

    # --- attention ---------------------------------------------------------------
    def attend(self, layer: int, seqs: Sequence[int] | int | "Batch", q, out=None, *,
               scale: float = 0.0, stream=None):
        """Decode attention over the held tokens: q and out are
        ``[n, num_q_heads, head_dim]`` (n = len(seqs), or a Batch's max_entries:
        padding entries leave their rows of out untouched). Returns out
        (allocated like q when not given: numpy or torch). scale <= 0 means
        1/sqrt(head_dim)."""
        batch = _batch_of(self, seqs)
        if batch is not None:
            n, seq_ids = batch.max_entries, None
        else:
            seq_ids = host_ints([seqs] if np.isscalar(seqs) else seqs, np.int32, "seq_ids")
            n = int(seq_ids.size)
        if out is None:
            if hasattr(q, "new_empty"):  # torch
                out = q.new_zeros(q.shape) if batch is not None else q.new_empty(q.shape)
            elif isinstance(q, np.ndarray):
                out = (np.zeros if batch is not None else np.empty)(q.shape, q.dtype)
            else:
                raise InvalidArgumentError("pass out= for arrays that are neither numpy nor torch")
        arrays = {"q": describe(q), "out": describe(out)}
        check_writable(arrays["out"], "out")
        args = _c.rkv_attend_args()
        args.layer = layer
        args.num_seqs = n
        args.seq_ids = None if seq_ids is None else seq_ids.ctypes.data
        args.scale = float(scale)
        for name, array in arrays.items():
            if len(array.shape) != 3:
                raise InvalidArgumentError(f"{name}: expected [n, heads, dim]; got shape {array.shape}")
            fill_tensor(getattr(args, name), array, name, "bhtd", packed=False)
        check_devices(self.device, self.device_id, arrays.values())
        with self._lock:
            raw = self._h()
            if batch is not None:
                args.batch = batch._raw()
            _c.rkv_attend(raw, args, pick_stream(stream, arrays.values()))
        return out

    def __repr__(self) -> str:
        if self._handle is None:
            return "<rkv.Cache closed>"
        p = self.params
        return (f"<rkv.Cache {p['method'].name.lower()} budget={p['budget']} "
                f"seqs={p['max_seqs']} layers={p['num_layers']} "
                f"heads={p['num_kv_heads']}/{p['num_q_heads']}x{p['head_dim']} "
                f"{p['device_type'].name.lower()}>")


def _check_token_axes(token_axes: dict, counts, offsets) -> None:
    """An array without a token axis ([n, heads, dim]) holds one token per
    entry. The library sees it as stride_token 0, which is legal (the same
    row for every token), so only the binding knows that a call reading more
    than one token, or from an offset, from such an array is a mistake."""
    reads_more = (counts is not None and bool(np.any(counts > 1))) or (
        offsets is not None and bool(np.any(offsets > 0)))
    if not reads_more:
        return
    for name, tokens in token_axes.items():
        if tokens is None:
            raise InvalidArgumentError(
                f"{name} is [n, heads, dim] (one token per entry), but num_tokens and token_offsets "
                f"read more than its first token: give it a token axis ([n, heads, T, dim])")


def _batch_of(cache: Cache, seqs):
    """The Batch when `seqs` is one (of this cache), else None."""
    from .batch import Batch
    if not isinstance(seqs, Batch):
        return None
    if seqs.cache is not cache:
        raise InvalidArgumentError("the batch belongs to another cache")
    return seqs
