package pdtrace

import (
	"net/http"
	"runtime"
)

// SpanKind is a span kind (pdt_span_kind).
type SpanKind int

// Span kinds.
const (
	KindInternal SpanKind = 1
	KindServer   SpanKind = 2
	KindClient   SpanKind = 3
	KindProducer SpanKind = 4
	KindConsumer SpanKind = 5
)

// SpanStatus is a span status code (pdt_span_status).
type SpanStatus int

// Span status codes.
const (
	StatusUnset SpanStatus = 0
	StatusOk    SpanStatus = 1
	StatusError SpanStatus = 2
)

// Span is a generic span (any name, kind and parent), for example an EPP
// decision span. It is used by one goroutine at a time. End records it;
// Close releases the handle (ending it first if needed).
type Span struct {
	h       spanHandle
	t       *Tracer
	cleanup runtime.Cleanup
}

type spanCleanup struct {
	h spanHandle
	t *Tracer
}

func (t *Tracer) start(name string, kind SpanKind, parent *Span, tp, ts string, at Time) (*Span, error) {
	var ph spanHandle
	if parent != nil {
		if parent.h == nil {
			return nil, errReleased("pdt_span_start")
		}
		ph = parent.h
	}
	th, err := t.rlock("pdt_span_start")
	if err != nil {
		return nil, err
	}
	h, err := cSpanStart(th, name, kind, ph, tp, ts, at)
	if err == nil {
		t.acquire()
	}
	t.mu.RUnlock()
	runtime.KeepAlive(parent)
	if err != nil {
		return nil, err
	}
	s := &Span{h: h, t: t}
	s.cleanup = runtime.AddCleanup(s, func(c spanCleanup) {
		cSpanFree(c.h)
		c.t.release()
	}, spanCleanup{h, t})
	return s, nil
}

// Start starts a span under parent (nil: a new trace, or one decided by
// the sampler) at `at` (0: now).
func (t *Tracer) Start(name string, kind SpanKind, parent *Span, at Time) (*Span, error) {
	return t.start(name, kind, parent, "", "", at)
}

// StartRemote starts a span under a remote parent given as W3C header
// values ("" for none; a malformed traceparent starts a new trace).
func (t *Tracer) StartRemote(name string, kind SpanKind, traceparent, tracestate string, at Time) (*Span, error) {
	return t.start(name, kind, nil, traceparent, tracestate, at)
}

// StartFromHeader starts a span under the traceparent and tracestate
// found in h.
func (t *Tracer) StartFromHeader(name string, kind SpanKind, h http.Header, at Time) (*Span, error) {
	return t.start(name, kind, nil, headerValue(h, HeaderTraceparent), headerValue(h, HeaderTracestate), at)
}

func (s *Span) attr(event bool, key string, kind attrKind, sv string, iv int64, dv float64) error {
	if s == nil || s.h == nil {
		return errReleased("pdt_span_set_attribute")
	}
	err := cSpanAttr(s.h, event, key, kind, sv, iv, dv)
	runtime.KeepAlive(s)
	return err
}

// SetAttributes sets typed attributes in one call (pdt_span_set_attrs).
// Every one is applied even if another is refused; the error is that of
// the first refused.
func (s *Span) SetAttributes(attrs ...Attr) error {
	if s == nil || s.h == nil {
		return errReleased("pdt_span_set_attrs")
	}
	err := cSpanSetAttrs(s.h, attrs)
	runtime.KeepAlive(s)
	return err
}

// SetString sets a string attribute (embedded NUL bytes are kept).
func (s *Span) SetString(key, value string) error { return s.attr(false, key, kindStr, value, 0, 0) }

// SetInt sets an integer attribute.
func (s *Span) SetInt(key string, value int64) error {
	return s.attr(false, key, kindInt, "", value, 0)
}

// SetFloat sets a double attribute.
func (s *Span) SetFloat(key string, value float64) error {
	return s.attr(false, key, kindDouble, "", 0, value)
}

// SetBool sets a boolean attribute.
func (s *Span) SetBool(key string, value bool) error {
	return s.attr(false, key, kindBool, "", cbool(value), 0)
}

// AddEvent adds an event at `at` (0: now). The SetEvent* calls add
// attributes to the most recent event.
func (s *Span) AddEvent(name string, at Time) error {
	if s == nil || s.h == nil {
		return errReleased("pdt_span_add_event")
	}
	err := cSpanEvent(s.h, name, at)
	runtime.KeepAlive(s)
	return err
}

// SetEventString sets a string attribute on the most recent event.
func (s *Span) SetEventString(key, value string) error {
	return s.attr(true, key, kindStr, value, 0, 0)
}

// SetEventInt sets an integer attribute on the most recent event.
func (s *Span) SetEventInt(key string, value int64) error {
	return s.attr(true, key, kindInt, "", value, 0)
}

// SetEventFloat sets a double attribute on the most recent event.
func (s *Span) SetEventFloat(key string, value float64) error {
	return s.attr(true, key, kindDouble, "", 0, value)
}

// SetEventBool sets a boolean attribute on the most recent event.
func (s *Span) SetEventBool(key string, value bool) error {
	return s.attr(true, key, kindBool, "", cbool(value), 0)
}

// SetStatus sets the span status and, for StatusError, an optional
// message.
func (s *Span) SetStatus(code SpanStatus, message string) error {
	if s == nil || s.h == nil {
		return errReleased("pdt_span_set_status")
	}
	err := cSpanStatus(s.h, code, message)
	runtime.KeepAlive(s)
	return err
}

// Inject writes traceparent (parent: this span) and tracestate (deleted
// when there is none) into h. It works before and after End.
func (s *Span) Inject(h http.Header) error {
	if s == nil || s.h == nil {
		return errReleased("pdt_span_inject")
	}
	p, err := cSpanInject(s.h)
	var ts string
	if err == nil {
		ts = goStr(p.tracestate)
	}
	runtime.KeepAlive(s)
	if err != nil {
		return err
	}
	writeHeaders(h, nil, p.traceparent, ts, "", false)
	return nil
}

// IDs returns the trace id and span id in lowercase hex and whether the
// span is sampled.
func (s *Span) IDs() (traceID, spanID string, sampled bool) {
	if s == nil || s.h == nil {
		return "", "", false
	}
	traceID, spanID, sampled = cSpanIDs(s.h)
	runtime.KeepAlive(s)
	return
}

// End ends the span at `at` (0: now) and hands it to the exporter. An end
// before the start is clamped (StatusRange; the span is still recorded).
func (s *Span) End(at Time) error {
	if s == nil || s.h == nil {
		return errReleased("pdt_span_end")
	}
	err := cSpanEnd(s.h, at)
	runtime.KeepAlive(s)
	return err
}

// Close releases the span, ending it now if it was not ended. Idempotent.
func (s *Span) Close() {
	if s == nil || s.h == nil {
		return
	}
	h := s.h
	s.h = nil
	s.cleanup.Stop()
	cSpanFree(h)
	s.t.release()
	runtime.KeepAlive(s)
}

// ParseTraceparent parses a W3C traceparent value into its trace id,
// parent span id and flags.
func ParseTraceparent(v string) (traceID [16]byte, spanID [8]byte, flags byte, err error) {
	return cParseTraceparent(v)
}
