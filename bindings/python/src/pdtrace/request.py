"""Request: a P/D request (pdt_request), its marks, legs, headers and
breakdown."""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional

from ._common import (AttributeValue, _b, Breakdown, _breakdown, _c, _dispatch,
                      _ids, Leg, lib, Mark, Mode, _NULL,
                      _NULL_REQUEST, _NULL_SPAN, _pack, _REQ_SETTERS, _s,
                      _Scratch, _scratch, _string, _TP_END, _TP_START)
from .errors import RangeError, error_for_status
from .span import Span

if TYPE_CHECKING:
    from .tracer import Tracer


_request_free = lib.pdt_request_free
_mark = lib.pdt_request_mark
_tokens = lib.pdt_request_tokens
_set_str = lib.pdt_request_set_str
_set_int = lib.pdt_request_set_int
_set_leg = lib.pdt_request_set_leg
_inject = lib.pdt_request_inject
_begin = lib.pdtpy_request_begin
_req_attrs = lib.pdtpy_request_attrs
_send = lib.pdtpy_request_send
_leg_done = lib.pdtpy_request_leg_done
_finish = lib.pdtpy_request_finish
_set_model = lib.pdt_request_set_model
_set_tenant = lib.pdt_request_set_tenant
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

# pdtrace.otel, imported on the first request asked to join OpenTelemetry
# (None: not tried yet; False: opentelemetry-api is not installed).
_otel_mod: Any = None
_OTEL_ON = True  # Request._otel of a request not entered yet


def _otel() -> Any:
    global _otel_mod
    m = _otel_mod
    if m is None:
        try:
            from . import otel as m
        except ImportError:
            m = False
        _otel_mod = m
    return m


def _begin_request(self: "Request", tracer: Tracer,
                   traceparent: Optional[str], tracestate: Optional[str],
                   arrival_ns: int, request_id: Optional[str],
                   connector: Optional[str], model: Optional[str],
                   attributes: Optional[Mapping[str, AttributeValue]],
                   otel: bool = False,
                   tenant: Optional[str] = None) -> "Request":
    """Request.__init__, also called by Tracer.request() directly."""
    self._h = _NULL_REQUEST
    # Checked before the request begins, so a NUL refuses nothing half done.
    tenant_b = _c(tenant, "tenant") if tenant is not None else None
    self._otel = None
    if otel and _otel():
        # The current OpenTelemetry span, when there is one, is the parent.
        tp, ts = _otel_mod.current_parent()
        if tp is not None:
            traceparent, tracestate = tp, ts
        self._otel = _OTEL_ON
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
    if tenant_b is not None:
        rc2 = _set_tenant(h, tenant_b)
        rc = rc or rc2
    if rc:
        err = error_for_status(rc)
        err.request = self
        raise err
    if request_id is not None:
        # The library took the id (every step succeeded) and holds these
        # exact characters: a NUL was refused above and it keeps only
        # visible ASCII. Reading them back would only cost a copy.
        self._rid = request_id
    return self


class Request:
    """A P/D request (pdt_request): the root span and its prefill and
    decode child spans, the stage marks and the breakdown.

    Used by one thread or task at a time. As a context manager (``with``
    or ``async with``) it is freed on exit; a request freed before end() is recorded by the
    library as ERROR "abandoned". Timestamps are now_ns() nanoseconds,
    0 meaning now.
    """

    __slots__ = ("_h", "_th", "_live", "_rid", "_ts", "_spans", "_otel",
                 "__weakref__")

    def __init__(self, tracer: Tracer, traceparent: Optional[str] = None,
                 tracestate: Optional[str] = None,
                 arrival_ns: int = 0, *, request_id: Optional[str] = None,
                 connector: Optional[str] = None,
                 model: Optional[str] = None,
                 attributes: Optional[Mapping[str, AttributeValue]] = None,
                 otel: bool = False,
                 tenant: Optional[str] = None) -> None:
        """Begins the request (pdt_request_begin) and sets request_id,
        connector, model and attributes when given, all in one foreign
        call, and the tenant (set_tenant) when given, in one more. If the request began but one of those settings was refused
        (the others are still applied), the error is raised with the open
        request attached as ``.request``: go on with it, or free it.

        otel=True joins the host's OpenTelemetry (needs opentelemetry-api;
        without it the flag does nothing): the current OpenTelemetry span,
        if any, is the parent (its traceparent and tracestate replace the
        given ones), and entering the request as a context manager
        (``with`` or ``async with``) makes the request span the current
        OpenTelemetry span until the block ends. See pdtrace.otel."""
        _begin_request(self, tracer, traceparent, tracestate, arrival_ns,
                       request_id, connector, model, attributes, otel,
                       tenant)

    def __enter__(self) -> "Request":
        if self._otel is _OTEL_ON:
            self._otel = _otel_mod._attach(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        token = self._otel
        if token is not None and token is not _OTEL_ON:
            self._otel = _OTEL_ON
            _otel_mod._detach(token)
        self.free()

    async def __aenter__(self) -> "Request":
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)

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

    def set_tenant(self, tenant: str) -> None:
        """pdt_request_set_tenant(): llm_d.tenant on the request span and
        the `tenant` label of its request and token counters, when the
        tenant is one of the tracer's metrics_tenants ("other" otherwise)."""
        rc = _set_tenant(self._h, _c(tenant, "tenant"))
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
