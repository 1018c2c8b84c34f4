"""Span: a generic span (pdt_span), or a borrowed leg span of a Request."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from ._common import (AttributeValue, _b, _c, _dispatch, _EVENT_SETTERS,
                      _gc_child, _headers, _ids, lib, _new, _NULL, _NULL_SPAN,
                      _pack, _PROP_SIZE, _release, _SPAN_SETTERS, SpanKind,
                      StatusCode)
from .errors import error_for_status

if TYPE_CHECKING:
    from .request import Request
    from .tracer import Tracer

_span_free = lib.pdt_span_free
_span_attrs = lib.pdtpy_span_attrs


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
