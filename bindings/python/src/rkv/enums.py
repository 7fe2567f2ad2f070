"""The C enumerations as Python enums. Values come from the raw module (so from
the header SWIG read), never retyped here."""
from __future__ import annotations

import enum

from . import capi as _c

__all__ = ["Status", "DType", "Device", "Method", "Mode", "Pooling", "Guard", "Param", "ALL"]

#: "every sequence" / "every layer" where a call accepts it (RKV_ALL)
ALL = _c.RKV_ALL


class Status(enum.IntEnum):
    OK = _c.RKV_OK
    ERR_INVALID_ARGUMENT = _c.RKV_ERR_INVALID_ARGUMENT
    ERR_OUT_OF_RANGE = _c.RKV_ERR_OUT_OF_RANGE
    ERR_UNSUPPORTED = _c.RKV_ERR_UNSUPPORTED
    ERR_SHAPE_MISMATCH = _c.RKV_ERR_SHAPE_MISMATCH
    ERR_STRUCT_SIZE = _c.RKV_ERR_STRUCT_SIZE
    ERR_CAPACITY = _c.RKV_ERR_CAPACITY
    ERR_MISSING_QUERIES = _c.RKV_ERR_MISSING_QUERIES
    ERR_BAD_STATE = _c.RKV_ERR_BAD_STATE
    ERR_OVERFLOW = _c.RKV_ERR_OVERFLOW
    ERR_OUT_OF_MEMORY = _c.RKV_ERR_OUT_OF_MEMORY
    ERR_DEVICE = _c.RKV_ERR_DEVICE
    ERR_FAULTED = _c.RKV_ERR_FAULTED
    ERR_INTERNAL = _c.RKV_ERR_INTERNAL

    @property
    def c_name(self) -> str:
        """The library's static name, e.g. "RKV_ERR_CAPACITY"."""
        return _c.rkv_status_name(self)


class DType(enum.IntEnum):
    F32 = _c.RKV_DTYPE_F32
    F16 = _c.RKV_DTYPE_F16
    BF16 = _c.RKV_DTYPE_BF16
    FP8_E4M3 = _c.RKV_DTYPE_FP8_E4M3  # storage only: views carry k_scale/v_scale


class Device(enum.IntEnum):
    CPU = _c.RKV_DEVICE_CPU
    CUDA = _c.RKV_DEVICE_CUDA


class Method(enum.IntEnum):
    RKV = _c.RKV_METHOD_RKV
    SNAPKV = _c.RKV_METHOD_SNAPKV
    H2O = _c.RKV_METHOD_H2O
    STREAMINGLLM = _c.RKV_METHOD_STREAMINGLLM
    KEYDIFF = _c.RKV_METHOD_KEYDIFF
    RANDOM = _c.RKV_METHOD_RANDOM
    FULL = _c.RKV_METHOD_FULL


class Mode(enum.IntEnum):
    POSITION = _c.RKV_MODE_POSITION
    REFERENCE = _c.RKV_MODE_REFERENCE


class Pooling(enum.IntEnum):
    MAX = _c.RKV_POOLING_MAX
    MEAN = _c.RKV_POOLING_MEAN


class Guard(enum.IntFlag):
    NONE = 0
    SINK = _c.RKV_GUARD_SINK
    PROMPT = _c.RKV_GUARD_PROMPT


class Param(enum.IntEnum):
    """Keys of the parameter setter; Cache(...) takes them as lower-case keywords."""
    MAX_SEQS = _c.RKV_PARAM_MAX_SEQS
    NUM_LAYERS = _c.RKV_PARAM_NUM_LAYERS
    NUM_KV_HEADS = _c.RKV_PARAM_NUM_KV_HEADS
    NUM_Q_HEADS = _c.RKV_PARAM_NUM_Q_HEADS
    HEAD_DIM = _c.RKV_PARAM_HEAD_DIM
    DTYPE = _c.RKV_PARAM_DTYPE
    DEVICE_TYPE = _c.RKV_PARAM_DEVICE_TYPE
    DEVICE_ID = _c.RKV_PARAM_DEVICE_ID
    METHOD = _c.RKV_PARAM_METHOD
    MODE = _c.RKV_PARAM_MODE
    BUDGET = _c.RKV_PARAM_BUDGET
    BUFFER = _c.RKV_PARAM_BUFFER
    WINDOW = _c.RKV_PARAM_WINDOW
    KERNEL = _c.RKV_PARAM_KERNEL
    LAMBDA = _c.RKV_PARAM_LAMBDA
    THRESHOLD = _c.RKV_PARAM_THRESHOLD
    POOLING = _c.RKV_PARAM_POOLING
    SINK = _c.RKV_PARAM_SINK
    GUARDS = _c.RKV_PARAM_GUARDS
    MAX_PROMPT_LEN = _c.RKV_PARAM_MAX_PROMPT_LEN
    MAX_LEN = _c.RKV_PARAM_MAX_LEN
    SEED = _c.RKV_PARAM_SEED
    AUTO_COMPRESS = _c.RKV_PARAM_AUTO_COMPRESS
    MAX_ROLLBACK = _c.RKV_PARAM_MAX_ROLLBACK

    @property
    def bounds(self) -> tuple[float, float]:
        """Inclusive (lower, upper) bounds of this parameter on its own."""
        return tuple(_c.rkv_params_bounds(self))
