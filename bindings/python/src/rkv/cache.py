"""The Pythonic layer: :class:`Cache` over the raw module ``rkv.capi``.

A Cache holds the C handle and nothing else; every length, parameter and
statistic is read from the library when asked for. Errors come from the
library as the exceptions of :mod:`rkv.errors` with its message.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import capi as _c
from ._arrays import (Array, cuda_view, describe, host_ints, host_view, int_view,
                      stream_handle)
from .enums import ALL, Device, DType, Guard, Method, Mode, Param, Pooling
from .errors import InvalidArgumentError

__all__ = ["Cache", "KVView", "LayerView", "Stats", "cache_size"]

_ENUM_PARAMS = {Param.DTYPE: DType, Param.DEVICE_TYPE: Device, Param.METHOD: Method,
                Param.MODE: Mode, Param.POOLING: Pooling, Param.GUARDS: Guard}
_FLOAT_PARAMS = {Param.LAMBDA, Param.THRESHOLD}
_DTYPE_NAMES = {"f32": DType.F32, "float32": DType.F32, "f16": DType.F16, "float16": DType.F16,
                "half": DType.F16, "bf16": DType.BF16, "bfloat16": DType.BF16}


def _enum_value(enum_type, value):
    """Accept the enum, its value, or its name in any case ("snapkv", "bf16")."""
    if isinstance(value, str):
        if enum_type is DType and value.lower() in _DTYPE_NAMES:
            return _DTYPE_NAMES[value.lower()]
        try:
            return enum_type[value.upper()]
        except KeyError:
            names = ", ".join(m.name.lower() for m in enum_type)
            raise InvalidArgumentError(f"unknown {enum_type.__name__} {value!r}: one of {names}") from None
    if enum_type is DType and not isinstance(value, int):  # e.g. torch.bfloat16, np.float16
        name = str(value).rsplit(".", 1)[-1].replace("'>", "").lower()
        if name in _DTYPE_NAMES:
            return _DTYPE_NAMES[name]
    return value


def _device(device) -> tuple[Device, int]:
    """"cpu", "cuda", "cuda:1", a torch.device or a Device -> (type, ordinal)."""
    if isinstance(device, Device):
        return device, 0
    text = str(device)
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return (Device.CPU if kind == "cpu" else Device.CUDA), int(index or 0)


def _make_params(device, options: dict[str, Any]):
    params = _c.rkv_cache_params()  # library defaults, struct_size set
    device_type, device_id = _device(device)
    options.setdefault("device_type", device_type)
    options.setdefault("device_id", device_id)
    if "num_q_heads" not in options and "num_kv_heads" in options:
        options["num_q_heads"] = options["num_kv_heads"]
    for name, value in options.items():
        try:
            key = Param[name.upper()]
        except KeyError:
            raise TypeError(f"unknown cache parameter {name!r}") from None
        if key == Param.SEED:
            params.seed = int(value)  # any uint64: a double would round above 2^53
            continue
        value = _enum_value(_ENUM_PARAMS.get(key, int), value)
        _c.rkv_params_set(params, key, float(value))  # bounds checked by the library
    return params


def cache_size(*, device="cpu", **options) -> int:
    """Bytes a Cache with these options would allocate (host plus device),
    without allocating. Validates exactly as creating one does."""
    return int(_c.rkv_cache_size(_make_params(device, options)))


class _Handle:
    """Owns the C cache. Its owners are the Cache (until close) and every view
    made from it, so the memory a view points at lives as long as the view: the
    C cache is destroyed when the last of them lets go."""
    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw

    def __del__(self):
        raw, self.raw = self.raw, None
        if raw is not None and _c is not None:  # _c is None at interpreter shutdown
            _c.rkv_cache_destroy(raw)


@dataclass(frozen=True)
class KVView:
    """Held K, V and positions of one (sequence, layer), borrowed from the cache.

    ``k`` and ``v`` are ``[num_kv_heads, length, head_dim]``, ``positions``
    ``[num_kv_heads, length]``: numpy arrays for a CPU cache, torch tensors for a
    CUDA cache, over the cache's own memory (no copy). bf16 storage reads as
    uint16 bits in numpy. Current until the next append, compress or reset of
    the sequence: read or copy it before then. The view keeps the memory alive,
    also after close (then frozen as it was).
    """
    k: Any
    v: Any
    positions: Any
    length: int
    logical_length: int
    dtype: DType
    device: Device
    device_id: int


@dataclass(frozen=True)
class LayerView:
    """A whole layer for every sequence slot: ``k``/``v`` are
    ``[max_seqs, num_kv_heads, capacity, head_dim]``, ``positions``
    ``[max_seqs, num_kv_heads, capacity]`` and ``lengths`` ``[max_seqs]`` (tokens
    held per head). Same lifetime as :class:`KVView`."""
    k: Any
    v: Any
    positions: Any
    lengths: Any
    capacity: int
    dtype: DType
    device: Device
    device_id: int


@dataclass(frozen=True)
class Stats:
    bytes_allocated: int
    bytes_kv_capacity: int
    bytes_kv_held: int
    bytes_kv_full: int
    tokens_appended: int
    tokens_held: int
    tokens_evicted: int
    compressions: int
    compress_seconds: float


class Cache:
    """A librkv cache: the K/V memory of ``max_seqs`` sequences x ``num_layers``
    x ``num_kv_heads``, compressed to a fixed budget per head.

    Keyword options are the parameters of the C API in lower case (``budget``,
    ``buffer``, ``window``, ``method``, ``dtype``, ``lambda_`` or ``**{"lambda": x}``,
    ...); enums accept the enum, its value or its name (``method="snapkv"``).
    ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. All memory is allocated
    here, once.

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
        if "lambda_" in options:
            options["lambda"] = options.pop("lambda_")
        options.update(max_seqs=max_seqs, num_layers=num_layers, num_kv_heads=num_kv_heads,
                       head_dim=head_dim)
        if num_q_heads is not None:
            options["num_q_heads"] = num_q_heads
        self._handle = _Handle(_c.rkv_cache_create(_make_params(device, options)))

    # --- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Free the cache and its memory. Waits for a call another thread has in
        flight; later calls raise ValueError. Memory that views still point at
        is freed with the last of them. Calling it again does nothing."""
        with self._lock:
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
        """The parameters the cache runs with, by lower-case name."""
        raw = _c.rkv_cache_params()
        with self._lock:
            _c.rkv_cache_get_params(self._h(), raw)
        out = {}
        for key in Param:
            if key == Param.SEED:
                out["seed"] = int(raw.seed)
                continue
            value = _c.rkv_params_get(raw, key)
            if key in _ENUM_PARAMS:
                value = _ENUM_PARAMS[key](int(value))
            elif key not in _FLOAT_PARAMS:
                value = int(value)
            out[key.name.lower()] = value
        return out

    def set_param(self, name: str | Param, value) -> None:
        """Change lambda, threshold, kernel, pooling, seed or auto_compress of a
        live cache (the others fail with BadStateError). Applies from the next
        compression."""
        key = name if isinstance(name, Param) else Param[str(name).upper().rstrip("_")]
        value = _enum_value(_ENUM_PARAMS.get(key, int), value)
        with self._lock:
            _c.rkv_cache_set_param(self._h(), key, float(value))

    # --- appending ------------------------------------------------------------
    def append(self, layer: int, seq_ids: Sequence[int] | int, k, v, q=None, *,
               num_tokens: Sequence[int] | None = None,
               token_offsets: Sequence[int] | None = None,
               layout: str = "bhtd", prompt: bool = False, stream=None) -> None:
        """Append tokens' K, V (and Q) to one layer of one or many sequences.

        Shapes (``n`` = len(seq_ids), H heads, D head_dim):
          * ``[n, H, D]``: one token per sequence (a decode step);
          * ``[n, H, T, D]`` (``layout="bhtd"``, transformers) or ``[n, T, H, D]``
            (``layout="bthd"``): T tokens each, or ``num_tokens[i]`` starting at
            ``token_offsets[i]`` (left padding);
          * ``[total, H, D]`` with ``num_tokens`` and ``token_offsets``: packed varlen.
        Arrays: numpy (host), torch tensors (host or CUDA), anything with
        ``__cuda_array_interface__`` or DLPack; any strides with a contiguous
        last axis; float32, float16 or bfloat16. ``prompt=True`` marks prompt
        tokens. Invalidates views of these sequences.
        """
        seqs = host_ints([seq_ids] if np.isscalar(seq_ids) else seq_ids, np.int32, "seq_ids")
        n = int(seqs.size)
        arrays = {"k": describe(k), "v": describe(v)}
        if q is not None:
            arrays["q"] = describe(q)
        counts = None if num_tokens is None else host_ints(num_tokens, np.int32, "num_tokens")
        offsets = None if token_offsets is None else host_ints(token_offsets, np.int64, "token_offsets")
        args = _c.rkv_append_args()
        args.layer = layer
        args.num_seqs = n
        args.seq_ids = seqs.ctypes.data
        args.flags = _c.RKV_APPEND_PROMPT if prompt else 0
        token_axes = {name: _fill_tensor(getattr(args, name), array, name, n, layout,
                                         packed=counts is not None and len(array.shape) == 3)
                      for name, array in arrays.items()}
        if counts is None and (token_axes["k"] or 0) > 1:  # T tokens each, from k's shape
            counts = np.full(n, token_axes["k"], np.int32)
        _check_extents(token_axes, n, counts, offsets)
        args.num_tokens = None if counts is None else counts.ctypes.data
        args.token_offsets = None if offsets is None else offsets.ctypes.data
        with self._lock:
            raw = self._h()
            _check_devices(raw, arrays.values())
            _c.rkv_append(raw, args, _pick_stream(stream, arrays.values()))
        # seqs, counts, offsets and the arrays are alive until here: the
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

    def reset(self, seq: int = ALL, *, stream=None) -> None:
        """Forget a sequence (or all) so its slot can serve a new request."""
        with self._lock:
            _c.rkv_seq_reset(self._h(), seq, stream_handle(stream))

    # --- views and inspection ----------------------------------------------------
    def view(self, seq: int, layer: int) -> KVView:
        """The held K, V and positions of (seq, layer), without copying."""
        raw = _c.rkv_kv_view()
        with self._lock:
            _c.rkv_view(self._h(), seq, layer, raw)
            owner = self._handle  # the view keeps the memory alive, even past close
        heads, length, dim = raw.num_kv_heads, raw.length, raw.head_dim
        dtype, device = DType(raw.dtype), Device(raw.device_type)
        shape, strides = (heads, length, dim), (raw.stride_head, raw.stride_token, 1)
        make = host_view if device == Device.CPU else (
            lambda *a: cuda_view(*a, raw.device_id))
        return KVView(
            k=make(owner, raw.k, shape, strides, dtype),
            v=make(owner, raw.v, shape, strides, dtype),
            positions=int_view(owner, raw.positions, (heads, length), (raw.positions_stride_head, 1),
                               device, raw.device_id),
            length=length, logical_length=int(raw.logical_length), dtype=dtype, device=device,
            device_id=raw.device_id)

    def layer_view(self, layer: int) -> LayerView:
        """One layer for every sequence slot, for one batched attention call."""
        raw = _c.rkv_layer_view()
        with self._lock:
            _c.rkv_view_layer(self._h(), layer, raw)
            owner = self._handle
        dtype, device = DType(raw.dtype), Device(raw.device_type)
        shape = (raw.max_seqs, raw.num_kv_heads, raw.capacity, raw.head_dim)
        strides = (raw.stride_seq, raw.stride_head, raw.stride_token, 1)
        make = host_view if device == Device.CPU else (
            lambda *a: cuda_view(*a, raw.device_id))
        return LayerView(
            k=make(owner, raw.k, shape, strides, dtype),
            v=make(owner, raw.v, shape, strides, dtype),
            positions=int_view(owner, raw.positions, shape[:3],
                               (raw.positions_stride_seq, raw.positions_stride_head, 1),
                               device, raw.device_id),
            lengths=int_view(owner, raw.lengths, (raw.max_seqs,), (1,), device, raw.device_id),
            capacity=raw.capacity, dtype=dtype, device=device, device_id=raw.device_id)

    def seq_length(self, seq: int, layer: int) -> tuple[int, int]:
        """(logical, physical): tokens appended so far, tokens held per head now."""
        with self._lock:
            logical, physical = _c.rkv_seq_length(self._h(), seq, layer)
        return int(logical), int(physical)

    def kept_positions(self, seq: int, layer: int, head: int) -> np.ndarray:
        """Original positions held by one KV head, in slot order (a host copy)."""
        with self._lock:  # the length and the copy from one state
            _, physical = self.seq_length(seq, layer)
            out = np.empty(max(physical, 1), np.int32)
            count = _c.rkv_kept_positions(self._h(), seq, layer, head, out.ctypes.data, out.size)
        return out[:count].copy()

    def inspect_scores(self, seq: int, layer: int, head: int, kind: str = "final") -> np.ndarray:
        """Experimental: the scores the next compression would rank for one head
        ("importance", "redundancy" or "final")."""
        kinds = {"importance": _c.RKV_SCORE_IMPORTANCE, "redundancy": _c.RKV_SCORE_REDUNDANCY,
                 "final": _c.RKV_SCORE_FINAL}
        if kind not in kinds:
            raise InvalidArgumentError(f"unknown score kind {kind!r}: one of {', '.join(kinds)}")
        with self._lock:
            _, physical = self.seq_length(seq, layer)
            out = np.empty(max(physical, 1), np.float32)
            count = _c.rkv_inspect_scores(self._h(), seq, layer, head, kinds[kind], out.ctypes.data,
                                          out.size)
        return out[:count].copy()

    def stats(self, seq: int = ALL) -> Stats:
        raw = _c.rkv_stats()
        with self._lock:
            _c.rkv_cache_stats(self._h(), seq, raw)
        return Stats(**{f: getattr(raw, f) for f in Stats.__dataclass_fields__})

    # --- attention ---------------------------------------------------------------
    def attend(self, layer: int, seq_ids: Sequence[int] | int, q, out=None, *,
               scale: float = 0.0, stream=None):
        """Decode attention over the held tokens: q and out are
        ``[n, num_q_heads, head_dim]``. Returns out (allocated like q when not
        given: numpy or torch). scale <= 0 means 1/sqrt(head_dim)."""
        seqs = host_ints([seq_ids] if np.isscalar(seq_ids) else seq_ids, np.int32, "seq_ids")
        if out is None:
            if hasattr(q, "new_empty"):  # torch
                out = q.new_empty(q.shape)
            elif isinstance(q, np.ndarray):
                out = np.empty(q.shape, q.dtype)
            else:
                raise InvalidArgumentError("pass out= for arrays that are neither numpy nor torch")
        arrays = {"q": describe(q), "out": describe(out)}
        if not arrays["out"].writable:
            raise InvalidArgumentError(
                "out is read-only (np.frombuffer over bytes, a broadcast view, a readonly "
                "__cuda_array_interface__): attend writes into it; pass a writable array")
        tensors = {}
        for name, array in arrays.items():
            tensors[name] = _c.rkv_tensor()
            _fill_tensor(tensors[name], array, name, int(seqs.size), "bhtd", packed=False)
        with self._lock:
            raw = self._h()
            _check_devices(raw, arrays.values())
            _c.rkv_attend(raw, layer, int(seqs.size), seqs.ctypes.data, tensors["q"],
                          tensors["out"], float(scale), _pick_stream(stream, arrays.values()))
        return out

    def __repr__(self) -> str:
        if self._handle is None:
            return "<rkv.Cache closed>"
        p = self.params
        return (f"<rkv.Cache {p['method'].name.lower()} budget={p['budget']} "
                f"seqs={p['max_seqs']} layers={p['num_layers']} "
                f"heads={p['num_kv_heads']}/{p['num_q_heads']}x{p['head_dim']} "
                f"{p['device_type'].name.lower()}>")


def _fill_tensor(tensor, array: Array, name: str, n: int, layout: str, packed: bool) -> int | None:
    """Describe `array` in an rkv_tensor. Returns the length of its token axis
    (None for one token per entry)."""
    shape, strides = array.shape, array.strides
    if shape and shape[-1] > 1 and strides[-1] != 1:
        raise InvalidArgumentError(f"{name}: the last (head_dim) axis must be contiguous")
    if packed:  # [total, H, D]
        head_axis, stride_seq, stride_token, tokens = 1, 0, strides[0], shape[0]
    elif len(shape) == 3:  # [n, H, D]
        head_axis, stride_seq, stride_token, tokens = 1, strides[0], 0, None
    elif len(shape) == 4 and layout in ("bhtd", "bthd"):
        head_axis, token_axis = (1, 2) if layout == "bhtd" else (2, 1)
        stride_seq, stride_token, tokens = strides[0], strides[token_axis], shape[token_axis]
    else:
        raise InvalidArgumentError(
            f"{name}: expected [n, heads, dim], [n, heads, T, dim] (layout 'bhtd'), "
            f"[n, T, heads, dim] (layout 'bthd') or packed [total, heads, dim]; got shape {shape}")
    if not packed and shape[0] != n:
        raise InvalidArgumentError(f"{name}: {shape[0]} entries for {n} seq_ids")
    tensor.data = array.address
    tensor.dtype = array.dtype
    tensor.num_heads = shape[head_axis]
    tensor.head_dim = shape[-1]
    tensor.stride_seq, tensor.stride_token = stride_seq, stride_token
    tensor.stride_head = strides[head_axis]
    return tokens


def _check_devices(raw_cache, arrays) -> None:
    """Host arrays for a CPU cache, memory of its GPU for a CUDA cache: the
    library cannot tell a pointer's device, and a wrong one would crash."""
    raw = _c.rkv_cache_params()
    _c.rkv_cache_get_params(raw_cache, raw)
    for array in arrays:
        if array.device != raw.device_type or (
                array.device == Device.CUDA and array.device_id not in (None, raw.device_id)):
            where = "cpu" if array.device == Device.CPU else f"cuda:{array.device_id}"
            cache = "cpu" if raw.device_type == Device.CPU else f"cuda:{raw.device_id}"
            raise InvalidArgumentError(f"an array on {where} was passed to a cache on {cache}")


def _check_extents(token_axes: dict, n: int, counts, offsets) -> None:
    """The library reads tokens offsets[i] .. offsets[i] + counts[i] - 1 of each
    entry from every array (k, v and q alike): each array's token axis must
    hold them. `token_axes` maps a name to its token axis length (None: one
    token per entry). rkv_tensor carries no extent, so the library cannot check
    this itself; once it does (issue 10), this function goes."""
    if counts is not None and counts.size != n:
        raise InvalidArgumentError(f"num_tokens has {counts.size} entries for {n} seq_ids")
    if offsets is not None and offsets.size != n:
        raise InvalidArgumentError(f"token_offsets has {offsets.size} entries for {n} seq_ids")
    if n == 0:
        return
    count = counts.astype(np.int64) if counts is not None else np.ones(n, np.int64)
    start = offsets if offsets is not None else np.zeros(n, np.int64)
    if np.any(count < 1) or np.any(start < 0):
        return  # the library refuses these before reading anything
    end = int(np.max(start + count))
    for name, tokens in token_axes.items():
        held = 1 if tokens is None else tokens
        if end > held:
            raise InvalidArgumentError(
                f"{name} holds {held} token(s) per entry{' ([n, heads, dim])' if tokens is None else ''}, "
                f"but num_tokens and token_offsets read up to token {end}")


def _pick_stream(stream, arrays) -> int | None:
    """The stream to enqueue on: the caller's; else a __cuda_array_interface__
    producer's stream; else torch's current stream for CUDA tensors; else NULL."""
    if stream is not None:
        return stream_handle(stream)
    arrays = list(arrays)
    for array in arrays:
        if array.stream is not None:
            return array.stream
    for array in arrays:
        if array.is_torch and array.device == Device.CUDA:
            import torch
            return torch.cuda.current_stream(array.device_id).cuda_stream
    return None
