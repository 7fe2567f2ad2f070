"""Every status maps to its exception, with the library's message; each status
the library can return on a CPU build is also provoked for real."""
import numpy as np
import pytest

import rkv
from rkv import capi

SHAPE = dict(max_seqs=2, num_layers=1, num_kv_heads=2, num_q_heads=2, head_dim=8)

EXPECTED = {
    rkv.Status.ERR_INVALID_ARGUMENT: (rkv.InvalidArgumentError, ValueError),
    rkv.Status.ERR_OUT_OF_RANGE: (rkv.OutOfRangeError, IndexError),
    rkv.Status.ERR_UNSUPPORTED: (rkv.UnsupportedError, NotImplementedError),
    rkv.Status.ERR_SHAPE_MISMATCH: (rkv.ShapeMismatchError, ValueError),
    rkv.Status.ERR_STRUCT_SIZE: (rkv.StructSizeError, rkv.RkvError),
    rkv.Status.ERR_CAPACITY: (rkv.CapacityError, rkv.RkvError),
    rkv.Status.ERR_MISSING_QUERIES: (rkv.MissingQueriesError, rkv.RkvError),
    rkv.Status.ERR_BAD_STATE: (rkv.BadStateError, rkv.RkvError),
    rkv.Status.ERR_OVERFLOW: (rkv.SizeOverflowError, OverflowError),
    rkv.Status.ERR_OUT_OF_MEMORY: (rkv.OutOfMemoryError, MemoryError),
    rkv.Status.ERR_DEVICE: (rkv.DeviceError, rkv.RkvError),
    rkv.Status.ERR_FAULTED: (rkv.FaultedError, rkv.RkvError),
    rkv.Status.ERR_INTERNAL: (rkv.InternalError, rkv.RkvError),
}


def test_every_status_has_a_mapping():
    assert set(EXPECTED) == set(rkv.Status) - {rkv.Status.OK}
    for status, (cls, builtin) in EXPECTED.items():
        exc = rkv.errors.from_status(int(status), "what went wrong")
        assert type(exc) is cls and isinstance(exc, builtin) and isinstance(exc, rkv.RkvError)
        assert exc.status == status and exc.message == "what went wrong"
        assert str(exc) == f"{status.c_name}: what went wrong"
    unknown = rkv.errors.from_status(77, "new status")
    assert type(unknown) is rkv.RkvError and unknown.status == 77


def test_status_names_come_from_the_library():
    for status in rkv.Status:
        assert status.c_name == "RKV_" + status.name
    assert capi.rkv_status_name(12345) == "RKV_UNKNOWN_STATUS"


def cache(**options):
    return rkv.Cache(**{**SHAPE, "budget": 8, "buffer": 4, "window": 2, **options})


def kv(tokens, heads=2):
    return np.ones((1, heads, tokens, 8), np.float32)


def raised(excinfo, cls):
    """The exception is the status's own class and carries the library's message."""
    assert type(excinfo.value) is cls
    assert excinfo.value.message and excinfo.value.message != capi.rkv_status_name(cls.status)
    return excinfo.value.message


def test_invalid_argument():
    with pytest.raises(rkv.InvalidArgumentError) as e:
        cache(budget=4, window=4)  # window must be below the budget
    assert "window" in raised(e, rkv.InvalidArgumentError)


def test_out_of_range():
    with cache() as c:
        with pytest.raises(rkv.OutOfRangeError) as e:
            c.view(5, 0)
        raised(e, rkv.OutOfRangeError)
    with pytest.raises(rkv.OutOfRangeError):
        cache(kernel=4)  # even widths only: the setter checks bounds


def test_unsupported():
    with pytest.raises(rkv.UnsupportedError) as e:
        capi.rkv_params_bounds(4242)
    raised(e, rkv.UnsupportedError)


def test_shape_mismatch():
    with cache() as c:
        with pytest.raises(rkv.ShapeMismatchError) as e:
            c.append(0, [0], kv(3, heads=3), kv(3, heads=3))
        raised(e, rkv.ShapeMismatchError)
        assert c.length(0, 0) == (0, 0)  # the cache is unchanged


def test_struct_size():
    with pytest.raises(rkv.StructSizeError) as e:
        capi.rkv_params_default(capi.rkv_cache_params(), 3)
    raised(e, rkv.StructSizeError)


def test_capacity():
    with cache(method="full", max_len=4) as c:
        with pytest.raises(rkv.CapacityError) as e:
            c.append(0, [0], kv(5), kv(5))
        raised(e, rkv.CapacityError)


def test_missing_queries():
    with cache(auto_compress=0) as c:
        c.append(0, [0], kv(12), kv(12))  # no queries
        with pytest.raises(rkv.MissingQueriesError) as e:
            c.compress(0, 0)
        raised(e, rkv.MissingQueriesError)


def test_bad_state():
    with cache() as c:
        with pytest.raises(rkv.BadStateError) as e:
            c.set("budget", 16)  # sizes memory: fixed after create
        raised(e, rkv.BadStateError)


def test_overflow():
    with pytest.raises(rkv.SizeOverflowError) as e:
        rkv.cache_size(max_seqs=2**20, num_layers=1024, num_kv_heads=1024, num_q_heads=1024,
                       head_dim=1024, method="full", max_len=2**25)
    raised(e, rkv.SizeOverflowError)


def test_out_of_memory():
    # K alone would be 2^49 bytes, more than a 47-bit address space: the first
    # allocation fails at once on any machine, nothing is touched.
    with pytest.raises(rkv.OutOfMemoryError) as e:
        rkv.Cache(max_seqs=1, num_layers=8, num_kv_heads=1024, head_dim=1024,
                  budget=2**24, buffer=16)
    raised(e, rkv.OutOfMemoryError)


def test_binding_side_errors_are_typed():
    with cache() as c:
        with pytest.raises(rkv.InvalidArgumentError, match="empty"):
            c.append(0, [0], kv(0), kv(0))
        with pytest.raises(rkv.InvalidArgumentError, match="contiguous"):
            c.append(0, [0], kv(3)[..., ::2], kv(3)[..., ::2])
        with pytest.raises(rkv.InvalidArgumentError, match="read-only"):
            c.attend(0, [0], kv(1)[:, :, 0], out=np.broadcast_to(np.zeros(8, np.float32), (1, 2, 8)))
        with pytest.raises(rkv.InvalidArgumentError, match="Method"):
            cache(method="nope")
        with pytest.raises(TypeError):
            cache(budgett=3)
