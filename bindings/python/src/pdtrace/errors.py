"""Exceptions raised by the pdtrace binding.

Every libpdtrace status code other than PDT_OK maps to exactly one class
here, and this module is the only place where that mapping lives. The
message is the library's per-thread last error, read on the same thread
right after the call that failed.
"""
from __future__ import annotations

from typing import Dict, Type

from ._pdtrace_cffi import ffi, lib

__all__ = [
    "PdtraceError",
    "InvalidArgumentError",
    "OutOfMemoryError",
    "StateError",
    "RangeError",
    "ParseError",
    "TimedOutError",
    "LimitError",
    "BufferSizeError",
    "FileIOError",
    "ClosedError",
    "NotSupportedError",
    "InternalError",
    "error_for_status",
]


class PdtraceError(Exception):
    """Base class. ``status`` is the pdt_status value, ``message`` the
    library's detailed message."""

    status: int = -1
    #: Set when the call still took effect in part: the request that
    #: began (Tracer.request), the headers that were written
    #: (Request.send_prefill / send_decode), the breakdown of a request
    #: that was ended (Request.finish, Request.end with RangeError).
    request = None
    headers = None
    breakdown = None

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidArgumentError(PdtraceError, ValueError):
    """PDT_EINVAL: an argument is invalid (a freed or closed handle, a bad
    enum value, an empty string where one is required)."""


class OutOfMemoryError(PdtraceError, MemoryError):
    """PDT_ENOMEM: an allocation failed; nothing was changed."""


class StateError(PdtraceError, RuntimeError):
    """PDT_ESTATE: call out of order (mark after end, end twice...)."""


class RangeError(PdtraceError, ValueError):
    """PDT_ERANGE: a timestamp or number is out of range. When the call
    still took effect (an end time clamped to the latest mark), the result
    is attached as ``breakdown``."""


class ParseError(PdtraceError, ValueError):
    """PDT_EPARSE: malformed text (traceparent, k=v list, number)."""


class TimedOutError(PdtraceError, TimeoutError):
    """PDT_ETIMEOUT: flush or close did not finish in time. ``pending`` (for
    flush) or ``dropped`` (for close) says how many spans it concerns."""

    pending = None
    dropped = None


class LimitError(PdtraceError):
    """PDT_ELIMIT: a configured limit dropped data (attribute count, events
    per span)."""


class BufferSizeError(PdtraceError):
    """PDT_EBUFSIZE: a buffer was too small."""


class FileIOError(PdtraceError, OSError):
    """PDT_EIO: file or directory I/O failed (console file, spool)."""


class ClosedError(PdtraceError, RuntimeError):
    """PDT_ECLOSED: the tracer is closed or closing."""


class NotSupportedError(PdtraceError, NotImplementedError):
    """PDT_ENOTSUP: not supported by this build or configuration."""


class InternalError(PdtraceError):
    """PDT_EINTERNAL: a bug in libpdtrace."""


_BY_STATUS: Dict[int, Type[PdtraceError]] = {
    lib.PDT_EINVAL: InvalidArgumentError,
    lib.PDT_ENOMEM: OutOfMemoryError,
    lib.PDT_ESTATE: StateError,
    lib.PDT_ERANGE: RangeError,
    lib.PDT_EPARSE: ParseError,
    lib.PDT_ETIMEOUT: TimedOutError,
    lib.PDT_ELIMIT: LimitError,
    lib.PDT_EBUFSIZE: BufferSizeError,
    lib.PDT_EIO: FileIOError,
    lib.PDT_ECLOSED: ClosedError,
    lib.PDT_ENOTSUP: NotSupportedError,
    lib.PDT_EINTERNAL: InternalError,
}

_last_error = lib.pdt_last_error
_last_error_code = lib.pdt_last_error_code
_status_str = lib.pdt_status_str
_string = ffi.string


def error_for_status(status: int) -> PdtraceError:
    """Builds the exception for a status a libpdtrace call just returned.

    Must be called on the thread that made the failing call, before any
    other libpdtrace call there: the message is that thread's last error.
    """
    message = _string(_last_error()).decode("utf-8", "replace")
    if _last_error_code() != status or not message:
        message = _string(_status_str(status)).decode("utf-8", "replace")
    return _BY_STATUS.get(status, PdtraceError)(status, message)
