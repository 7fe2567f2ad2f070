"""Cache parameters from Python keywords: ``rkv_cache_params`` filled through
the library's own setter (``rkv_params_set``), so every bound is checked by the
library, and :func:`cache_size` (``rkv_cache_size``)."""
from __future__ import annotations

from typing import Any

from . import capi as _c
from .enums import Device, DType, Guard, Method, Mode, Param, Pooling
from .errors import InvalidArgumentError

__all__ = ["cache_size"]

ENUM_PARAMS = {Param.DTYPE: DType, Param.DEVICE_TYPE: Device, Param.METHOD: Method,
               Param.MODE: Mode, Param.POOLING: Pooling, Param.GUARDS: Guard}
FLOAT_PARAMS = {Param.LAMBDA, Param.THRESHOLD}
_DTYPE_NAMES = {"f32": DType.F32, "float32": DType.F32, "f16": DType.F16, "float16": DType.F16,
                "half": DType.F16, "bf16": DType.BF16, "bfloat16": DType.BF16,
                "fp8": DType.FP8_E4M3, "fp8_e4m3": DType.FP8_E4M3, "float8_e4m3fn": DType.FP8_E4M3}


def enum_value(enum_type, value):
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


def param_key(name) -> Param:
    """A Param from the enum or its lower-case name ("lambda" or "lambda_")."""
    if isinstance(name, Param):
        return name
    try:
        return Param[str(name).upper().rstrip("_")]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown cache parameter {name!r}: one of {', '.join(p.name.lower() for p in Param)}") from None


def device_of(device) -> tuple[Device, int]:
    """"cpu", "cuda", "cuda:1", a torch.device or a Device -> (type, ordinal)."""
    if isinstance(device, Device):
        return device, 0
    text = str(device)
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return (Device.CPU if kind == "cpu" else Device.CUDA), int(index or 0)


def make_params(device, options: dict[str, Any]):
    """An rkv_cache_params from keyword options (lower-case parameter names)."""
    params = _c.rkv_cache_params()  # library defaults, struct_size set
    device_type, device_id = device_of(device)
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
        value = enum_value(ENUM_PARAMS.get(key, int), value)
        _c.rkv_params_set(params, key, float(value))  # bounds checked by the library
    return params


def params_dict(raw) -> dict[str, Any]:
    """An rkv_cache_params as {lower-case name: value}, enums as the Python enums."""
    out = {}
    for key in Param:
        if key == Param.SEED:
            out["seed"] = int(raw.seed)
            continue
        value = _c.rkv_params_get(raw, key)
        if key in ENUM_PARAMS:
            value = ENUM_PARAMS[key](int(value))
        elif key not in FLOAT_PARAMS:
            value = int(value)
        out[key.name.lower()] = value
    return out


def cache_size(*, device="cpu", **options) -> int:
    """Bytes a Cache with these options would allocate (host plus device),
    without allocating. Validates exactly as creating one does."""
    if "lambda_" in options:
        options["lambda"] = options.pop("lambda_")
    return int(_c.rkv_cache_size(make_params(device, options)))
