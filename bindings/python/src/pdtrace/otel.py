"""pdtrace.otel: one trace with the host's own OpenTelemetry.

Needs ``opentelemetry-api`` (any SDK, or none); pdtrace itself never
imports this module unless asked (``Tracer.request(..., otel=True)`` or an
explicit ``import pdtrace.otel``), so a host without OpenTelemetry sees no
change. Conversions only, both ways:

* host -> pdtrace: ``current_parent()`` gives the traceparent and
  tracestate of the current OpenTelemetry span, for ``Tracer.request()``
  (``otel=True`` does this itself);
* pdtrace -> host: ``span_context()`` turns a Request or Span into an
  OpenTelemetry ``SpanContext``; ``use()`` makes it the current
  OpenTelemetry span (a non-recording span carrying our ids) for the
  duration of a ``with`` block, so the host's own spans nest under it::

      from opentelemetry import trace
      import pdtrace, pdtrace.otel

      host = trace.get_tracer("proxy")
      with host.start_as_current_span("handle"):
          with tracer.request(otel=True) as req:   # child of "handle"
              with host.start_as_current_span("route"):  # child of req
                  ...

The ids are read from the library (pdt_request_inject / pdt_span_inject,
pdt_traceparent_parse); the W3C header is written by OpenTelemetry's own
propagator. Nothing here records or exports spans.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator, Optional, Tuple, Union

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator)
except ImportError as e:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "pdtrace.otel needs the opentelemetry-api package "
        "(pip install opentelemetry-api): %s" % e) from e

from ._common import Leg, parse_traceparent

if TYPE_CHECKING:
    from .request import Request
    from .span import Span

__all__ = ["current_parent", "span_context", "non_recording_span",
           "set_in_context", "use"]

_w3c = TraceContextTextMapPropagator()


def current_parent(ctx: Optional[otel_context.Context] = None
                   ) -> Tuple[Optional[str], Optional[str]]:
    """(traceparent, tracestate) of the current OpenTelemetry span (or of
    the span in `ctx`), ready for ``Tracer.request()``. (None, None) when
    there is no valid span; tracestate is None when the span has none."""
    carrier: dict = {}
    _w3c.inject(carrier, context=ctx)
    return carrier.get("traceparent"), carrier.get("tracestate")


def span_context(obj: Union["Request", "Span"]) -> otel_trace.SpanContext:
    """The OpenTelemetry SpanContext of a Request (its request span) or of
    a Span: same trace id, span id, sampled flag and tracestate, marked
    local (is_remote=False). Raises the binding's error for a freed
    request or span."""
    from .request import Request
    if isinstance(obj, Request):
        h = obj.headers(Leg.REQUEST)
    else:
        h = obj.headers()
    trace_id, span_id, flags = parse_traceparent(h["traceparent"])
    ts = h.get("tracestate")
    return otel_trace.SpanContext(
        int.from_bytes(trace_id, "big"), int.from_bytes(span_id, "big"),
        is_remote=False, trace_flags=otel_trace.TraceFlags(flags & 0xff),
        trace_state=otel_trace.TraceState.from_header([ts]) if ts else None)


def non_recording_span(obj: Union["Request", "Span"]
                       ) -> otel_trace.NonRecordingSpan:
    """A non-recording OpenTelemetry span carrying span_context(obj): a
    parent for the host's spans; ending it or setting attributes on it
    does nothing (the library records the real span)."""
    return otel_trace.NonRecordingSpan(span_context(obj))


def set_in_context(obj: Union["Request", "Span"],
                   ctx: Optional[otel_context.Context] = None
                   ) -> otel_context.Context:
    """`ctx` (default: the current context) with obj as its span, for
    ``tracer.start_span(..., context=...)`` or ``context.attach()``."""
    return otel_trace.set_span_in_context(non_recording_span(obj), ctx)


@contextlib.contextmanager
def use(obj: Union["Request", "Span"]) -> Iterator[otel_trace.Span]:
    """Makes obj (a Request or Span) the current OpenTelemetry span inside
    the ``with`` block and restores the previous context on leaving it.
    Does not end or free obj. Yields the non-recording span."""
    span = non_recording_span(obj)
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)


# ---- hooks for Tracer.request(..., otel=True) -------------------------------


def _attach(req: "Request") -> object:
    return otel_context.attach(otel_trace.set_span_in_context(
        non_recording_span(req)))


def _detach(token: object) -> None:
    otel_context.detach(token)
