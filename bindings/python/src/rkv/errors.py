"""Exceptions: one class per librkv status, each carrying the status and the
library's message.

The raw module (rkv.capi) raises these itself: its status typemap calls
:func:`from_status` with the thread-local message it read right after the call.
Each class also derives from the built-in exception a Python caller would
reach for (``ValueError`` for bad arguments, ``IndexError`` for indices out of
range, ...), so ``except ValueError`` works as expected.
"""
from __future__ import annotations

from .enums import Status

__all__ = [
    "RkvError", "InvalidArgumentError", "OutOfRangeError", "UnsupportedError",
    "ShapeMismatchError", "StructSizeError", "CapacityError", "MissingQueriesError",
    "BadStateError", "SizeOverflowError", "OutOfMemoryError", "DeviceError",
    "FaultedError", "InternalError", "from_status",
]


class RkvError(Exception):
    """A librkv call failed. ``status`` is the :class:`Status`, ``message`` the
    library's explanation (what to fix)."""

    status: Status | int = -1

    def __init__(self, message: str, status: Status | int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        name = f"RKV_{self.status.name}" if isinstance(self.status, Status) else f"status {self.status}"
        return f"{name}: {self.message}"


class InvalidArgumentError(RkvError, ValueError):
    status = Status.ERR_INVALID_ARGUMENT


class OutOfRangeError(RkvError, IndexError):
    status = Status.ERR_OUT_OF_RANGE


class UnsupportedError(RkvError, NotImplementedError):
    status = Status.ERR_UNSUPPORTED


class ShapeMismatchError(RkvError, ValueError):
    status = Status.ERR_SHAPE_MISMATCH


class StructSizeError(RkvError):
    status = Status.ERR_STRUCT_SIZE


class CapacityError(RkvError):
    status = Status.ERR_CAPACITY


class MissingQueriesError(RkvError):
    status = Status.ERR_MISSING_QUERIES


class BadStateError(RkvError):
    status = Status.ERR_BAD_STATE


class SizeOverflowError(RkvError, OverflowError):
    status = Status.ERR_OVERFLOW


class OutOfMemoryError(RkvError, MemoryError):
    status = Status.ERR_OUT_OF_MEMORY


class DeviceError(RkvError):
    status = Status.ERR_DEVICE


class FaultedError(RkvError):
    """An earlier device fault left the cache unusable: close it and make a new one."""
    status = Status.ERR_FAULTED


class InternalError(RkvError):
    """A bug in librkv: please report the message."""
    status = Status.ERR_INTERNAL


_BY_STATUS = {cls.status: cls for cls in (
    InvalidArgumentError, OutOfRangeError, UnsupportedError, ShapeMismatchError,
    StructSizeError, CapacityError, MissingQueriesError, BadStateError,
    SizeOverflowError, OutOfMemoryError, DeviceError, FaultedError, InternalError)}


def from_status(status: int, message: str) -> RkvError:
    """The exception for a failed status (an unknown value gives a plain RkvError)."""
    try:
        status = Status(status)
    except ValueError:
        return RkvError(message, status)
    return _BY_STATUS.get(status, RkvError)(message, status)
