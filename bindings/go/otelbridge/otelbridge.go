// Package otelbridge puts libpdtrace requests and spans in the same trace
// as the host's own OpenTelemetry spans, both ways:
//
//   - host -> libpdtrace: Parent reads the OpenTelemetry span carried by a
//     context.Context as W3C traceparent/tracestate values, and Begin
//     starts a request under it;
//   - libpdtrace -> host: SpanContext converts a request (or one of its
//     legs, or a generic span) into a trace.SpanContext, and
//     ContextWithRequest / ContextWithSpan put it in a context.Context,
//     so spans the host starts from that context nest under ours.
//
// It only converts: ids and flags come from the library
// (pdt_request_inject, pdt_span_inject, pdt_traceparent_parse) and the W3C
// header is written by OpenTelemetry's propagator. A span put in a context
// is non-recording: the library records and exports the real one.
//
// This is a module of its own, so the core binding
// (github.com/pdtrace/libpdtrace/bindings/go/pdtrace) keeps no
// dependencies.
package otelbridge

import (
	"context"
	"errors"
	"net/http"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

var w3c propagation.TraceContext

// ErrNil is returned for a nil request or span.
var ErrNil = errors.New("otelbridge: nil request or span")

// ErrNoSpan is returned for a prefill or decode leg not sent yet.
var ErrNoSpan = errors.New("otelbridge: the leg has no span yet")

// Parent returns the W3C traceparent and tracestate of the OpenTelemetry
// span in ctx, or "" and "" when ctx carries no valid span context.
func Parent(ctx context.Context) (traceparent, tracestate string) {
	if ctx == nil {
		return "", ""
	}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}

// Begin begins a request as pdtrace.Tracer.Begin does, except that the
// parent is the OpenTelemetry span in ctx when there is one (its
// traceparent and tracestate replace the inbound headers'; the inbound
// x-request-id, method and path are kept). It returns ctx with the request
// span as the current OpenTelemetry span, for the host's spans to nest
// under. req.Header is not modified. The error is that of Tracer.Begin
// (the Request may then still be returned, as there).
func Begin(ctx context.Context, t *pdtrace.Tracer, req *http.Request, arrival pdtrace.Time) (*pdtrace.Request, context.Context, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if tp, ts := Parent(ctx); tp != "" {
		h := http.Header{pdtrace.HeaderTraceparent: {tp}}
		if ts != "" {
			h[pdtrace.HeaderTracestate] = []string{ts}
		}
		if id := req.Header.Values(pdtrace.HeaderRequestID); len(id) > 0 {
			h[pdtrace.HeaderRequestID] = id
		}
		inner := &http.Request{Method: req.Method, URL: req.URL, Header: h}
		req = inner
	}
	r, err := t.Begin(req, arrival)
	if r == nil {
		return nil, ctx, err
	}
	out, cerr := ContextWithRequest(ctx, r)
	if cerr != nil {
		return r, ctx, cerr
	}
	return r, out, err
}

// SpanContext returns the OpenTelemetry SpanContext of a leg's span of r
// (pdtrace.LegRequest: the request span): same trace id, span id, sampled
// flag and tracestate, not remote. A prefill or decode leg has a span once
// it was sent (its latest attempt); before that the error is ErrNoSpan.
func SpanContext(r *pdtrace.Request, leg pdtrace.Leg) (trace.SpanContext, error) {
	if r == nil {
		return trace.SpanContext{}, ErrNil
	}
	h := http.Header{}
	if err := r.Inject(leg, h); err != nil {
		return trace.SpanContext{}, err
	}
	if leg == pdtrace.LegRequest {
		return fromHeader(h)
	}
	// The leg's traceparent names the span of its next attempt (reserved
	// ahead for retries); the span itself is the one the library reports.
	tid, sid, sampled := r.Leg(leg).IDs()
	if tid == "" {
		return trace.SpanContext{}, ErrNoSpan
	}
	cfg := trace.SpanContextConfig{}
	var err error
	if cfg.TraceID, err = trace.TraceIDFromHex(tid); err != nil {
		return trace.SpanContext{}, err
	}
	if cfg.SpanID, err = trace.SpanIDFromHex(sid); err != nil {
		return trace.SpanContext{}, err
	}
	if sampled {
		cfg.TraceFlags = trace.FlagsSampled
	}
	cfg.TraceState = traceState(h)
	return trace.NewSpanContext(cfg), nil
}

// SpanContextOf returns the OpenTelemetry SpanContext of a generic span.
func SpanContextOf(s *pdtrace.Span) (trace.SpanContext, error) {
	if s == nil {
		return trace.SpanContext{}, ErrNil
	}
	h := http.Header{}
	if err := s.Inject(h); err != nil {
		return trace.SpanContext{}, err
	}
	return fromHeader(h)
}

func fromHeader(h http.Header) (trace.SpanContext, error) {
	tid, sid, flags, err := pdtrace.ParseTraceparent(h.Get(pdtrace.HeaderTraceparent))
	if err != nil {
		return trace.SpanContext{}, err
	}
	cfg := trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     sid,
		TraceFlags: trace.TraceFlags(flags),
	}
	cfg.TraceState = traceState(h)
	return trace.NewSpanContext(cfg), nil
}

// traceState reads the tracestate header. The library keeps only a valid
// one; should OpenTelemetry read it otherwise, the span goes on without.
func traceState(h http.Header) trace.TraceState {
	if ts := h.Get(pdtrace.HeaderTracestate); ts != "" {
		if st, err := trace.ParseTraceState(ts); err == nil {
			return st
		}
	}
	return trace.TraceState{}
}

// ContextWithRequest returns ctx with r's request span as the current
// OpenTelemetry span (non-recording).
func ContextWithRequest(ctx context.Context, r *pdtrace.Request) (context.Context, error) {
	return ContextWithLeg(ctx, r, pdtrace.LegRequest)
}

// ContextWithLeg returns ctx with the span of one leg of r (e.g. the
// decode span) as the current OpenTelemetry span (non-recording).
func ContextWithLeg(ctx context.Context, r *pdtrace.Request, leg pdtrace.Leg) (context.Context, error) {
	sc, err := SpanContext(r, leg)
	if err != nil {
		return ctx, err
	}
	return trace.ContextWithSpanContext(ctx, sc), nil
}

// ContextWithSpan returns ctx with a generic span as the current
// OpenTelemetry span (non-recording).
func ContextWithSpan(ctx context.Context, s *pdtrace.Span) (context.Context, error) {
	sc, err := SpanContextOf(s)
	if err != nil {
		return ctx, err
	}
	return trace.ContextWithSpanContext(ctx, sc), nil
}
