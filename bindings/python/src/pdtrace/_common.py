"""What the binding's modules share: the C boundary for strings, the
enums and plain results of the C API, module functions, typed attribute
packing and the per-thread scratch structs.

Rules followed by every module of the binding (see STYLE.md, "bindings
hold no logic"):
- every C call's status goes through errors.error_for_status(), which
  reads the thread's last error right after the failing call;
- every C object is owned by one Python object, freed by its context
  manager, by free()/close(), or when it is garbage-collected (ffi.gc,
  or __del__ for requests, which is cheaper to set up per request);
- every object handed to C (strings, buffers, the log callback's handle)
  is held by Python for as long as C may use it;
- a str holding a NUL is refused before it reaches C, where it would be
  cut short; what the binding returns is read back from the library;
- nothing is computed in Python: marks, formulas, sampling, propagation
  and export are the library's. Where several calls are usually made in a
  row, one foreign call makes them (the pdtpy_* sequences in
  build_ffi.py), since the price of a call is mostly the crossing.
"""
from __future__ import annotations

import enum
import itertools
import struct
import threading
from dataclasses import dataclass, fields
from typing import (TYPE_CHECKING, Any, Callable, Dict, Mapping, NamedTuple,
                    Optional, Union)

from ._pdtrace_cffi import ffi, lib
from .errors import InvalidArgumentError, error_for_status

if TYPE_CHECKING:
    from .tracer import Tracer

AttributeValue = Union[str, bool, int, float]
LogCallback = Callable[[int, str], None]

_NULL = ffi.NULL
_new = ffi.new
_string = ffi.string
_gc = ffi.gc
_release = ffi.release
_NULL_REQUEST = ffi.cast("pdt_request *", 0)
_NULL_SPAN = ffi.cast("pdt_span *", 0)
_NULL_TRACER = ffi.cast("pdt_tracer *", 0)


def _nul_error(what: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        lib.PDT_EINVAL, "%s contains a NUL character: C strings end at the "
        "first NUL, so the library would see only what comes before it"
        % what)


def _c(value: str, what: str) -> bytes:
    """A str for a const char * parameter. One holding a NUL is refused
    (InvalidArgumentError): C would silently cut it there. Lone surrogates
    pass through; the library repairs invalid UTF-8."""
    if "\0" in value:
        raise _nul_error(what)
    return value.encode("utf-8", "surrogatepass")


def _b(value: Optional[str], what: str) -> Any:
    """_c(), with None giving NULL."""
    if value is None:
        return _NULL
    if "\0" in value:
        raise _nul_error(what)
    return value.encode("utf-8", "surrogatepass")


def _s(ptr: Any) -> Optional[str]:
    if ptr == _NULL:
        return None
    return _string(ptr).decode("utf-8", "replace")


# ---- enums ---------------------------------------------------------------


class Leg(enum.IntEnum):
    """The spans of a P/D request (pdt_leg)."""
    REQUEST = 0
    PREFILL = 1
    DECODE = 2


class Mark(enum.IntEnum):
    """Stage marks (pdt_mark, docs/spans.md)."""
    PREFILL_SENT = 1
    PREFILL_DONE = 2
    DECODE_SENT = 3
    FIRST_TOKEN = 4
    LAST_TOKEN = 5


class Mode(enum.IntEnum):
    """How prefill and decode relate (pdt_pd_mode)."""
    SEQUENTIAL = 0
    CONCURRENT = 1
    DECODE_ONLY = 2


class SpanKind(enum.IntEnum):
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(enum.IntEnum):
    UNSET = 0
    OK = 1
    ERROR = 2


class Exporter(enum.IntEnum):
    DEFAULT = 0
    OTLP = 1
    CONSOLE = 2
    NONE = 3


class Compression(enum.IntEnum):
    DEFAULT = 0
    NONE = 1
    GZIP = 2
    ZSTD = 3


class Protocol(enum.IntEnum):
    """pdt_protocol; as a string: "http/protobuf", "grpc", "http/json"."""
    DEFAULT = 0
    HTTP_PROTOBUF = 1
    GRPC = 2
    HTTP_JSON = 3


class Sampler(enum.IntEnum):
    DEFAULT = 0
    ALWAYS_ON = 1
    ALWAYS_OFF = 2
    TRACEIDRATIO = 3
    PARENTBASED_ALWAYS_ON = 4
    PARENTBASED_ALWAYS_OFF = 5
    PARENTBASED_TRACEIDRATIO = 6


class LogLevel(enum.IntEnum):
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4


# ---- plain results ---------------------------------------------------------


class Breakdown(NamedTuple):
    """pdt_breakdown: milliseconds; None where the library left the field
    out (its marks are missing), never zero-filled."""
    queue_ms: Optional[float]
    prefill_ms: Optional[float]
    kv_transfer_overhead_ms: Optional[float]
    decode_ttft_ms: Optional[float]
    true_ttft_ms: Optional[float]
    decode_duration_ms: Optional[float]
    total_ms: Optional[float]
    tpot_ms: Optional[float]
    output_tokens: Optional[int]
    mode: Mode
    error: bool
    sampled: bool


@dataclass(frozen=True)
class Stats:
    """pdt_stats: the tracer's counters since it was opened."""
    spans_started: int
    spans_ended: int
    spans_not_sampled: int
    spans_exported: int
    spans_rejected: int
    dropped_queue_full: int
    dropped_export_failed: int
    dropped_shutdown: int
    dropped_disabled: int
    export_requests: int
    export_retries: int
    export_failures: int
    bytes_sent: int
    queue_depth: int
    attributes_dropped: int
    values_truncated: int
    strings_sanitized: int
    requests_completed: int
    spans_spooled: int
    spans_replayed: int
    spool_dropped: int
    spool_corrupt: int


_STATS_FIELDS = tuple(f.name for f in fields(Stats))
_BD_SIZE = ffi.sizeof("pdt_breakdown")
_PROP_SIZE = ffi.sizeof("pdt_propagation")
_STATS_SIZE = ffi.sizeof("pdt_stats")

_BD_QUEUE = lib.PDT_BD_QUEUE
_BD_PREFILL = lib.PDT_BD_PREFILL
_BD_KV = lib.PDT_BD_KV_TRANSFER
_BD_DTTFT = lib.PDT_BD_DECODE_TTFT
_BD_TTFT = lib.PDT_BD_TRUE_TTFT
_BD_DDUR = lib.PDT_BD_DECODE_DURATION
_BD_TOTAL = lib.PDT_BD_TOTAL
_BD_TPOT = lib.PDT_BD_TPOT


def _breakdown_layout() -> "struct.Struct":
    """A struct.Struct reading a pdt_breakdown in one call, built from the
    offsets the C compiler gave cffi (and checked against them)."""
    names = ("present", "queue_ms", "prefill_ms", "kv_transfer_overhead_ms",
             "decode_ttft_ms", "true_ttft_ms", "decode_duration_ms",
             "total_ms", "tpot_ms", "output_tokens", "mode", "error",
             "sampled")
    codes = "I" + "d" * 8 + "q" + "iii"
    fmt, pos = "=", 0
    for name, code in zip(names, codes):
        off = ffi.offsetof("pdt_breakdown", name)
        fmt += "%dx%s" % (off - pos, code) if off > pos else code
        pos = off + struct.calcsize("=" + code)
    layout = struct.Struct(fmt)
    assert layout.size <= _BD_SIZE
    return layout


_BD_UNPACK = _breakdown_layout().unpack_from
_unpack = ffi.unpack
_tracer_metrics = lib.pdtpy_tracer_metrics
_EBUFSIZE = lib.PDT_EBUFSIZE
_METRICS_START = 32768
#: Content-Type of the text Tracer.metrics() returns.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MODES = tuple(Mode)
_buffer = ffi.buffer


_tuple_new = tuple.__new__
_object_new = object.__new__


def _breakdown(bd: Any) -> Breakdown:
    (p, q, pf, kv, dt, tt, dd, to, tp, ot, mode, err,
     sampled) = _BD_UNPACK(_buffer(bd))
    return _tuple_new(Breakdown, (
        q if p & _BD_QUEUE else None,
        pf if p & _BD_PREFILL else None,
        kv if p & _BD_KV else None,
        dt if p & _BD_DTTFT else None,
        tt if p & _BD_TTFT else None,
        dd if p & _BD_DDUR else None,
        to if p & _BD_TOTAL else None,
        tp if p & _BD_TPOT else None,
        ot if ot >= 0 else None,
        _MODES[mode] if 0 <= mode < len(_MODES) else mode,
        err != 0,
        sampled != 0,
    ))


def _headers(prop: Any) -> Dict[str, str]:
    h = {"traceparent": _string(prop.traceparent).decode("ascii")}
    if prop.tracestate != _NULL:
        h["tracestate"] = _string(prop.tracestate).decode("utf-8", "replace")
    if prop.request_id != _NULL:
        h["x-request-id"] = _string(prop.request_id).decode("utf-8",
                                                            "replace")
    return h


def _ids(span: Any) -> "tuple[str, str]":
    tbuf = _new("char[33]")
    sbuf = _new("char[17]")
    rc = lib.pdt_span_ids(span, tbuf, sbuf)
    if rc:
        raise error_for_status(rc)
    return _string(tbuf).decode("ascii"), _string(sbuf).decode("ascii")


# ---- module functions ------------------------------------------------------


def version() -> str:
    """The runtime libpdtrace version, e.g. "0.1.0"."""
    return _string(lib.pdt_version()).decode("ascii")


def version_number() -> int:
    """PDT_VERSION_NUMBER of the runtime library (0x00MMmmpp)."""
    return int(lib.pdt_version_number())


def now_ns() -> int:
    """The library clock (CLOCK_MONOTONIC ns, as time.monotonic_ns())."""
    return int(lib.pdt_now_ns())


def status_str(status: int) -> str:
    """pdt_status_str(): a static name for a status code."""
    return _string(lib.pdt_status_str(status)).decode("ascii")


def parse_traceparent(value: str) -> "tuple[bytes, bytes, int]":
    """Parses a W3C traceparent: (trace_id 16 bytes, parent_id 8 bytes,
    flags). Raises ParseError when malformed."""
    tid = _new("uint8_t[16]")
    sid = _new("uint8_t[8]")
    flags = _new("uint8_t *")
    rc = lib.pdt_traceparent_parse(_b(value, "traceparent"), tid, sid, flags)
    if rc:
        raise error_for_status(rc)
    return bytes(ffi.buffer(tid)), bytes(ffi.buffer(sid)), int(flags[0])


def _ms(timeout: Optional[float]) -> int:
    return -1 if timeout is None else int(timeout * 1000)


# ---- attributes ------------------------------------------------------------

def _dispatch(value: AttributeValue, setters: Any) -> Any:
    """Picks the typed setter for a Python value: (str, int, float, bool)."""
    t = type(value)
    if t is str:
        return setters[0], _c(value, "attribute value")
    if t is bool:
        return setters[3], 1 if value else 0
    if t is int:
        return setters[1], value
    if t is float:
        return setters[2], value
    if isinstance(value, bool):
        return setters[3], 1 if value else 0
    if isinstance(value, str):
        return setters[0], _c(value, "attribute value")
    if isinstance(value, int):
        return setters[1], int(value)
    if isinstance(value, float):
        return setters[2], float(value)
    raise TypeError("attribute values are str, bool, int or float, not %s"
                    % t.__name__)


_STRING = lib.PDT_ATTR_STRING
_INT = lib.PDT_ATTR_INT
_DOUBLE = lib.PDT_ATTR_DOUBLE
_BOOL = lib.PDT_ATTR_BOOL
_NUL = b"\0"


def _pack(attributes: Mapping[str, AttributeValue]) -> Any:
    """A mapping as the byte strings of the pdtpy_*_attrs calls: (n, keys,
    types, strs, nums, dbls). Only the Python type of each value is
    looked at here, and whether a key or string holds a NUL (refused, as
    everywhere); the library checks the rest."""
    types = []
    strs = []
    nums = []
    dbls = []
    for v in attributes.values():
        t = type(v)
        if t is str:
            types.append(_STRING)
            strs.append(v)
        elif t is int or t is bool:
            types.append(_INT if t is int else _BOOL)
            nums.append(v)
        elif t is float:
            types.append(_DOUBLE)
            dbls.append(v)
        elif isinstance(v, bool):
            types.append(_BOOL)
            nums.append(bool(v))
        elif isinstance(v, str):
            types.append(_STRING)
            strs.append(v)  # join() takes its characters, not its str()
        elif isinstance(v, int):
            types.append(_INT)
            nums.append(int(v))
        elif isinstance(v, float):
            types.append(_DOUBLE)
            dbls.append(float(v))
        else:
            raise TypeError("attribute values are str, bool, int or float, "
                            "not %s" % t.__name__)
    n = len(types)
    keys = "\0".join(attributes).encode("utf-8", "surrogatepass")
    if keys.count(_NUL) != n - 1 and n:
        # Keys and strings travel NUL-terminated: one holding a NUL would
        # reach the library cut there.
        raise _nul_error("attribute key")
    if strs:
        sb = "\0".join(strs).encode("utf-8", "surrogatepass") + _NUL
        if sb.count(_NUL) != len(strs):
            raise _nul_error("attribute value")
    else:
        sb = b""
    try:
        nb = _pack_q(len(nums))(*nums) if nums else b""
    except struct.error:
        raise OverflowError("integer attribute value out of int64 range") \
            from None
    db = _pack_d(len(dbls))(*dbls) if dbls else b""
    return n, keys, bytes(types), sb, nb, db


def _packer(code: str) -> Callable[[int], Callable[..., bytes]]:
    """struct packers for n native values of one type, cached by n."""
    cache = [struct.Struct("=%d%s" % (i, code)).pack for i in range(33)]

    def get(n: int) -> Callable[..., bytes]:
        return cache[n] if n < 33 else struct.Struct("=%d%s" % (n, code)).pack
    return get


_pack_q = _packer("q")
_pack_d = _packer("d")


_REQ_SETTERS = (lib.pdt_request_set_str, lib.pdt_request_set_int,
                lib.pdt_request_set_double, lib.pdt_request_set_bool)
_SPAN_SETTERS = (lib.pdt_span_set_str, lib.pdt_span_set_int,
                 lib.pdt_span_set_double, lib.pdt_span_set_bool)
_EVENT_SETTERS = (lib.pdt_span_event_set_str, lib.pdt_span_event_set_int,
                  lib.pdt_span_event_set_double, lib.pdt_span_event_set_bool)


# ---- shared by the objects below -----------------------------------------

_child_ids = itertools.count()


def _gc_child(handle: Any, free: Any, tracer: "Tracer") -> Any:
    """Owns a request or span of `tracer`. The destructor holds the tracer's
    handle, so the C tracer is never closed before its requests and spans
    are freed, however the garbage collector orders things; and while it is
    pending, a token in tracer._live says the tracer has open children.
    (set.add and set.discard are atomic, so threads need no lock.)"""
    tok = next(_child_ids)
    live = tracer._live
    live.add(tok)
    return _gc(handle, lambda h, _t=tracer._h, _k=tok:
               (free(h), live.discard(_k)))



class _Scratch(threading.local):
    """Per-thread output structs for the hot calls, read right after the
    call that fills them (an allocation per call costs more than the call).
    """

    def __init__(self) -> None:
        self.out_request = _new("pdt_request **")
        self.end_rc = _new("int *")
        self.bd = _new("pdt_breakdown *")
        self.bd.size = _BD_SIZE
        self.prop_bytes = bytearray(_PROP_SIZE)
        self.prop = ffi.from_buffer("pdt_propagation *", self.prop_bytes)
        self.prop.size = _PROP_SIZE


_scratch = _Scratch()
_TP_START = ffi.offsetof("pdt_propagation", "traceparent")
_TP_END = _TP_START + lib.PDT_TRACEPARENT_SIZE - 1
