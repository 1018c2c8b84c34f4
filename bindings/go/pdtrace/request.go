package pdtrace

import (
	"net/http"
	"runtime"
	"strings"
)

// Mode says how prefill and decode relate (pdt_pd_mode).
type Mode int

// Modes.
const (
	ModeSequential Mode = 0 // prefill, KV transfer, then decode (default)
	ModeConcurrent Mode = 1 // both legs start together (sglang, mooncake)
	ModeDecodeOnly Mode = 2 // prefill skipped (selective P/D)
)

// Leg names one of the spans of a request (pdt_leg).
type Leg int

// Legs.
const (
	LegRequest Leg = 0
	LegPrefill Leg = 1
	LegDecode  Leg = 2
)

type mark int

const (
	markPrefillSent mark = 1
	markPrefillDone mark = 2
	markDecodeSent  mark = 3
	markFirstToken  mark = 4
	markLastToken   mark = 5
)

// Canonical header keys written and read by this package.
const (
	HeaderTraceparent = "Traceparent"
	HeaderTracestate  = "Tracestate"
	HeaderRequestID   = "X-Request-Id"
)

// Millis is a duration in milliseconds that may be absent: OK is false
// when the marks it needs were not recorded (it is never zero-filled).
type Millis struct {
	Value float64
	OK    bool
}

// Breakdown is the request's stage breakdown computed by the library
// (docs/spans.md), in milliseconds.
type Breakdown struct {
	Queue              Millis // Ps - A
	Prefill            Millis // Pe - Ps
	KVTransferOverhead Millis // Ds - Pe (sequential only)
	DecodeTTFT         Millis // F - Ds
	TrueTTFT           Millis // F - A
	DecodeDuration     Millis // E - Ds
	Total              Millis // E - A
	TPOT               Millis // (L - F) / (output tokens - 1)
	OutputTokens       int64  // -1 if unknown
	Mode               Mode
	Error              bool // the request failed
	Sampled            bool // its spans are exported
}

// Request traces one client request seen by the P/D coordinator: the root
// span llm_d.pd_proxy.request and its prefill and decode child spans. It
// is used by one goroutine at a time. Close releases it; closing a request
// that was not ended ends it as abandoned (an error).
type Request struct {
	h       reqHandle
	t       *Tracer
	cleanup runtime.Cleanup
	id      string // cached request id, valid when idOK
	idOK    bool
	ts      string // cached tracestate, valid when tsOK
	tsOK    bool
	// Header values written by the first inject of each leg (prefill,
	// decode) point into hv, which saves an allocation; later injects of
	// the same leg (a retried prefill) allocate their own.
	hv     [2][3]string
	hvUsed [2]bool
}

type reqCleanup struct {
	h reqHandle
	t *Tracer // keeps the tracer alive until this request is freed
}

func headerValue(h http.Header, key string) string {
	v := h[key]
	switch len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	}
	return strings.Join(v, ",")
}

func (t *Tracer) begin(tp, ts string, arrival Time, id, method, path string) (*Request, error) {
	th, err := t.rlock("pdt_request_begin")
	if err != nil {
		return nil, err
	}
	h, err, idErr := cBegin(th, tp, ts, arrival, id, method, path)
	if err == nil {
		t.acquire()
	}
	t.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	r := t.newRequest(h)
	if idErr == nil && id != "" {
		// The library took the id (no NUL: checked) and holds these
		// exact bytes; reading them back would only cost a copy.
		r.id, r.idOK = id, true
	}
	if ts == "" {
		r.tsOK = true // no inbound tracestate, none to pass on
	}
	return r, idErr
}

func (t *Tracer) newRequest(h reqHandle) *Request {
	r := &Request{h: h, t: t}
	r.cleanup = runtime.AddCleanup(r, func(c reqCleanup) {
		cReqFree(c.h)
		c.t.release()
	}, reqCleanup{h, t})
	return r
}

// Begin begins a request from an inbound HTTP request: its traceparent,
// tracestate and x-request-id headers, and its method and path (recorded
// as http.request.method and url.path). arrival is mark A (0: now).
//
// If the inbound x-request-id is refused by the library (not a visible
// ASCII token, or too long), the Request is still returned, with a
// generated id, together with the error of that refusal.
func (t *Tracer) Begin(req *http.Request, arrival Time) (*Request, error) {
	var path string
	if req.URL != nil {
		path = req.URL.Path
	}
	h := req.Header
	return t.begin(headerValue(h, HeaderTraceparent), headerValue(h, HeaderTracestate),
		arrival, headerValue(h, HeaderRequestID), req.Method, path)
}

// BeginWith is Begin that also sets the KV connector and the model
// (pdt_request_set_model; "" skips either) and attributes of the request
// span, all in one cgo call. The Request is returned whenever it began;
// the error is then that of the first refused setting (a refused
// x-request-id first), the others being applied all the same.
func (t *Tracer) BeginWith(req *http.Request, arrival Time, connector, model string, attrs ...Attr) (*Request, error) {
	var path string
	if req.URL != nil {
		path = req.URL.Path
	}
	h := req.Header
	th, err := t.rlock("pdt_request_begin")
	if err != nil {
		return nil, err
	}
	id := headerValue(h, HeaderRequestID)
	ts := headerValue(h, HeaderTracestate)
	rh, err, idErr, setErr := cBeginWith(th, headerValue(h, HeaderTraceparent), ts,
		arrival, id, req.Method, path, connector, model, attrs)
	if err == nil {
		t.acquire()
	}
	t.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	r := t.newRequest(rh)
	if idErr == nil && id != "" {
		// The library took the id (no NUL: checked) and holds these
		// exact bytes; reading them back would only cost a copy.
		r.id, r.idOK = id, true
	}
	if ts == "" {
		r.tsOK = true // no inbound tracestate, none to pass on
	}
	if idErr != nil {
		return r, idErr
	}
	return r, setErr
}

// BeginFromHeader is Begin from the inbound headers only.
func (t *Tracer) BeginFromHeader(h http.Header, arrival Time) (*Request, error) {
	return t.begin(headerValue(h, HeaderTraceparent), headerValue(h, HeaderTracestate),
		arrival, headerValue(h, HeaderRequestID), "", "")
}

// BeginRemote begins a request under a remote parent given as W3C header
// values ("" for none; a malformed traceparent starts a new trace).
func (t *Tracer) BeginRemote(traceparent, tracestate string, arrival Time) (*Request, error) {
	return t.begin(traceparent, tracestate, arrival, "", "", "")
}

// SetID sets the request id sent to both legs as x-request-id.
func (r *Request) SetID(id string) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_id")
	}
	err := cReqSetID(r.h, id)
	r.idOK = false
	runtime.KeepAlive(r)
	return err
}

// ID returns the request id ("" once closed).
func (r *Request) ID() string {
	if r == nil || r.h == nil {
		return ""
	}
	if !r.idOK {
		r.id, r.idOK = cReqID(r.h), true
		runtime.KeepAlive(r)
	}
	return r.id
}

// SetMode sets the P/D mode and, for decode-only, an optional reason.
// It must come before the first prefill or decode mark.
func (r *Request) SetMode(m Mode, reason string) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_mode")
	}
	err := cReqSetMode(r.h, m, reason)
	runtime.KeepAlive(r)
	return err
}

// SetConnector sets the KV connector name (nixlv2, lmcache, ...).
func (r *Request) SetConnector(name string) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_connector")
	}
	err := cReqSetConnector(r.h, name)
	runtime.KeepAlive(r)
	return err
}

func (r *Request) mark(m mark, at Time) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_mark")
	}
	err := cReqMark(r.h, m, at)
	runtime.KeepAlive(r)
	return err
}

// PrefillSent records mark Ps (0: now) and starts a prefill attempt's
// span. Repeated after PrefillDone, it records a retried prefill.
func (r *Request) PrefillSent(at Time) error { return r.mark(markPrefillSent, at) }

// PrefillDone records mark Pe: the prefill response was fully read.
func (r *Request) PrefillDone(at Time) error { return r.mark(markPrefillDone, at) }

// DecodeSent records mark Ds and starts the decode span.
func (r *Request) DecodeSent(at Time) error { return r.mark(markDecodeSent, at) }

// FirstToken records mark F: the first token forwarded to the client.
func (r *Request) FirstToken(at Time) error { return r.mark(markFirstToken, at) }

// LastToken records mark L: the last token forwarded.
func (r *Request) LastToken(at Time) error { return r.mark(markLastToken, at) }

// Tokens records n generated tokens forwarded at `at`: the first call sets
// F, every call moves L and adds to the output token count.
func (r *Request) Tokens(at Time, n uint32) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_tokens")
	}
	err := cReqTokens(r.h, at, n)
	runtime.KeepAlive(r)
	return err
}

// SetUsage sets the token counts from the upstream's usage; a negative
// count is unknown and not recorded. The output count wins over Tokens.
func (r *Request) SetUsage(input, output, cachedInput int64) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_usage")
	}
	err := cReqSetUsage(r.h, input, output, cachedInput)
	runtime.KeepAlive(r)
	return err
}

// SetLeg records the outcome of the prefill or decode leg: its target
// ("host:port" or a URL; "" to skip), the HTTP status (0 if no response
// arrived) and, for a failure, an error type ("" for none).
func (r *Request) SetLeg(leg Leg, target string, status int, errorType string) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_leg")
	}
	err := cReqSetLeg(r.h, leg, target, status, errorType)
	runtime.KeepAlive(r)
	return err
}

// SetResponse records the status sent to the client and, if the client
// got an error, its type ("" for none).
func (r *Request) SetResponse(status int, errorType string) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_response")
	}
	err := cReqSetResponse(r.h, status, errorType)
	runtime.KeepAlive(r)
	return err
}

// SetModel sets the request's model: gen_ai.request.model on the request
// span and the model label of its metrics (pdt_request_set_model).
func (r *Request) SetModel(model string) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_model")
	}
	err := cReqSetModel(r.h, model)
	runtime.KeepAlive(r)
	return err
}

// SetTenant sets the request's tenant: llm_d.tenant on the request span
// and the tenant label of its request and token counters in the metrics
// when it is one of Options.MetricsTenants ("other" otherwise;
// pdt_request_set_tenant).
func (r *Request) SetTenant(tenant string) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_tenant")
	}
	err := cReqSetTenant(r.h, tenant)
	runtime.KeepAlive(r)
	return err
}

// SetAttributes sets typed attributes on the request span in one call
// (pdt_request_set_attrs). Every one is applied even if another is
// refused; the error is that of the first refused.
func (r *Request) SetAttributes(attrs ...Attr) error {
	return r.Leg(LegRequest).SetAttributes(attrs...)
}

// SendPrefill writes the prefill leg's headers into h (as InjectPrefill)
// and records mark Ps at `at` (as PrefillSent) in one cgo call. If the
// mark is refused, the headers are still written and its error returned.
func (r *Request) SendPrefill(h http.Header, at Time) error {
	return r.send(LegPrefill, markPrefillSent, h, at)
}

// SendDecode is InjectDecode and DecodeSent in one cgo call.
func (r *Request) SendDecode(h http.Header, at Time) error {
	return r.send(LegDecode, markDecodeSent, h, at)
}

func (r *Request) send(leg Leg, m mark, h http.Header, at Time) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_inject")
	}
	p, err := cReqSend(r.h, leg, m, at)
	ok := p.traceparent != ""
	if ok {
		if !r.tsOK {
			r.ts, r.tsOK = goStr(p.tracestate), true
		}
		if !r.idOK {
			r.id, r.idOK = goStr(p.requestID), true
		}
	}
	runtime.KeepAlive(r)
	if ok {
		writeHeaders(h, r.values(leg), p.traceparent, r.ts, r.id, true)
	}
	return err
}

// PrefillResult records mark Pe (the prefill response was fully read) and
// the prefill leg's outcome (as SetLeg(LegPrefill, ...)) in one cgo call.
func (r *Request) PrefillResult(at Time, target string, status int, errorType string) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_mark")
	}
	err := cReqLegDone(r.h, LegPrefill, markPrefillDone, at, target, status, errorType)
	runtime.KeepAlive(r)
	return err
}

// Outcome is the end of a request, for Finish.
type Outcome struct {
	// Status is the HTTP status sent to the client and ErrorType its error
	// type if it failed (SetResponse); Status 0 records neither.
	Status    int
	ErrorType string
	// The decode leg's outcome (SetLeg(LegDecode, ...)), recorded when
	// DecodeStatus or DecodeErrorType is set.
	DecodeTarget    string
	DecodeStatus    int
	DecodeErrorType string
	// With Usage set, the token counts from the upstream's usage
	// (SetUsage; a negative count is unknown).
	Usage                                        bool
	InputTokens, OutputTokens, CachedInputTokens int64
}

// Finish records the outcome and ends the request at `at` (End) in one
// cgo call. Every step is applied even if an earlier one is refused; the
// error is the first refusal. The Breakdown is valid when the request was
// ended, which is the case unless End itself failed with other than
// StatusRange (for example a second end, StatusState).
func (r *Request) Finish(at Time, o *Outcome) (Breakdown, error) {
	if r == nil || r.h == nil {
		return Breakdown{OutputTokens: -1}, errReleased("pdt_request_end")
	}
	if o == nil {
		o = &Outcome{}
	}
	bd, err, _ := cReqFinish(r.h, at, o)
	runtime.KeepAlive(r)
	return bd, err
}

// SetString sets a string attribute on the request span.
func (r *Request) SetString(key, value string) error {
	return r.Leg(LegRequest).attr(key, kindStr, value, 0, 0)
}

// SetInt sets an integer attribute on the request span.
func (r *Request) SetInt(key string, value int64) error {
	return r.Leg(LegRequest).attr(key, kindInt, "", value, 0)
}

// SetFloat sets a double attribute on the request span.
func (r *Request) SetFloat(key string, value float64) error {
	return r.Leg(LegRequest).attr(key, kindDouble, "", 0, value)
}

// SetBool sets a boolean attribute on the request span.
func (r *Request) SetBool(key string, value bool) error {
	return r.Leg(LegRequest).attr(key, kindBool, "", cbool(value), 0)
}

// InjectPrefill writes the headers for the prefill leg into h:
// traceparent (parent: the prefill span), tracestate (deleted when there
// is none) and x-request-id.
func (r *Request) InjectPrefill(h http.Header) error { return r.Inject(LegPrefill, h) }

// InjectDecode writes the headers for the decode leg into h.
func (r *Request) InjectDecode(h http.Header) error { return r.Inject(LegDecode, h) }

// Inject writes the outbound headers for a leg into h.
func (r *Request) Inject(leg Leg, h http.Header) error {
	if r == nil || r.h == nil {
		return errReleased("pdt_request_inject")
	}
	p, err := cReqInject(r.h, leg)
	if err == nil {
		if !r.tsOK {
			r.ts, r.tsOK = goStr(p.tracestate), true
		}
		if !r.idOK {
			r.id, r.idOK = goStr(p.requestID), true
		}
	}
	runtime.KeepAlive(r)
	if err != nil {
		return err
	}
	writeHeaders(h, r.values(leg), p.traceparent, r.ts, r.id, true)
	return nil
}

// values gives the backing array for a leg's header values.
func (r *Request) values(leg Leg) *[3]string {
	if i := int(leg) - 1; i == 0 || i == 1 {
		if !r.hvUsed[i] {
			r.hvUsed[i] = true
			return &r.hv[i]
		}
	}
	return new([3]string)
}

// writeHeaders sets the propagation headers, with the three value slices
// in v (nil: one allocation for them).
func writeHeaders(h http.Header, v *[3]string, tp, ts, id string, withID bool) {
	if v == nil {
		v = new([3]string)
	}
	v[0], v[1], v[2] = tp, ts, id
	h[HeaderTraceparent] = v[0:1:1]
	if ts != "" {
		h[HeaderTracestate] = v[1:2:2]
	} else {
		delete(h, HeaderTracestate)
	}
	if withID {
		h[HeaderRequestID] = v[2:3:3]
	}
}

// End ends the request at `at` (mark E; 0: now), computes the breakdown,
// records it and hands the spans to the exporter. With StatusRange the
// request was still ended (E clamped) and the Breakdown is valid.
func (r *Request) End(at Time) (Breakdown, error) {
	if r == nil || r.h == nil {
		return Breakdown{OutputTokens: -1}, errReleased("pdt_request_end")
	}
	bd, err := cReqEnd(r.h, at)
	runtime.KeepAlive(r)
	return bd, err
}

// Close releases the request. One not ended is ended now as abandoned,
// with status ERROR. Close is idempotent.
func (r *Request) Close() {
	if r == nil || r.h == nil {
		return
	}
	h := r.h
	r.h = nil
	r.cleanup.Stop()
	cReqFree(h)
	r.t.release()
	runtime.KeepAlive(r)
}

// Leg gives access to one of the request's spans, for attributes and
// events beyond the contract's. The span exists only once its SENT mark
// was recorded (the request span always).
func (r *Request) Leg(leg Leg) LegSpan { return LegSpan{r: r, leg: leg} }

// LegSpan is one span of a Request. It is valid while the Request is open.
type LegSpan struct {
	r   *Request
	leg Leg
}

func (l LegSpan) attr(key string, kind attrKind, sv string, iv int64, dv float64) error {
	r := l.r
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_attribute")
	}
	err := cReqAttr(r.h, l.leg, key, kind, sv, iv, dv)
	runtime.KeepAlive(r)
	return err
}

// SetAttributes sets typed attributes on the leg's span in one call
// (pdt_request_set_attrs); see Request.SetAttributes. The span must exist
// (StatusState before its SENT mark).
func (l LegSpan) SetAttributes(attrs ...Attr) error {
	r := l.r
	if r == nil || r.h == nil {
		return errReleased("pdt_request_set_attrs")
	}
	err := cReqSetAttrs(r.h, l.leg, attrs)
	runtime.KeepAlive(r)
	return err
}

// SetString sets a string attribute on the leg's span.
func (l LegSpan) SetString(key, value string) error { return l.attr(key, kindStr, value, 0, 0) }

// SetInt sets an integer attribute on the leg's span.
func (l LegSpan) SetInt(key string, value int64) error { return l.attr(key, kindInt, "", value, 0) }

// SetFloat sets a double attribute on the leg's span.
func (l LegSpan) SetFloat(key string, value float64) error {
	return l.attr(key, kindDouble, "", 0, value)
}

// SetBool sets a boolean attribute on the leg's span.
func (l LegSpan) SetBool(key string, value bool) error {
	return l.attr(key, kindBool, "", cbool(value), 0)
}

// AddEvent adds an event to the leg's span at `at` (0: now).
func (l LegSpan) AddEvent(name string, at Time) error {
	r := l.r
	if r == nil || r.h == nil {
		return errReleased("pdt_span_add_event")
	}
	err := cReqEvent(r.h, l.leg, name, at)
	runtime.KeepAlive(r)
	return err
}

// SetStatus sets the leg span's status and, for StatusError, an optional
// message, for outcomes SetLeg does not cover (for example a decode
// stream cut after its 200 response).
func (l LegSpan) SetStatus(code SpanStatus, message string) error {
	r := l.r
	if r == nil || r.h == nil {
		return errReleased("pdt_span_set_status")
	}
	err := cReqStatus(r.h, l.leg, code, message)
	runtime.KeepAlive(r)
	return err
}

// IDs returns the span's trace id and span id in lowercase hex and whether
// it is sampled; empty strings if the span does not exist.
func (l LegSpan) IDs() (traceID, spanID string, sampled bool) {
	r := l.r
	if r == nil || r.h == nil {
		return "", "", false
	}
	traceID, spanID, sampled = cReqIDs(r.h, l.leg)
	runtime.KeepAlive(r)
	return
}
