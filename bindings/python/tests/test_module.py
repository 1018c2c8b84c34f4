"""Module-level calls and the status-to-exception mapping."""
import time

import pytest

import pdtrace
from pdtrace import errors
from pdtrace._pdtrace_cffi import lib


def test_version():
    assert pdtrace.version() == "0.1.0"
    assert pdtrace.version_number() == 0x000100
    assert isinstance(pdtrace.__version__, str)


def test_now_ns_is_monotonic_clock():
    a = time.monotonic_ns()
    b = pdtrace.now_ns()
    c = time.monotonic_ns()
    assert a <= b <= c


def test_status_str():
    assert pdtrace.status_str(0).startswith("PDT_OK")
    assert pdtrace.status_str(1).startswith("PDT_EINVAL")
    assert pdtrace.status_str(999) == "unknown status"


def test_parse_traceparent():
    tid, sid, flags = pdtrace.parse_traceparent(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert tid.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert sid.hex() == "b7ad6b7169203331"
    assert flags == 1


@pytest.mark.parametrize("bad", [
    "", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
])
def test_parse_traceparent_malformed(bad):
    with pytest.raises(pdtrace.ParseError) as ei:
        pdtrace.parse_traceparent(bad)
    assert ei.value.status == lib.PDT_EPARSE
    assert "traceparent" in str(ei.value)


def test_parse_traceparent_none():
    with pytest.raises(pdtrace.InvalidArgumentError):
        pdtrace.parse_traceparent(None)


EXPECTED = {
    lib.PDT_EINVAL: (pdtrace.InvalidArgumentError, ValueError),
    lib.PDT_ENOMEM: (pdtrace.OutOfMemoryError, MemoryError),
    lib.PDT_ESTATE: (pdtrace.StateError, RuntimeError),
    lib.PDT_ERANGE: (pdtrace.RangeError, ValueError),
    lib.PDT_EPARSE: (pdtrace.ParseError, ValueError),
    lib.PDT_ETIMEOUT: (pdtrace.TimedOutError, TimeoutError),
    lib.PDT_ELIMIT: (pdtrace.LimitError, pdtrace.PdtraceError),
    lib.PDT_EBUFSIZE: (pdtrace.BufferSizeError, pdtrace.PdtraceError),
    lib.PDT_EIO: (pdtrace.FileIOError, OSError),
    lib.PDT_ECLOSED: (pdtrace.ClosedError, RuntimeError),
    lib.PDT_ENOTSUP: (pdtrace.NotSupportedError, NotImplementedError),
    lib.PDT_EINTERNAL: (pdtrace.InternalError, pdtrace.PdtraceError),
}


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_every_status_maps_to_one_class(status):
    lib.pdt_clear_error()
    err = errors.error_for_status(status)
    cls, base = EXPECTED[status]
    assert type(err) is cls
    assert isinstance(err, base)
    assert isinstance(err, pdtrace.PdtraceError)
    assert err.status == status
    # No last error on this thread: the static status name is the message.
    assert err.message == pdtrace.status_str(status)


def test_unknown_status_maps_to_base_class():
    err = errors.error_for_status(4242)
    assert type(err) is pdtrace.PdtraceError


def test_message_is_the_threads_last_error():
    with pytest.raises(pdtrace.ParseError) as ei:
        pdtrace.parse_traceparent("nope")
    assert ei.value.message == "malformed traceparent"
    # A stale message for another status is not reused.
    err = errors.error_for_status(lib.PDT_ENOMEM)
    assert err.message == pdtrace.status_str(lib.PDT_ENOMEM)


def test_oserror_subclass_keeps_message():
    err = pdtrace.FileIOError(lib.PDT_EIO, "console file: no such dir")
    assert err.message == "console file: no such dir"
    assert "console file" in str(err)
