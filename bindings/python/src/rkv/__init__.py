"""librkv for Python: a KV-cache that keeps a fixed budget per attention head
by evicting tokens with R-KV (or a baseline).

    import numpy as np, rkv
    with rkv.Cache(max_seqs=2, num_layers=1, num_kv_heads=2, head_dim=64,
                   budget=32, buffer=8, window=4) as cache:
        k = np.random.randn(1, 2, 100, 64).astype(np.float32)   # [seq, head, token, dim]
        cache.append(0, [0], k, k, q=k)
        view = cache.view(0, 0)          # view.k: [heads, held, dim], no copy
        cache.copy(0, 1)                 # fork sequence 0 into slot 1
        cache.truncate(1, 2)             # roll back its last 2 tokens (if not compressed since)

``rkv.capi`` is the raw SWIG module (the C API one to one, statuses raised as
the exceptions of ``rkv.errors``); :class:`Batch` holds sequence ids in the
cache's memory for graph-captured decode steps; ``rkv.experimental`` has the
functions that may change before 1.0; ``rkv.hf`` plugs a Cache into Hugging
Face transformers' ``generate``.
"""
try:
    # librkv's BLAS, when pip built it against the scipy-openblas32 wheel: loaded
    # first, so librkv finds it wherever pip put that package (a --user install
    # beside a system one), not only through its RUNPATH.
    import scipy_openblas32  # noqa: F401
except ImportError:
    pass
from . import capi
from .enums import ALL, Device, DType, Guard, Method, Mode, Param, Pooling, Status
from .errors import (BadStateError, CapacityError, DeviceError, FaultedError, InternalError,
                     InvalidArgumentError, MissingQueriesError, OutOfMemoryError, OutOfRangeError,
                     RkvError, ShapeMismatchError, SizeOverflowError, StructSizeError,
                     UnsupportedError)
from .params import cache_size
from .views import LayerView, SeqView, Stats
from .cache import Cache
from .batch import Batch
from . import experimental

__version__ = capi.rkv_version_string()

if capi.rkv_version_number() // 10000 != capi.RKV_VERSION_MAJOR:
    raise ImportError(f"librkv {capi.rkv_version_string()} loaded, but this module was built "
                      f"against major version {capi.RKV_VERSION_MAJOR}")

__all__ = [
    "Cache", "Batch", "SeqView", "LayerView", "Stats", "cache_size", "capi", "experimental", "ALL",
    "Device", "DType", "Guard", "Method", "Mode", "Param", "Pooling", "Status",
    "RkvError", "InvalidArgumentError", "OutOfRangeError", "UnsupportedError",
    "ShapeMismatchError", "StructSizeError", "CapacityError", "MissingQueriesError",
    "BadStateError", "SizeOverflowError", "OutOfMemoryError", "DeviceError", "FaultedError",
    "InternalError",
]
