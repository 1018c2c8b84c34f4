"""Tracer: a libpdtrace tracer (pdt_tracer), its options and its log
callback. Requests and spans keep their tracer alive; see Tracer.close()
for a tracer closed while some are still open.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from ._common import (AttributeValue, _c, Compression, _EBUFSIZE, Exporter,
                      ffi, _gc, lib, LogCallback, _METRICS_START, _ms, _new, _NULL, _NULL_TRACER,
                      _object_new, Protocol, Sampler, SpanKind, Stats, _STATS_FIELDS,
                      _STATS_SIZE, _string, _tracer_metrics, _unpack)
from .errors import TimedOutError, error_for_status
from .request import Request, _begin_request
from .span import Span


# ---- log callback ----------------------------------------------------------


@ffi.def_extern()
def _pdtrace_log_cb(userdata: Any, level: int, message: Any) -> None:
    fn = ffi.from_handle(userdata)
    fn(level, _string(message).decode("utf-8", "replace"))


# ---- tracer ----------------------------------------------------------------

_STR_OPTIONS = ("service_name", "resource_attributes", "endpoint", "headers",
                "console_path", "ca_file", "client_cert", "client_key",
                "spool_dir", "metrics_tenants")
_INT_OPTIONS = ("timeout_ms", "schedule_delay_ms", "export_timeout_ms",
                "max_queue_size", "max_export_batch_size",
                "attribute_count_limit", "attribute_value_length_limit",
                "spool_max_bytes", "exporter", "compression", "sampler",
                "max_concurrent_exports", "compression_level", "protocol",
                "max_queue_bytes")
_FLOAT_OPTIONS = ("tail_ttft_threshold_ms",)
# Python bools onto the library's tri-state ints (1 yes, -1 no, 0 default).
_TRISTATE_OPTIONS = ("tail_keep_errors", "disabled")


def _gc_tracer(handle: Any, keep: Any) -> Any:
    """Owns a pdt_tracer. Garbage collection of an unclosed tracer closes it
    without waiting: whatever is still queued is dropped (and counted).
    `keep` (the log callback handle) lives until then."""
    close = lib.pdtpy_tracer_close
    return _gc(handle, lambda h, _k=keep: close(h, 0, _NULL))


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
                 compression_level: Optional[int] = None,
                 metrics_tenants: Optional[str] = None,
                 protocol: Union[Protocol, str, None] = None,
                 max_queue_bytes: Optional[int] = None) -> None:
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
                                ("sampler", Sampler),
                                ("protocol", Protocol)):
            v = given[name]
            if isinstance(v, str):
                try:
                    given[name] = enum_type[v.upper().replace("/", "_")]
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
                attributes: Optional[Mapping[str, AttributeValue]] = None,
                otel: bool = False,
                tenant: Optional[str] = None) -> "Request":
        """Begins a P/D request (pdt_request_begin). arrival_ns is mark A
        (0: now). request_id, connector, model and attributes (on the
        request span), if given, are set in the same foreign call; tenant
        (pdt_request_set_tenant) in one more.
        otel=True takes the parent from the current OpenTelemetry span and
        makes the request span current inside its ``with`` block; see
        Request."""
        return _begin_request(_object_new(Request), self, traceparent,
                              tracestate, arrival_ns, request_id, connector,
                              model, attributes, otel, tenant)

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
