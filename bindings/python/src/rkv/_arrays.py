"""Array interop without copies: what librkv needs from an array (address,
shape, element strides, dtype, device) read from numpy arrays, torch tensors,
``__cuda_array_interface__`` objects or DLPack producers, and views of the
cache's memory handed back as numpy arrays or torch tensors.

Nothing here copies tensor data. Small host index arrays (seq_ids, token
counts, offsets) are converted to contiguous int32/int64 numpy arrays, which
copies only when the caller passed a list or another integer type.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from .enums import Device, DType
from .errors import InvalidArgumentError

_NUMPY_DTYPES = {np.dtype(np.float32): DType.F32, np.dtype(np.float16): DType.F16}
_ITEMSIZE = {DType.F32: 4, DType.F16: 2, DType.BF16: 2, DType.FP8_E4M3: 1}
# What views are exposed as on the host: numpy has no bfloat16, so bf16 storage
# comes back as its raw uint16 bits (torch: .view(torch.bfloat16), no copy).
_VIEW_TYPESTR = {DType.F32: "<f4", DType.F16: "<f2", DType.BF16: "<u2", DType.FP8_E4M3: "|u1"}
# ... and on CUDA, where torch reinterprets int16 as bfloat16 without a copy.
_CUDA_VIEW_TYPESTR = {DType.F32: "<f4", DType.F16: "<f2", DType.BF16: "<i2", DType.FP8_E4M3: "|u1"}


@dataclass
class Array:
    """What librkv needs to know about one array argument."""
    address: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    dtype: DType
    device: Device
    device_id: int | None  # None: not stated by the producer
    stream: int | None  # a producer's stream (__cuda_array_interface__ v3)
    owner: Any  # keeps the memory alive while librkv reads it
    is_torch: bool = False
    # False: librkv must not write into it (a read-only numpy array, a CAI
    # readonly flag). DLPack's legacy capsule carries no such flag.
    writable: bool = True

    @property
    def extent(self) -> int:
        """Elements from `address` to the last element of the array, plus one:
        what rkv_tensor.extent tells the library it may touch. 0 for an empty
        array (the library reads 0 as "unchecked": callers refuse those)."""
        if 0 in self.shape:
            return 0
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides) if s > 0)


def _torch_dtype(dtype) -> DType:
    import torch
    table = {torch.float32: DType.F32, torch.float16: DType.F16, torch.bfloat16: DType.BF16}
    if dtype not in table:
        raise InvalidArgumentError(f"unsupported tensor dtype {dtype}: use float32, float16 or bfloat16")
    return table[dtype]


def _numpy_dtype(dtype: np.dtype) -> DType:
    if dtype.name == "bfloat16":  # ml_dtypes' bfloat16
        return DType.BF16
    if dtype not in _NUMPY_DTYPES:
        raise InvalidArgumentError(f"unsupported array dtype {dtype}: use float32, float16 or bfloat16")
    return _NUMPY_DTYPES[dtype]


def _typestr_dtype(typestr: str) -> DType:
    table = {"<f4": DType.F32, "<f2": DType.F16}
    if typestr not in table:
        raise InvalidArgumentError(f"unsupported __cuda_array_interface__ typestr {typestr!r}")
    return table[typestr]


def _element_strides(shape, byte_strides, itemsize) -> tuple[int, ...]:
    if byte_strides is None:  # C-contiguous
        strides, step = [], 1
        for n in reversed(shape):
            strides.append(step)
            step *= n
        return tuple(reversed(strides))
    for s in byte_strides:
        if s % itemsize:
            raise InvalidArgumentError(f"stride of {s} bytes is not a whole number of elements")
    return tuple(s // itemsize for s in byte_strides)


# --- DLPack (legacy, unversioned capsule): the C structs, read with ctypes ---
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_DL_DTYPES = {(2, 32): DType.F32, (2, 16): DType.F16, (4, 16): DType.BF16}
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _from_dlpack(obj, stream: int | None) -> Array:
    device_type, device_id = obj.__dlpack_device__()
    if device_type == _DL_CUDA:
        # DLPack's stream argument: the consumer's stream, so the producer
        # orders its pending work before it; 1 is the legacy default stream.
        capsule = obj.__dlpack__(stream=1 if stream is None else stream)
    else:
        capsule = obj.__dlpack__()
    # The capsule is not renamed "used_dltensor": we only borrow it for the
    # call, and while its name stays "dltensor" the producer's capsule
    # destructor frees the tensor when `capsule` (kept in `owner`) dies.
    tensor = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    key = (tensor.dtype.code, tensor.dtype.bits)
    if key not in _DL_DTYPES or tensor.dtype.lanes != 1:
        raise InvalidArgumentError(f"unsupported DLPack dtype code {key[0]} bits {key[1]}")
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    if tensor.strides:
        strides = tuple(tensor.strides[i] for i in range(tensor.ndim))
    else:
        strides = _element_strides(shape, None, 1)
    if device_type in (_DL_CPU, _DL_CUDA_HOST, _DL_CUDA_MANAGED):
        device = Device.CPU
    elif device_type == _DL_CUDA:
        device = Device.CUDA
    else:
        raise InvalidArgumentError(f"unsupported DLPack device type {device_type}")
    dtype = _DL_DTYPES[key]
    return Array((tensor.data or 0) + tensor.byte_offset, shape, strides, dtype, device,
                 int(device_id), None, (obj, capsule))


def describe(obj, stream: int | None = None) -> Array:
    """Read an array argument's address, shape, strides, dtype and device."""
    if type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr"):
        device = Device.CUDA if obj.device.type == "cuda" else Device.CPU
        if obj.device.type not in ("cpu", "cuda"):
            raise InvalidArgumentError(f"tensors on {obj.device} are not supported")
        return Array(obj.data_ptr(), tuple(obj.shape), tuple(obj.stride()), _torch_dtype(obj.dtype),
                     device, obj.device.index, None, obj, is_torch=True)
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        dtype = _typestr_dtype(cai["typestr"])
        shape = tuple(cai["shape"])
        return Array(cai["data"][0], shape,
                     _element_strides(shape, cai.get("strides"), _ITEMSIZE[dtype]), dtype,
                     Device.CUDA, None, cai.get("stream"), obj, writable=not cai["data"][1])
    if hasattr(obj, "__dlpack__") and not isinstance(obj, np.ndarray):
        return _from_dlpack(obj, stream)
    array = np.asarray(obj)
    dtype = _numpy_dtype(array.dtype)
    return Array(array.__array_interface__["data"][0], array.shape,
                 _element_strides(array.shape, array.strides, array.itemsize), dtype,
                 Device.CPU, None, None, array, writable=bool(array.flags.writeable))


def host_ints(values, dtype, what: str) -> np.ndarray:
    """A small host index array (seq_ids, counts, offsets) as contiguous ints."""
    array = np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=dtype)
    if array.size and not np.array_equal(array, np.asarray(values).reshape(-1)):
        raise InvalidArgumentError(f"{what} must be integers that fit in {np.dtype(dtype).name}")
    return array


def stream_handle(stream) -> int | None:
    """A CUDA stream as an address: None, an int, a torch.cuda.Stream
    (.cuda_stream) or a CuPy stream (.ptr)."""
    if stream is None or isinstance(stream, int):
        return stream
    for attribute in ("cuda_stream", "ptr"):
        if hasattr(stream, attribute):
            return int(getattr(stream, attribute))
    raise InvalidArgumentError(f"cannot use {type(stream).__name__} as a CUDA stream")


class _Interface:
    """Exposes cache memory to numpy or torch, and keeps the memory's owner
    (the cache's handle) alive as long as any array made from it."""

    def __init__(self, owner, key: str, interface: dict):
        self._owner = owner
        setattr(self, key, interface)


def host_view(owner, address: int, shape, strides, dtype: DType) -> np.ndarray:
    """A numpy array over cache memory (no copy). bf16 comes back as uint16 bits,
    FP8 E4M3 as uint8 bytes."""
    itemsize = _ITEMSIZE[dtype]
    if 0 in shape or not address:
        return np.empty(shape, dtype=np.dtype(_VIEW_TYPESTR[dtype]))
    interface = {"version": 3, "shape": tuple(shape), "typestr": _VIEW_TYPESTR[dtype],
                 "data": (address, False), "strides": tuple(s * itemsize for s in strides)}
    return np.asarray(_Interface(owner, "__array_interface__", interface))


def cuda_view(owner, address: int, shape, strides, dtype: DType, device_id: int):
    """A torch tensor over the cache's device memory (no copy)."""
    import torch
    torch_dtype = {DType.F32: torch.float32, DType.F16: torch.float16, DType.BF16: torch.bfloat16,
                   DType.FP8_E4M3: torch.float8_e4m3fn}[dtype]
    device = torch.device("cuda", device_id)
    if 0 in shape or not address:
        return torch.empty(shape, dtype=torch_dtype, device=device)
    itemsize = _ITEMSIZE[dtype]
    # stream None: no synchronisation on consumption. The library's rule holds:
    # the memory is current for work ordered after the last append/compress.
    interface = {"version": 3, "shape": tuple(shape), "typestr": _CUDA_VIEW_TYPESTR[dtype],
                 "data": (address, False), "strides": tuple(s * itemsize for s in strides),
                 "stream": None}
    tensor = torch.as_tensor(_Interface(owner, "__cuda_array_interface__", interface), device=device)
    return tensor.view(torch_dtype) if dtype in (DType.BF16, DType.FP8_E4M3) else tensor


def scale_view(owner, address: int, shape, strides, device: Device, device_id: int):
    """FP8 scales (float32, value = fp8 * scale) over cache memory, or None."""
    if not address:
        return None
    if device == Device.CPU:
        return host_view(owner, address, shape, strides, DType.F32)
    return cuda_view(owner, address, shape, strides, DType.F32, device_id)


def int_view(owner, address: int, shape, strides, device: Device, device_id: int):
    """Positions / lengths (int32) as numpy (CPU) or torch (CUDA), no copy."""
    if device == Device.CPU:
        if 0 in shape or not address:
            return np.empty(shape, dtype=np.int32)
        interface = {"version": 3, "shape": tuple(shape), "typestr": "<i4",
                     "data": (address, True), "strides": tuple(s * 4 for s in strides)}
        return np.asarray(_Interface(owner, "__array_interface__", interface))
    import torch
    if 0 in shape or not address:
        return torch.empty(shape, dtype=torch.int32, device=torch.device("cuda", device_id))
    # torch has no read-only tensors (it rejects the flag): the positions of a
    # CUDA view are writable in Python, and writing them is the caller's bug.
    interface = {"version": 3, "shape": tuple(shape), "typestr": "<i4", "data": (address, False),
                 "strides": tuple(s * 4 for s in strides), "stream": None}
    return torch.as_tensor(_Interface(owner, "__cuda_array_interface__", interface),
                           device=torch.device("cuda", device_id))
