"""Arrays as ``rkv_tensor``s: shape and layout to element strides, the extent
the library checks every access against, and the checks the library cannot
make itself (which device a pointer is on, read-only memory, a contiguous
last axis, an empty array)."""
from __future__ import annotations

from ._arrays import Array, stream_handle
from .enums import Device
from .errors import InvalidArgumentError


def fill_tensor(tensor, array: Array, name: str, layout: str, packed: bool) -> int | None:
    """Describe `array` in an rkv_tensor, extent included. Returns the length of
    its token axis (None for one token per entry, [n, heads, dim]).

    The library checks that every element a call touches lies inside the
    extent (rkv_tensor.extent), so a short array, a wrong token count or an
    offset past the end comes back as the library's CapacityError naming the
    tensor; what is checked here is what the library cannot see."""
    shape, strides = array.shape, array.strides
    if array.extent == 0:  # extent 0 means "unchecked" to the library: never pass one
        raise InvalidArgumentError(f"{name} is empty (shape {shape}): there is nothing to read")
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
    tensor.data = array.address
    tensor.dtype = array.dtype
    tensor.num_heads = shape[head_axis]
    tensor.head_dim = shape[-1]
    tensor.stride_seq, tensor.stride_token = stride_seq, stride_token
    tensor.stride_head = strides[head_axis]
    tensor.extent = array.extent
    return tokens


def check_devices(device: Device, device_id: int, arrays) -> None:
    """Host arrays for a CPU cache, memory of its GPU for a CUDA cache: a CPU
    cache cannot tell a pointer's device, and a device pointer would crash it."""
    for array in arrays:
        if array.device != device or (
                array.device == Device.CUDA and array.device_id not in (None, device_id)):
            where = "cpu" if array.device == Device.CPU else f"cuda:{array.device_id}"
            cache = "cpu" if device == Device.CPU else f"cuda:{device_id}"
            raise InvalidArgumentError(f"an array on {where} was passed to a cache on {cache}: "
                                       f"move it to {cache} first")


def check_writable(array: Array, name: str) -> None:
    if not array.writable:
        raise InvalidArgumentError(
            f"{name} is read-only (np.frombuffer over bytes, a broadcast view, a readonly "
            f"__cuda_array_interface__): the call writes into it; pass a writable array")


def pick_stream(stream, arrays) -> int | None:
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
