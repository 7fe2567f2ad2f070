"""What the cache hands back: views of its memory (no copies) and statistics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._arrays import cuda_view, host_view, int_view, scale_view
from .enums import Device, DType

__all__ = ["SeqView", "LayerView", "Stats"]


@dataclass(frozen=True)
class SeqView:
    """Held K, V and positions of one (sequence, layer) (``rkv_view``), borrowed
    from the cache.

    ``k`` and ``v`` are ``[num_kv_heads, length, head_dim]``, ``positions``
    ``[num_kv_heads, length]``: numpy arrays for a CPU cache, torch tensors for a
    CUDA cache, over the cache's own memory (no copy). bf16 storage reads as
    uint16 bits in numpy; FP8 E4M3 storage as uint8 bytes (torch.float8_e4m3fn
    on CUDA), with ``k_scale``/``v_scale`` ``[num_kv_heads, length]`` float32: a
    value is fp8 * scale (None for the other dtypes). Current until the next append, compress, truncate,
    copy onto the sequence or reset: read or copy it before then. The view
    keeps the memory alive, also after close (then frozen as it was).
    """
    k: Any
    v: Any
    positions: Any
    length: int
    logical_length: int
    dtype: DType
    device: Device
    device_id: int
    k_scale: Any = None
    v_scale: Any = None


@dataclass(frozen=True)
class LayerView:
    """A whole layer for every sequence slot (``rkv_view_layer``): ``k``/``v``
    are ``[max_seqs, num_kv_heads, capacity, head_dim]``, ``positions``
    ``[max_seqs, num_kv_heads, capacity]`` and ``lengths`` ``[max_seqs]`` (tokens
    held per head, in the cache's memory: on a CUDA cache a device tensor the
    library keeps current in stream order, batch appends included); FP8
    storage: ``k_scale``/``v_scale`` ``[max_seqs, num_kv_heads, capacity]``. Same
    lifetime as :class:`SeqView`."""
    k: Any
    v: Any
    positions: Any
    lengths: Any
    capacity: int
    dtype: DType
    device: Device
    device_id: int
    k_scale: Any = None
    v_scale: Any = None


@dataclass(frozen=True)
class Stats:
    """``rkv_stats`` of one sequence or of the whole cache."""
    bytes_allocated: int
    bytes_kv_capacity: int
    bytes_kv_held: int
    bytes_kv_full: int
    tokens_appended: int
    tokens_held: int
    tokens_evicted: int
    compressions: int
    compress_seconds: float


def _maker(device: Device, device_id: int):
    if device == Device.CPU:
        return host_view
    return lambda *args: cuda_view(*args, device_id)


def seq_view(owner, raw) -> SeqView:
    """A SeqView over a filled rkv_seq_view; `owner` keeps the memory alive."""
    heads, length, dim = raw.num_kv_heads, raw.length, raw.head_dim
    dtype, device = DType(raw.dtype), Device(raw.device_type)
    shape, strides = (heads, length, dim), (raw.stride_head, raw.stride_token, 1)
    make = _maker(device, raw.device_id)
    return SeqView(
        k=make(owner, raw.k, shape, strides, dtype),
        v=make(owner, raw.v, shape, strides, dtype),
        positions=int_view(owner, raw.positions, (heads, length), (raw.positions_stride_head, 1),
                           device, raw.device_id),
        length=length, logical_length=int(raw.logical_length), dtype=dtype, device=device,
        device_id=raw.device_id,
        k_scale=scale_view(owner, raw.k_scale, (heads, length), (raw.scale_stride_head, 1), device,
                           raw.device_id),
        v_scale=scale_view(owner, raw.v_scale, (heads, length), (raw.scale_stride_head, 1), device,
                           raw.device_id))


def layer_view(owner, raw) -> LayerView:
    """A LayerView over a filled rkv_layer_view."""
    dtype, device = DType(raw.dtype), Device(raw.device_type)
    shape = (raw.max_seqs, raw.num_kv_heads, raw.capacity, raw.head_dim)
    strides = (raw.stride_seq, raw.stride_head, raw.stride_token, 1)
    make = _maker(device, raw.device_id)
    return LayerView(
        k=make(owner, raw.k, shape, strides, dtype),
        v=make(owner, raw.v, shape, strides, dtype),
        positions=int_view(owner, raw.positions, shape[:3],
                           (raw.positions_stride_seq, raw.positions_stride_head, 1),
                           device, raw.device_id),
        lengths=int_view(owner, raw.lengths, (raw.max_seqs,), (1,), device, raw.device_id),
        capacity=raw.capacity, dtype=dtype, device=device, device_id=raw.device_id,
        k_scale=scale_view(owner, raw.k_scale, shape[:3], (raw.scale_stride_seq, raw.scale_stride_head, 1),
                           device, raw.device_id),
        v_scale=scale_view(owner, raw.v_scale, shape[:3], (raw.scale_stride_seq, raw.scale_stride_head, 1),
                           device, raw.device_id))


def stats(raw) -> Stats:
    return Stats(**{f: getattr(raw, f) for f in Stats.__dataclass_fields__})
