"""Thin mapping of the libpdtrace C API onto Python objects.

Rules followed here (see STYLE.md, "bindings hold no logic"):
- every C call's status goes through errors.error_for_status(), which
  reads the thread's last error right after the failing call;
- every C object is owned by one Python object, freed by its context
  manager, by free()/close(), or when it is garbage-collected (ffi.gc,
  or __del__ for requests, which is cheaper to set up per request);
- nothing is computed in Python: marks, formulas, sampling, propagation
  and export are the library's. Where several calls are usually made in a
  row, one foreign call makes them (the pdtpy_* sequences in
  build_ffi.py), since the price of a call is mostly the crossing.

Lifetime: requests and spans keep their tracer alive. Tracer.close()
first frees the requests and spans still open on it (the C library
requires that), after which their methods raise InvalidArgumentError.
"""
from __future__ import annotations

import enum
import itertools
import struct
import threading
import weakref
from dataclasses import dataclass, fields
from typing import (Any, Callable, Dict, Mapping, NamedTuple, Optional,
                    Union)

from ._pdtrace_cffi import ffi, lib
from .errors import (InvalidArgumentError, RangeError, TimedOutError,
                     error_for_status)

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


# ---- log callback ----------------------------------------------------------


@ffi.def_extern()
def _pdtrace_log_cb(userdata: Any, level: int, message: Any) -> None:
    fn = ffi.from_handle(userdata)
    fn(level, _string(message).decode("utf-8", "replace"))


# ---- tracer ----------------------------------------------------------------

_STR_OPTIONS = ("service_name", "resource_attributes", "endpoint", "headers",
                "console_path", "ca_file", "client_cert", "client_key",
                "spool_dir")
_INT_OPTIONS = ("timeout_ms", "schedule_delay_ms", "export_timeout_ms",
                "max_queue_size", "max_export_batch_size",
                "attribute_count_limit", "attribute_value_length_limit",
                "spool_max_bytes", "exporter", "compression", "sampler",
                "max_concurrent_exports", "compression_level")
_FLOAT_OPTIONS = ("tail_ttft_threshold_ms",)
# Python bools onto the library's tri-state ints (1 yes, -1 no, 0 default).
_TRISTATE_OPTIONS = ("tail_keep_errors", "disabled")


def _gc_tracer(handle: Any, keep: Any) -> Any:
    """Owns a pdt_tracer. Garbage collection of an unclosed tracer closes it
    without waiting: whatever is still queued is dropped (and counted).
    `keep` (the log callback handle) lives until then."""
    close = lib.pdtpy_tracer_close
    return _gc(handle, lambda h, _k=keep: close(h, 0, _NULL))


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


class Tracer:
    """A libpdtrace tracer (pdt_tracer) and its exporter thread.

    Keyword options map one to one onto pdt_tracer_options fields; an
    option left out (or None) is taken from the OTEL_* environment, else
    the library default. Enum-valued options (exporter, compression,
    sampler) take the enum or its name ("console", "gzip",
    "parentbased_traceidratio"). sampler_ratio also sets
    sampler_ratio_set. tail_keep_errors and disabled take a bool (or None
    for the environment). log is called as log(level, message) from the
    exporter thread.

    Safe to share between threads and asyncio tasks; only flush() and
    close() wait, each for at most its timeout. Use as a context manager
    or call close(); a tracer that is garbage-collected open is closed
    without waiting.
    """

    __slots__ = ("_h", "_live", "_log_handle", "_metrics_cap", "__weakref__")

    def __init__(self, *, service_name: Optional[str] = None,
                 resource_attributes: Optional[str] = None,
                 exporter: Union[Exporter, str, None] = None,
                 endpoint: Optional[str] = None,
                 headers: Optional[str] = None,
                 compression: Union[Compression, str, None] = None,
                 timeout_ms: Optional[int] = None,
                 console_path: Optional[str] = None,
                 ca_file: Optional[str] = None,
                 client_cert: Optional[str] = None,
                 client_key: Optional[str] = None,
                 schedule_delay_ms: Optional[int] = None,
                 export_timeout_ms: Optional[int] = None,
                 max_queue_size: Optional[int] = None,
                 max_export_batch_size: Optional[int] = None,
                 attribute_count_limit: Optional[int] = None,
                 attribute_value_length_limit: Optional[int] = None,
                 sampler: Union[Sampler, str, None] = None,
                 sampler_ratio: Optional[float] = None,
                 tail_ttft_threshold_ms: Optional[float] = None,
                 tail_keep_errors: Optional[bool] = None,
                 disabled: Optional[bool] = None,
                 ignore_environment: bool = False,
                 log: Optional[LogCallback] = None,
                 spool_dir: Optional[str] = None,
                 spool_max_bytes: Optional[int] = None,
                 max_concurrent_exports: Optional[int] = None,
                 compression_level: Optional[int] = None) -> None:
        self._h = _NULL_TRACER
        self._live: "set[int]" = set()
        self._log_handle = None
        self._metrics_cap = _METRICS_START
        given = dict(locals())
        opts = _new("pdt_tracer_options *")
        lib.pdt_tracer_options_init(opts, ffi.sizeof("pdt_tracer_options"))
        keep = []  # strings must outlive pdt_tracer_open (it copies them)
        for name in _STR_OPTIONS:
            v = given[name]
            if v is not None:
                b = _new("char[]", _c(v, name))
                keep.append(b)
                setattr(opts, name, b)
        for name, enum_type in (("exporter", Exporter),
                                ("compression", Compression),
                                ("sampler", Sampler)):
            v = given[name]
            if isinstance(v, str):
                try:
                    given[name] = enum_type[v.upper()]
                except KeyError:
                    raise ValueError("%s: unknown value %r" % (name, v)) \
                        from None
        for name in _INT_OPTIONS:
            v = given[name]
            if v is not None:
                setattr(opts, name, int(v))
        for name in _FLOAT_OPTIONS:
            v = given[name]
            if v is not None:
                setattr(opts, name, float(v))
        for name in _TRISTATE_OPTIONS:
            v = given[name]
            if v is not None:
                setattr(opts, name, 1 if v else -1)
        if sampler_ratio is not None:
            opts.sampler_ratio = float(sampler_ratio)
            opts.sampler_ratio_set = 1
        opts.ignore_environment = 1 if ignore_environment else 0
        if log is not None:
            self._log_handle = ffi.new_handle(log)
            opts.log_fn = lib._pdtrace_log_cb
            opts.log_userdata = self._log_handle
        out = _new("pdt_tracer **")
        rc = lib.pdtpy_tracer_open(out, opts)
        if rc:
            raise error_for_status(rc)
        self._h = _gc_tracer(out[0], self._log_handle)

    # context manager
    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._h == _NULL

    def request(self, traceparent: Optional[str] = None,
                tracestate: Optional[str] = None, arrival_ns: int = 0, *,
                request_id: Optional[str] = None,
                connector: Optional[str] = None,
                model: Optional[str] = None,
                attributes: Optional[Mapping[str, AttributeValue]] = None
                ) -> "Request":
        """Begins a P/D request (pdt_request_begin). arrival_ns is mark A
        (0: now). request_id, connector, model and attributes (on the
        request span), if given, are set in the same foreign call; see
        Request."""
        return _begin_request(_object_new(Request), self, traceparent,
                              tracestate, arrival_ns, request_id, connector,
                              model, attributes)

    def start_span(self, name: str, kind: SpanKind = SpanKind.INTERNAL,
                   parent: Optional["Span"] = None,
                   traceparent: Optional[str] = None,
                   tracestate: Optional[str] = None,
                   start_ns: int = 0) -> "Span":
        """Starts a generic span (pdt_span_start). parent wins over
        traceparent; a malformed traceparent starts a new trace."""
        return Span._start(self, name, kind, parent, traceparent, tracestate,
                           start_ns)

    def flush(self, timeout: Optional[float] = None) -> int:
        """Exports every span ended so far, waiting at most `timeout`
        seconds (None: the export timeout). Returns the number of spans
        still pending (0). Raises TimedOutError (with .pending) when the
        time ran out first; those spans go out later."""
        pending = _new("uint64_t *")
        rc = lib.pdtpy_tracer_flush(self._h, _ms(timeout), pending)
        if rc:
            err = error_for_status(rc)
            if isinstance(err, TimedOutError):
                err.pending = int(pending[0])
            raise err
        return int(pending[0])

    def close(self, timeout: Optional[float] = None) -> int:
        """Flushes, stops the exporter and frees the tracer, in at most
        `timeout` seconds (None: the export timeout). Returns the number of
        spans dropped (0); raises TimedOutError (with .dropped) when some
        were. Idempotent; afterwards the tracer's methods raise
        InvalidArgumentError.

        The C library must not free a tracer while requests or spans of it
        are open. If some still are (not yet freed by their context manager,
        free() or the garbage collector), close() flushes within `timeout`,
        returns the number of spans still pending, and the tracer is freed,
        without waiting, once the last of them is; they stay usable until
        then."""
        if self._h == _NULL:
            return 0
        h, self._h = self._h, _NULL_TRACER
        # The log callback's handle must outlive the C close: the exporter
        # thread logs until pdt_tracer_close() returns (export failures
        # during the final flush). Held here, it is let go only after.
        log_handle, self._log_handle = self._log_handle, None
        if self._live:
            # Deferred: the children's destructors hold `h`; the last one
            # to go runs its GC close, whose closure keeps the log handle
            # alive until then.
            n = _new("uint64_t *")
            rc = lib.pdtpy_tracer_flush(h, _ms(timeout), n)
            if rc and rc != lib.PDT_ETIMEOUT:
                raise error_for_status(rc)
            return int(n[0])
        dropped = _new("uint64_t *")
        _gc(h, None)  # detach the GC close: this is the close
        rc = lib.pdtpy_tracer_close(h, _ms(timeout), dropped)
        del log_handle  # the C tracer is gone: nothing calls back now
        if rc:
            err = error_for_status(rc)
            if isinstance(err, TimedOutError):
                err.dropped = int(dropped[0])
            raise err
        return int(dropped[0])

    def metrics(self) -> str:
        """pdt_tracer_metrics(): the tracer's Prometheus metrics in the
        text exposition format 0.0.4, to serve on /metrics with the
        Content-Type METRICS_CONTENT_TYPE. Safe from any thread while
        requests end on others. A buffer that turns out too small
        (PDT_EBUFSIZE) is retried with the size the library asks for."""
        need = _new("size_t *")
        while True:
            cap = self._metrics_cap
            buf = _new("char[]", cap)
            rc = _tracer_metrics(self._h, buf, cap, need)
            if rc == _EBUFSIZE:
                # Counters move between calls: a little headroom.
                self._metrics_cap = need[0] + need[0] // 16 + 256
                continue
            if rc:
                raise error_for_status(rc)
            return _unpack(buf, need[0]).decode("utf-8", "replace")

    def stats(self) -> Stats:
        """pdt_tracer_stats(): a snapshot of the counters."""
        st = _new("pdt_stats *")
        st.size = _STATS_SIZE
        rc = lib.pdt_tracer_stats(self._h, st)
        if rc:
            raise error_for_status(rc)
        return Stats(*[int(getattr(st, n)) for n in _STATS_FIELDS])


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


# ---- P/D request -----------------------------------------------------------

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

_request_free = lib.pdt_request_free
_span_free = lib.pdt_span_free
_mark = lib.pdt_request_mark
_tokens = lib.pdt_request_tokens
_set_str = lib.pdt_request_set_str
_set_int = lib.pdt_request_set_int
_set_leg = lib.pdt_request_set_leg
_inject = lib.pdt_request_inject
_begin = lib.pdtpy_request_begin
_req_attrs = lib.pdtpy_request_attrs
_span_attrs = lib.pdtpy_span_attrs
_send = lib.pdtpy_request_send
_leg_done = lib.pdtpy_request_leg_done
_finish = lib.pdtpy_request_finish
_set_model = lib.pdt_request_set_model
_end = lib.pdt_request_end
_set_id = lib.pdt_request_set_id
_set_connector = lib.pdt_request_set_connector
_set_usage = lib.pdt_request_set_usage
_set_response = lib.pdt_request_set_response
_ERANGE = lib.PDT_ERANGE
_MARK_PS = Mark.PREFILL_SENT.value
_MARK_PE = Mark.PREFILL_DONE.value
_MARK_DS = Mark.DECODE_SENT.value
_LEG_P = Leg.PREFILL.value
_LEG_D = Leg.DECODE.value
_MARK_F = Mark.FIRST_TOKEN.value
_MARK_L = Mark.LAST_TOKEN.value


def _begin_request(self: "Request", tracer: Tracer,
                   traceparent: Optional[str], tracestate: Optional[str],
                   arrival_ns: int, request_id: Optional[str],
                   connector: Optional[str], model: Optional[str],
                   attributes: Optional[Mapping[str, AttributeValue]]
                   ) -> "Request":
    """Request.__init__, also called by Tracer.request() directly."""
    self._h = _NULL_REQUEST
    self._rid = None  # x-request-id, once read
    self._ts = _NULL  # tracestate header value, once read
    self._spans = None
    out = _scratch.out_request
    if attributes:
        n, keys, types, strs, nums, dbls = _pack(attributes)
    else:
        n, keys, types, strs, nums, dbls = 0, _NULL, _NULL, _NULL, \
            _NULL, _NULL
    rc = _begin(
        out, tracer._h,
        _b(traceparent, "traceparent"),
        _b(tracestate, "tracestate"),
        arrival_ns,
        _b(request_id, "request_id"),
        _b(connector, "connector"),
        _b(model, "model"),
        n, keys, types, strs, nums, dbls)
    h = out[0]
    if not h:
        raise error_for_status(rc)
    # Owned here and freed by free() or, as a safety net, __del__.
    # _th (the tracer's owning handle) keeps the C tracer from being
    # closed before this request is freed; the token in tracer._live
    # tells Tracer.close() that a request is still open.
    self._h = h
    self._th = tracer._h
    live = self._live = tracer._live
    live.add(id(self))
    if tracestate is None:
        self._ts = None  # no inbound tracestate: none is sent on
    if rc:
        err = error_for_status(rc)
        err.request = self
        raise err
    # x-request-id is read back from the library (pdt_request_id via the
    # propagation), never taken from the argument: what is sent is what C
    # holds.
    return self


class Request:
    """A P/D request (pdt_request): the root span and its prefill and
    decode child spans, the stage marks and the breakdown.

    Used by one thread or task at a time. As a context manager it is
    freed on exit; a request freed before end() is recorded by the
    library as ERROR "abandoned". Timestamps are now_ns() nanoseconds,
    0 meaning now.
    """

    __slots__ = ("_h", "_th", "_live", "_rid", "_ts", "_spans",
                 "__weakref__")

    def __init__(self, tracer: Tracer, traceparent: Optional[str] = None,
                 tracestate: Optional[str] = None,
                 arrival_ns: int = 0, *, request_id: Optional[str] = None,
                 connector: Optional[str] = None,
                 model: Optional[str] = None,
                 attributes: Optional[Mapping[str, AttributeValue]] = None
                 ) -> None:
        """Begins the request (pdt_request_begin) and sets request_id,
        connector, model and attributes when given, all in one foreign
        call. If the request began but one of those settings was refused
        (the others are still applied), the error is raised with the open
        request attached as ``.request``: go on with it, or free it."""
        _begin_request(self, tracer, traceparent, tracestate, arrival_ns,
                       request_id, connector, model, attributes)

    def __enter__(self) -> "Request":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()

    def free(self) -> None:
        """pdt_request_free(): releases the request (ending it as
        "abandoned" if end() was not called). Idempotent; afterwards every
        method raises InvalidArgumentError."""
        h = self._h
        if not h:
            return
        self._h = _NULL_REQUEST
        if self._spans:
            for ref in self._spans.values():
                span = ref()
                if span is not None:
                    span._h = _NULL_SPAN
        _request_free(h)
        self._live.discard(id(self))
        self._th = None

    def __del__(self) -> None:
        try:
            h = self._h
        except AttributeError:  # __init__ did not get that far
            return
        if h:
            self.free()

    @property
    def id(self) -> Optional[str]:
        """The request id sent as x-request-id (None once freed)."""
        if self._h == _NULL:
            return None
        rid = self._rid
        if rid is None:
            rid = self._rid = _s(lib.pdt_request_id(self._h))
        return rid

    def set_id(self, request_id: str) -> None:
        rc = _set_id(self._h, _c(request_id, "request_id"))
        if rc:
            raise error_for_status(rc)
        self._rid = None

    def set_mode(self, mode: Mode, reason: Optional[str] = None) -> None:
        rc = lib.pdt_request_set_mode(self._h, mode, _b(reason, "reason"))
        if rc:
            raise error_for_status(rc)

    def set_connector(self, connector: str) -> None:
        rc = _set_connector(self._h, _c(connector, "connector"))
        if rc:
            raise error_for_status(rc)

    def set_model(self, model: str) -> None:
        """pdt_request_set_model(): gen_ai.request.model on the request
        span and the `model` label of its metrics."""
        rc = _set_model(self._h, _c(model, "model"))
        if rc:
            raise error_for_status(rc)

    # stage marks
    def mark(self, mark: Mark, ts_ns: int = 0) -> None:
        rc = _mark(self._h, mark, ts_ns)
        if rc:
            raise error_for_status(rc)

    def prefill_sent(self, ts_ns: int = 0) -> None:
        """Ps: a prefill attempt is sent (repeat after prefill_done() for a
        retry)."""
        rc = _mark(self._h, _MARK_PS, ts_ns)
        if rc:
            raise error_for_status(rc)

    def prefill_done(self, ts_ns: int = 0, *, target: Optional[str] = None,
                     status: Optional[int] = None,
                     error_type: Optional[str] = None) -> None:
        """Pe: the prefill response is fully read. With status (0: no
        response) the prefill leg's outcome is recorded in the same
        foreign call, as set_leg(Leg.PREFILL, target, status,
        error_type) would; both steps are applied even if one fails."""
        if status is None:
            rc = _mark(self._h, _MARK_PE, ts_ns)
        else:
            rc = _leg_done(self._h, _LEG_P, _MARK_PE, ts_ns,
                           _b(target, "target"), status,
                           _b(error_type, "error_type"))
        if rc:
            raise error_for_status(rc)

    def decode_sent(self, ts_ns: int = 0) -> None:
        """Ds: the decode request is sent."""
        rc = _mark(self._h, _MARK_DS, ts_ns)
        if rc:
            raise error_for_status(rc)

    def _sender(leg: int, mark: int) -> Callable[..., Dict[str, str]]:
        # send_prefill and send_decode: one body with the leg and mark
        # bound, and headers() inlined (a Python call costs about as much
        # as the foreign one).
        def send(self: "Request", ts_ns: int = 0) -> Dict[str, str]:
            sc = _scratch
            pb = sc.prop_bytes
            pb[_TP_START] = 0
            rc = _send(self._h, leg, mark, ts_ns, sc.prop)
            if rc:
                err = error_for_status(rc)
                if pb[_TP_START]:
                    err.headers = self._headers(sc)
                raise err
            h = {"traceparent": pb[_TP_START:_TP_END].decode("ascii")}
            ts = self._ts
            if ts is _NULL:
                return self._headers(sc)
            if ts is not None:
                h["tracestate"] = ts
            rid = self._rid
            if rid is None:
                return self._headers(sc)
            h["x-request-id"] = rid
            return h
        return send

    send_prefill = _sender(_LEG_P, _MARK_PS)
    send_prefill.__name__ = "send_prefill"
    send_prefill.__doc__ = """prefill_sent() and headers(Leg.PREFILL) in one
        foreign call: marks Ps and returns the headers to send with the
        prefill. If the mark is refused the error carries the headers as
        ``.headers``."""
    send_decode = _sender(_LEG_D, _MARK_DS)
    send_decode.__name__ = "send_decode"
    send_decode.__doc__ = """decode_sent() and headers(Leg.DECODE) in one
        foreign call; see send_prefill()."""
    del _sender

    def first_token(self, ts_ns: int = 0) -> None:
        """F: the first token is forwarded to the client."""
        rc = _mark(self._h, _MARK_F, ts_ns)
        if rc:
            raise error_for_status(rc)

    def last_token(self, ts_ns: int = 0) -> None:
        """L: the last token is forwarded."""
        rc = _mark(self._h, _MARK_L, ts_ns)
        if rc:
            raise error_for_status(rc)

    def tokens(self, count: int = 1, ts_ns: int = 0) -> None:
        """`count` tokens forwarded (pdt_request_tokens): the first call
        also sets F, every call moves L."""
        rc = _tokens(self._h, ts_ns, count)
        if rc:
            raise error_for_status(rc)

    def set_usage(self, input_tokens: Optional[int] = None,
                  output_tokens: Optional[int] = None,
                  cached_input_tokens: Optional[int] = None) -> None:
        """Token counts from the upstream's usage; None is unknown."""
        rc = _set_usage(
            self._h, -1 if input_tokens is None else input_tokens,
            -1 if output_tokens is None else output_tokens,
            -1 if cached_input_tokens is None else cached_input_tokens)
        if rc:
            raise error_for_status(rc)

    def set_leg(self, leg: Leg, target: Optional[str] = None,
                status: int = 0, error_type: Optional[str] = None) -> None:
        """Outcome of an upstream leg: HTTP status (0: no response) and an
        error type for failures; target is "host:port" or a URL."""
        rc = _set_leg(self._h, leg,
                      _b(target, "target"), status,
                      _b(error_type, "error_type"))
        if rc:
            raise error_for_status(rc)

    def set_response(self, status: int,
                     error_type: Optional[str] = None) -> None:
        """The status sent to the client (and its error type, if any)."""
        rc = _set_response(self._h, status,
                           _b(error_type, "error_type"))
        if rc:
            raise error_for_status(rc)

    # attributes
    def set(self, key: str, value: AttributeValue) -> None:
        """A typed attribute on the request span: str, bool, int or float
        select pdt_request_set_str/_bool/_int/_double."""
        t = type(value)
        if t is str:
            rc = _set_str(self._h, _c(key, "key"),
                          _c(value, "value"))
        elif t is int:
            rc = _set_int(self._h, _c(key, "key"),
                          value)
        else:
            fn, v = _dispatch(value, _REQ_SETTERS)
            rc = fn(self._h, _c(key, "key"), v)
        if rc:
            raise error_for_status(rc)

    def set_attributes(self, attributes: Mapping[str, AttributeValue],
                       leg: Leg = Leg.REQUEST) -> None:
        """Typed attributes (str, bool, int or float values) on the span of
        a leg in one foreign call (pdt_request_set_attrs). Every entry is
        applied even if another is refused; the first failure is raised
        afterwards. A value of another type raises TypeError before any is
        applied."""
        n, keys, types, strs, nums, dbls = _pack(attributes)
        rc = _req_attrs(self._h, leg, n, keys, types, strs, nums, dbls)
        if rc:
            raise error_for_status(rc)

    def set_str(self, key: str, value: str) -> None:
        rc = _set_str(self._h, _c(key, "key"), _c(value, "value"))
        if rc:
            raise error_for_status(rc)

    def set_int(self, key: str, value: int) -> None:
        rc = _set_int(self._h, _b(key, "key"), value)
        if rc:
            raise error_for_status(rc)

    def set_float(self, key: str, value: float) -> None:
        rc = lib.pdt_request_set_double(self._h, _b(key, "key"), value)
        if rc:
            raise error_for_status(rc)

    def set_bool(self, key: str, value: bool) -> None:
        rc = lib.pdt_request_set_bool(self._h, _b(key, "key"),
                                     1 if value else 0)
        if rc:
            raise error_for_status(rc)

    # spans, propagation
    def span(self, leg: Leg) -> Optional["Span"]:
        """The span of a leg (borrowed: valid while this request lives; it
        cannot be ended or freed on its own), or None if that leg has no
        span yet."""
        spans = self._spans
        if spans is not None and leg in spans:
            span = spans[leg]()
            if span is not None:
                return span
        p = lib.pdt_request_span(self._h, leg)
        if p == _NULL:
            return None
        span = Span._borrowed(p, self)
        if spans is None:
            self._spans = spans = {}
        # A weak reference: the span keeps the request alive, not the
        # other way round (no reference cycle).
        spans[int(leg)] = weakref.ref(span)
        return span

    def headers(self, leg: Leg) -> Dict[str, str]:
        """Outbound headers for a leg: traceparent (parented by that leg's
        span), tracestate (when the request has one) and x-request-id."""
        sc = _scratch
        rc = _inject(self._h, leg, sc.prop)
        if rc:
            raise error_for_status(rc)
        return self._headers(sc)

    def _headers(self, sc: "_Scratch") -> Dict[str, str]:
        # The request id and tracestate do not change between calls (the
        # id only through set_id()), so they are decoded once.
        prop = sc.prop
        h = {"traceparent": sc.prop_bytes[_TP_START:_TP_END].decode("ascii")}
        ts = self._ts
        if ts is _NULL:
            p = prop.tracestate
            ts = self._ts = None if p == _NULL else \
                _string(p).decode("utf-8", "replace")
        if ts is not None:
            h["tracestate"] = ts
        rid = self._rid
        if rid is None:
            p = prop.request_id
            if p != _NULL:
                rid = self._rid = _string(p).decode("utf-8", "replace")
        if rid is not None:
            h["x-request-id"] = rid
        return h

    @property
    def trace_id(self) -> str:
        return _ids(lib.pdt_request_span(self._h, 0))[0]

    @property
    def span_id(self) -> str:
        """The id of the request (root) span."""
        return _ids(lib.pdt_request_span(self._h, 0))[1]

    def end(self, end_ns: int = 0) -> Breakdown:
        """Mark E: ends the request, records the breakdown on its spans and
        hands them to the exporter. Returns the breakdown. If the end time
        had to be clamped (RangeError) the request is still ended and the
        error carries .breakdown."""
        bd = _scratch.bd
        rc = _end(self._h, end_ns, bd)
        if rc:
            err = error_for_status(rc)
            if isinstance(err, RangeError):
                err.breakdown = _breakdown(bd)
            raise err
        return _breakdown(bd)

    def finish(self, status: Optional[int] = None,
               error_type: Optional[str] = None, *,
               decode_target: Optional[str] = None,
               decode_status: Optional[int] = None,
               decode_error: Optional[str] = None,
               input_tokens: Optional[int] = None,
               output_tokens: Optional[int] = None,
               cached_input_tokens: Optional[int] = None,
               end_ns: int = 0) -> Breakdown:
        """The end of a request in one foreign call: set_leg(Leg.DECODE,
        decode_target, decode_status, decode_error) when decode_status is
        given, set_usage() when a token count is, set_response(status,
        error_type) when status is, then end(end_ns). Every step is
        applied even if an earlier one fails; the first failure is raised,
        carrying ``.breakdown`` when the request was still ended."""
        sc = _scratch
        bd = sc.bd
        end_rc = sc.end_rc
        rc = _finish(
            self._h, -1 if decode_status is None else _LEG_D,
            _b(decode_target, "decode_target"),
            0 if decode_status is None else decode_status,
            _b(decode_error, "decode_error"),
            -1 if input_tokens is None else input_tokens,
            -1 if output_tokens is None else output_tokens,
            -1 if cached_input_tokens is None else cached_input_tokens,
            -1 if status is None else status,
            _b(error_type, "error_type"),
            end_ns, bd, end_rc)
        if rc:
            err = error_for_status(rc)
            if end_rc[0] == 0 or end_rc[0] == _ERANGE:
                err.breakdown = _breakdown(bd)
            raise err
        return _breakdown(bd)


# ---- generic spans ---------------------------------------------------------


class Span:
    """A generic span (pdt_span), or a borrowed leg span of a Request.

    Used by one thread or task at a time. As a context manager it is ended
    and freed on exit; an exception leaving the block sets status ERROR
    with the exception's type name as message.
    """

    __slots__ = ("_h", "_owner", "_owned", "__weakref__")

    def __init__(self) -> None:
        raise TypeError("use Tracer.start_span() or Request.span()")

    @classmethod
    def _start(cls, tracer: Tracer, name: str, kind: SpanKind,
               parent: Optional["Span"], traceparent: Optional[str],
               tracestate: Optional[str], start_ns: int) -> "Span":
        self = object.__new__(cls)
        self._h = _NULL_SPAN
        self._owned = True
        out = _new("pdt_span **")
        rc = lib.pdt_span_start(out, tracer._h, _b(name, "name"), kind,
                                _NULL if parent is None else parent._h,
                                _b(traceparent, "traceparent"),
                                _b(tracestate, "tracestate"), start_ns)
        if rc:
            raise error_for_status(rc)
        self._owner = tracer
        self._h = _gc_child(out[0], _span_free, tracer)
        return self

    @classmethod
    def _borrowed(cls, handle: Any, request: Request) -> "Span":
        self = object.__new__(cls)
        self._h = handle
        self._owner = request
        self._owned = False
        return self

    def __enter__(self) -> "Span":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self._h != _NULL and self._owned:
            lib.pdt_span_set_status(self._h, StatusCode.ERROR,
                                    _b(exc_type.__name__, "exception name"))
        self.free()

    def free(self) -> None:
        """pdt_span_free(): ends the span if needed and releases it.
        Idempotent. A borrowed leg span is only detached (its request owns
        it)."""
        h = self._h
        if h == _NULL:
            return
        self._h = _NULL_SPAN
        if self._owned:
            _release(h)

    def set(self, key: str, value: AttributeValue) -> None:
        """A typed attribute: str, bool, int or float."""
        fn, v = _dispatch(value, _SPAN_SETTERS)
        rc = fn(self._h, _c(key, "key"), v)
        if rc:
            raise error_for_status(rc)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Typed attributes in one foreign call (pdt_span_set_attrs); see
        Request.set_attributes()."""
        n, keys, types, strs, nums, dbls = _pack(attributes)
        rc = _span_attrs(self._h, n, keys, types, strs, nums, dbls)
        if rc:
            raise error_for_status(rc)

    def set_bytes(self, key: str, value: bytes) -> None:
        """A string attribute given as bytes, embedded NULs kept
        (pdt_span_set_strn)."""
        rc = lib.pdt_span_set_strn(self._h, _b(key, "key"), value,
                                   len(value))
        if rc:
            raise error_for_status(rc)

    def add_event(self, name: str, time_ns: int = 0,
                  attributes: Optional[Mapping[str, AttributeValue]] = None
                  ) -> None:
        """Adds an event (0: now) and its typed attributes."""
        rc = lib.pdt_span_add_event(self._h, _b(name, "name"), time_ns)
        if rc:
            raise error_for_status(rc)
        if attributes:
            for k, v in attributes.items():
                fn, cv = _dispatch(v, _EVENT_SETTERS)
                rc = fn(self._h, _c(k, "key"), cv)
                if rc:
                    raise error_for_status(rc)

    def set_status(self, code: StatusCode,
                   message: Optional[str] = None) -> None:
        rc = lib.pdt_span_set_status(self._h, code, _b(message, "message"))
        if rc:
            raise error_for_status(rc)

    def headers(self) -> Dict[str, str]:
        """Outbound headers making the next hop a child of this span:
        traceparent and, when present, tracestate."""
        prop = _new("pdt_propagation *")
        prop.size = _PROP_SIZE
        rc = lib.pdt_span_inject(self._h, prop)
        if rc:
            raise error_for_status(rc)
        return _headers(prop)

    @property
    def trace_id(self) -> str:
        return _ids(self._h)[0]

    @property
    def span_id(self) -> str:
        return _ids(self._h)[1]

    @property
    def is_sampled(self) -> bool:
        return bool(lib.pdt_span_is_sampled(self._h))

    def end(self, end_ns: int = 0) -> None:
        """Ends the span (0: now) and queues it for export. The handle
        stays usable for headers() and ids until freed. An end before the
        start is clamped (RangeError is raised; the span is recorded)."""
        rc = lib.pdt_span_end(self._h, end_ns)
        if rc:
            raise error_for_status(rc)
