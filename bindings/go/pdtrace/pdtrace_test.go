package pdtrace

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	pfx      = "llm_d.pd_proxy."
	inboundT = "0af7651916cd43dd8448eb211c80319c"
	inbound  = "00-" + inboundT + "-b7ad6b7169203331-01"
)

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantStatus(t *testing.T, what string, err error, st Status) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: want *Error with %v, got %v", what, st, err)
	}
	if e.Status != st {
		t.Fatalf("%s: want %v, got %v (%s)", what, st, e.Status, e.Message)
	}
	if !errors.Is(err, &Error{Status: st}) {
		t.Fatalf("%s: errors.Is does not match its own status", what)
	}
	return e
}

func TestVersion(t *testing.T) {
	s, n := Version()
	if s != HeaderVersion {
		t.Fatalf("runtime %s, headers %s", s, HeaderVersion)
	}
	if n>>16 != 0 {
		t.Fatalf("major %d", n>>16)
	}
	a := Now()
	b := Now()
	if a == 0 || b < a {
		t.Fatalf("Now not monotonic: %d %d", a, b)
	}
	if a.Add(time.Millisecond).Sub(a) != time.Millisecond {
		t.Fatal("Time arithmetic")
	}
	if StatusState.String() == "" || !strings.Contains(StatusState.String(), "ESTATE") {
		t.Fatalf("status string %q", StatusState.String())
	}
}

// A sequential P/D request with explicit marks: span tree, propagation and
// the breakdown formulas, read back from the console exporter.
func TestSequentialRequest(t *testing.T) {
	tr, path := openConsole(t, nil)
	base := Now() - Time(time.Second)
	A := base
	ps, pe := A.Add(2*time.Millisecond), A.Add(12*time.Millisecond)
	ds, f := A.Add(15*time.Millisecond), A.Add(40*time.Millisecond)
	l, e := A.Add(140*time.Millisecond), A.Add(141*time.Millisecond)

	in := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	in.Header.Set("traceparent", inbound)
	in.Header.Set("tracestate", "vendor=x")
	in.Header.Set("x-request-id", "req-42")
	r, err := tr.Begin(in, A)
	mustOK(t, "Begin", err)
	defer r.Close()
	if r.ID() != "req-42" {
		t.Fatalf("ID %q", r.ID())
	}
	mustOK(t, "SetConnector", r.SetConnector("nixlv2"))
	mustOK(t, "SetMode", r.SetMode(ModeSequential, ""))
	mustOK(t, "SetString", r.SetString("gen_ai.request.model", "m"))
	mustOK(t, "SetInt", r.SetInt("gen_ai.request.max_tokens", 11))
	mustOK(t, "SetFloat", r.SetFloat("x.ratio", 0.25))
	mustOK(t, "SetBool", r.SetBool("gen_ai.request.stream", true))

	ph := http.Header{}
	mustOK(t, "InjectPrefill", r.InjectPrefill(ph))
	mustOK(t, "PrefillSent", r.PrefillSent(ps))
	mustOK(t, "Leg prefill attr", r.Leg(LegPrefill).SetString("x.leg", "p"))
	mustOK(t, "PrefillDone", r.PrefillDone(pe))
	mustOK(t, "SetLeg prefill", r.SetLeg(LegPrefill, "127.0.0.1:8100", 200, ""))
	dh := http.Header{}
	mustOK(t, "InjectDecode", r.InjectDecode(dh))
	mustOK(t, "DecodeSent", r.DecodeSent(ds))
	mustOK(t, "Leg decode event", r.Leg(LegDecode).AddEvent("first_chunk", f))
	mustOK(t, "Leg decode int", r.Leg(LegDecode).SetInt("x.n", 3))
	mustOK(t, "Leg decode float", r.Leg(LegDecode).SetFloat("x.f", 1.5))
	mustOK(t, "Leg decode bool", r.Leg(LegDecode).SetBool("x.b", false))
	mustOK(t, "Leg decode status", r.Leg(LegDecode).SetStatus(StatusOk, ""))
	wantStatus(t, "Leg status bad code", r.Leg(LegDecode).SetStatus(SpanStatus(9), ""), StatusInvalid)
	mustOK(t, "FirstToken", r.FirstToken(f))
	mustOK(t, "Tokens", r.Tokens(f.Add(50*time.Millisecond), 5))
	mustOK(t, "LastToken", r.LastToken(l))
	mustOK(t, "SetLeg decode", r.SetLeg(LegDecode, "http://127.0.0.1:8200", 200, ""))
	mustOK(t, "SetUsage", r.SetUsage(100, 11, 40))
	mustOK(t, "SetResponse", r.SetResponse(200, ""))
	tid, rootID, sampled := r.Leg(LegRequest).IDs()
	_, prefillID, _ := r.Leg(LegPrefill).IDs()
	_, decodeID, _ := r.Leg(LegDecode).IDs()
	if tid != inboundT || !sampled || len(rootID) != 16 {
		t.Fatalf("ids %s %s %v", tid, rootID, sampled)
	}
	bd, err := r.End(e)
	mustOK(t, "End", err)
	r.Close()
	r.Close() // idempotent

	// Headers: traceparent parented by the leg spans, tracestate, id.
	if got := ph.Get("traceparent"); got != "00-"+inboundT+"-"+prefillID+"-01" {
		t.Fatalf("prefill traceparent %q (prefill span %s)", got, prefillID)
	}
	if got := dh.Get("traceparent"); got != "00-"+inboundT+"-"+decodeID+"-01" {
		t.Fatalf("decode traceparent %q (decode span %s)", got, decodeID)
	}
	for _, h := range []http.Header{ph, dh} {
		if h.Get("tracestate") != "vendor=x" || h.Get("x-request-id") != "req-42" {
			t.Fatalf("headers %v", h)
		}
	}

	ms := func(a, b Time) float64 { return float64(b-a) / 1e6 }
	check := func(name string, m Millis, want float64) {
		t.Helper()
		if !m.OK || math.Abs(m.Value-want) > 1e-6 {
			t.Fatalf("%s = %+v, want %.6f", name, m, want)
		}
	}
	check("queue", bd.Queue, ms(A, ps))
	check("prefill", bd.Prefill, ms(ps, pe))
	check("kv", bd.KVTransferOverhead, ms(pe, ds))
	check("decode_ttft", bd.DecodeTTFT, ms(ds, f))
	check("true_ttft", bd.TrueTTFT, ms(A, f))
	check("decode_duration", bd.DecodeDuration, ms(ds, e))
	check("total", bd.Total, ms(A, e))
	check("tpot", bd.TPOT, ms(f, l)/10)
	if bd.OutputTokens != 11 || bd.Error || !bd.Sampled || bd.Mode != ModeSequential {
		t.Fatalf("breakdown %+v", bd)
	}
	sum := bd.Queue.Value + bd.Prefill.Value + bd.KVTransferOverhead.Value + bd.DecodeTTFT.Value
	if math.Abs(sum-bd.TrueTTFT.Value) > 1e-9 {
		t.Fatalf("true ttft %.9f != sum %.9f", bd.TrueTTFT.Value, sum)
	}

	flush(t, tr)
	spans := readSpans(t, path)
	if len(spans) != 3 {
		t.Fatalf("want 3 spans, got %d", len(spans))
	}
	root := byName(spans, pfx+"request")[0]
	pre := byName(spans, pfx+"prefill")[0]
	dec := byName(spans, pfx+"decode")[0]
	if root.ParentSpanID != "b7ad6b7169203331" || root.Kind != 2 || root.SpanID != rootID {
		t.Fatalf("root %+v", root)
	}
	if pre.ParentSpanID != rootID || dec.ParentSpanID != rootID || pre.Kind != 3 || dec.Kind != 3 {
		t.Fatal("prefill and decode must be CLIENT children of the request span")
	}
	if root.str("http.request.method") != "POST" || root.str("url.path") != "/v1/chat/completions" {
		t.Fatal("Begin(*http.Request) must record method and path")
	}
	if root.str(pfx+"connector") != "nixlv2" || root.str(pfx+"request_id") != "req-42" {
		t.Fatalf("root attrs %+v", root.Attributes)
	}
	if v, _ := root.float("x.ratio"); v != 0.25 {
		t.Fatal("SetFloat")
	}
	if pre.str("x.leg") != "p" || len(dec.Events) != 1 || dec.Events[0].Name != "first_chunk" {
		t.Fatal("leg attributes and events")
	}
	for _, s := range []jsonSpan{root, dec} {
		v, ok := s.float(pfx + "true_ttft_ms")
		if !ok || math.Abs(v-bd.TrueTTFT.Value) > 1e-6 {
			t.Fatalf("%s true_ttft_ms %v %v", s.Name, v, ok)
		}
	}
}

func TestModesAndAbsentValues(t *testing.T) {
	tr, path := openConsole(t, nil)

	// Decode-only: no prefill span, prefill fields absent.
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "BeginRemote", err)
	mustOK(t, "SetMode", r.SetMode(ModeDecodeOnly, "short prompt"))
	wantStatus(t, "prefill mark on decode-only", r.PrefillSent(0), StatusInvalid)
	mustOK(t, "DecodeSent", r.DecodeSent(0))
	mustOK(t, "Tokens", r.Tokens(0, 1))
	bd, err := r.End(0)
	mustOK(t, "End", err)
	if bd.Queue.OK || bd.Prefill.OK || bd.KVTransferOverhead.OK || bd.TPOT.OK || !bd.TrueTTFT.OK {
		t.Fatalf("decode-only breakdown %+v", bd)
	}
	if bd.Mode != ModeDecodeOnly {
		t.Fatal("mode")
	}
	r.Close()

	// Concurrent: no kv transfer overhead.
	r, err = tr.BeginRemote("", "", 0)
	mustOK(t, "BeginRemote", err)
	mustOK(t, "SetMode", r.SetMode(ModeConcurrent, ""))
	now := Now()
	mustOK(t, "PrefillSent", r.PrefillSent(now))
	mustOK(t, "DecodeSent", r.DecodeSent(now))
	mustOK(t, "PrefillDone", r.PrefillDone(0))
	mustOK(t, "FirstToken", r.FirstToken(0))
	bd, err = r.End(0)
	mustOK(t, "End", err)
	if bd.KVTransferOverhead.OK || !bd.Prefill.OK || !bd.DecodeTTFT.OK {
		t.Fatalf("concurrent breakdown %+v", bd)
	}
	r.Close()

	flush(t, tr)
	spans := readSpans(t, path)
	if len(byName(spans, pfx+"prefill")) != 1 || len(byName(spans, pfx+"request")) != 2 {
		t.Fatalf("spans: %d", len(spans))
	}
}

func TestErrorsCarryTheirMessage(t *testing.T) {
	tr, _ := openConsole(t, nil)
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "BeginRemote", err)
	defer r.Close()

	e := wantStatus(t, "future mark", r.PrefillSent(Now().Add(time.Hour)), StatusRange)
	if e.Op != "pdt_request_mark" || !strings.Contains(e.Message, "future") {
		t.Fatalf("message %+v", e)
	}
	if !strings.Contains(e.Error(), "pdt_request_mark") {
		t.Fatal(e.Error())
	}
	mustOK(t, "PrefillSent", r.PrefillSent(0))
	wantStatus(t, "repeated mark", r.PrefillSent(0), StatusState)
	wantStatus(t, "bad mode", r.SetMode(Mode(9), ""), StatusInvalid)
	wantStatus(t, "bad leg", r.SetLeg(Leg(7), "", 200, ""), StatusInvalid)
	wantStatus(t, "empty key", r.SetString("", "v"), StatusInvalid)
	wantStatus(t, "empty id", r.SetID(""), StatusInvalid)
	wantStatus(t, "bad id", r.SetID("has space"), StatusInvalid)
	mustOK(t, "SetID", r.SetID("new-id"))
	if r.ID() != "new-id" {
		t.Fatal("ID cache not refreshed by SetID")
	}
	wantStatus(t, "empty connector", r.SetConnector(""), StatusInvalid)
	wantStatus(t, "event on absent decode span", r.Leg(LegDecode).AddEvent("x", 0), StatusInvalid)
	wantStatus(t, "inject bad leg", r.Inject(Leg(5), http.Header{}), StatusInvalid)
	// Long strings take the heap path of the shims.
	long := strings.Repeat("k", 1000)
	mustOK(t, "long key", r.SetString(long, strings.Repeat("v", 5000)))
	mustOK(t, "long reason", r.SetLeg(LegPrefill, "127.0.0.1:1", 0, long))

	_, err = r.End(0)
	mustOK(t, "End", err)
	_, err = r.End(0)
	wantStatus(t, "second End", err, StatusState)
	wantStatus(t, "mark after End", r.DecodeSent(0), StatusState)
	wantStatus(t, "attr after End", r.SetString("a", "b"), StatusState)
	if err := r.InjectDecode(http.Header{}); err != nil {
		t.Fatalf("inject after end must work: %v", err)
	}

	// Messages must stay attached to their own failure when many
	// goroutines fail at once on different OS threads.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			q, err := tr.BeginRemote("", "", 0)
			if err != nil {
				errs <- err
				return
			}
			defer q.Close()
			for i := 0; i < 200; i++ {
				var err error
				var want string
				if (g+i)%2 == 0 {
					err, want = q.SetMode(Mode(100+g), ""), fmt.Sprint(100+g)
				} else {
					err, want = q.Tokens(Now().Add(time.Duration(g+1)*time.Hour), 1), "future"
				}
				var e *Error
				if !errors.As(err, &e) || !strings.Contains(e.Message, want) {
					errs <- fmt.Errorf("goroutine %d: want message with %q, got %v", g, want, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestBeginRefusedRequestID(t *testing.T) {
	tr, _ := openConsole(t, nil)
	h := http.Header{}
	h.Set("x-request-id", "bad id")
	r, err := tr.BeginFromHeader(h, 0)
	if r == nil {
		t.Fatal("request must be returned when only the id is refused")
	}
	defer r.Close()
	e := wantStatus(t, "refused id", err, StatusInvalid)
	if e.Op != "pdt_request_set_id" || r.ID() == "" || r.ID() == "bad id" {
		t.Fatalf("%+v id=%q", e, r.ID())
	}
	_, err = tr.BeginRemote("", "", Now().Add(time.Hour))
	wantStatus(t, "arrival in the future", err, StatusRange)
}

func TestMisuseAfterClose(t *testing.T) {
	tr, _ := openConsole(t, nil)
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "BeginRemote", err)
	r.Close()
	for name, err := range map[string]error{
		"SetID": r.SetID("x"), "SetMode": r.SetMode(0, ""), "SetConnector": r.SetConnector("x"),
		"mark": r.DecodeSent(0), "Tokens": r.Tokens(0, 1), "SetUsage": r.SetUsage(1, 1, 1),
		"SetLeg": r.SetLeg(LegDecode, "", 0, ""), "SetResponse": r.SetResponse(200, ""),
		"SetString": r.SetString("a", "b"), "Inject": r.InjectDecode(http.Header{}),
		"AddEvent": r.Leg(LegRequest).AddEvent("e", 0), "LegStatus": r.Leg(LegDecode).SetStatus(StatusError, ""),
		"LegInt": r.Leg(LegDecode).SetInt("a", 1),
	} {
		wantStatus(t, name+" after Close", err, StatusState)
	}
	if _, err := r.End(0); err == nil {
		t.Fatal("End after Close")
	}
	if r.ID() != "" {
		t.Fatal("ID after Close")
	}
	if a, b, c := r.Leg(LegDecode).IDs(); a != "" || b != "" || c {
		t.Fatal("IDs after Close")
	}
	var nilReq *Request
	wantStatus(t, "nil request", nilReq.DecodeSent(0), StatusState)
	nilReq.Close()

	s, err := tr.Start("x", KindInternal, nil, 0)
	mustOK(t, "Start", err)
	s.Close()
	s.Close()
	wantStatus(t, "span after Close", s.End(0), StatusState)
	wantStatus(t, "span attr after Close", s.SetInt("a", 1), StatusState)
	wantStatus(t, "span event after Close", s.AddEvent("a", 0), StatusState)
	wantStatus(t, "span status after Close", s.SetStatus(StatusError, "x"), StatusState)
	wantStatus(t, "span inject after Close", s.Inject(http.Header{}), StatusState)
	_, err = tr.Start("child", KindInternal, s, 0)
	wantStatus(t, "closed parent", err, StatusState)
}

func TestTracerClose(t *testing.T) {
	tr, path := openConsole(t, nil)
	st, err := tr.Stats()
	mustOK(t, "Stats", err)
	if st.SpansStarted != 0 {
		t.Fatalf("stats %+v", st)
	}
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "BeginRemote", err)
	s, err := tr.Start("open.span", KindInternal, nil, 0)
	mustOK(t, "Start", err)

	// Open handles: Close waits until its deadline, then leaves the C
	// tracer to the last handle.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = tr.Close(ctx)
	cancel()
	wantStatus(t, "Close with open handles", err, StatusState)
	mustOK(t, "second Close", tr.Close(context.Background()))
	_, err = tr.BeginRemote("", "", 0)
	wantStatus(t, "Begin after Close", err, StatusClosed)
	_, err = tr.Start("x", KindClient, nil, 0)
	wantStatus(t, "Start after Close", err, StatusClosed)
	wantStatus(t, "Flush after Close", tr.Flush(context.Background()), StatusClosed)
	_, err = tr.Stats()
	wantStatus(t, "Stats after Close", err, StatusClosed)

	// The handles still work, and the last Close frees the tracer.
	mustOK(t, "SetMode", r.SetMode(ModeDecodeOnly, ""))
	mustOK(t, "DecodeSent", r.DecodeSent(0))
	_, err = r.End(0)
	mustOK(t, "End", err)
	r.Close()
	mustOK(t, "span End", s.End(0))
	s.Close()
	spans := readSpans(t, path)
	if len(byName(spans, pfx+"request")) != 1 || len(byName(spans, "open.span")) != 1 {
		t.Fatalf("spans after the deferred close: %d", len(spans))
	}
}

func TestCloseWaitsForHandles(t *testing.T) {
	tr, path := openConsole(t, nil)
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "BeginRemote", err)
	go func() {
		time.Sleep(20 * time.Millisecond)
		r.Close() // abandoned: ended with an error
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mustOK(t, "Close", tr.Close(ctx))
	spans := readSpans(t, path)
	if len(spans) != 1 || spans[0].Status.Code != 2 || spans[0].str("error.type") != "abandoned" {
		t.Fatalf("abandoned request: %+v", spans)
	}
}

func TestOpenErrorsAndLog(t *testing.T) {
	_, err := Open(&Options{Exporter: Exporter(42), IgnoreEnvironment: true})
	wantStatus(t, "bad exporter", err, StatusInvalid)
	_, err = Open(&Options{Exporter: ExporterConsole, ConsolePath: "/nonexistent/dir/x.jsonl", IgnoreEnvironment: true})
	wantStatus(t, "bad console path", err, StatusIO)
	_, err = Open(&Options{Exporter: ExporterNone, MaxConcurrentExports: 65, IgnoreEnvironment: true})
	wantStatus(t, "65 exports in flight", err, StatusInvalid)
	_, err = Open(&Options{Exporter: ExporterNone, Compression: CompressionGzip, CompressionLevel: 10, IgnoreEnvironment: true})
	wantStatus(t, "gzip level 10", err, StatusInvalid)
	_, err = Open(&Options{Exporter: ExporterNone, Protocol: Protocol(99), IgnoreEnvironment: true})
	wantStatus(t, "protocol 99", err, StatusInvalid)
	_, err = Open(&Options{Exporter: ExporterNone, MaxQueueBytes: 1000, IgnoreEnvironment: true})
	wantStatus(t, "max_queue_bytes 1000", err, StatusInvalid)
	trg, err := Open(&Options{Exporter: ExporterNone, Protocol: ProtocolGRPC, IgnoreEnvironment: true})
	mustOK(t, "Open with gRPC", err)
	mustOK(t, "Close", trg.Close(context.Background()))
	tr0, err := Open(&Options{Exporter: ExporterNone, Compression: CompressionZstd, CompressionLevel: 3, MaxConcurrentExports: 2, IgnoreEnvironment: true})
	mustOK(t, "Open with a level and 2 exports in flight", err)
	mustOK(t, "Close", tr0.Close(context.Background()))

	// A malformed environment value is logged, not fatal.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "soon")
	var mu sync.Mutex
	var msgs []string
	off := true
	tr, err := Open(&Options{Exporter: ExporterNone, Disabled: &off, Log: func(l LogLevel, m string) {
		mu.Lock()
		msgs = append(msgs, m)
		mu.Unlock()
	}})
	mustOK(t, "Open with a bad env value", err)
	mu.Lock()
	got := strings.Join(msgs, "\n")
	mu.Unlock()
	if !strings.Contains(got, "OTEL_BSP_SCHEDULE_DELAY") {
		t.Fatalf("log messages: %q", got)
	}
	mustOK(t, "Close", tr.Close(context.Background()))

	// nil options: environment only.
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	tr, err = Open(nil)
	mustOK(t, "Open(nil)", err)
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "BeginRemote", err)
	_, err = r.End(0)
	mustOK(t, "End", err)
	r.Close()
	st, err := tr.Stats()
	mustOK(t, "Stats", err)
	if st.RequestsCompleted != 1 {
		t.Fatalf("stats %+v", st)
	}
	mustOK(t, "Close", tr.Close(context.Background()))
}

func TestGenericSpans(t *testing.T) {
	ratio := 1.0
	keep := true
	tr, path := openConsole(t, func(o *Options) {
		o.ServiceName = "go-test"
		o.Sampler = SamplerParentBasedTraceIDRatio
		o.SamplerRatio = &ratio
		o.TailKeepErrors = &keep
		o.TailTTFTThreshold = 500 * time.Millisecond
		o.Timeout = 2 * time.Second
	})
	parent, err := tr.StartRemote("llm_d.epp.profile_handler.pick", KindInternal, inbound, "a=b", 0)
	mustOK(t, "StartRemote", err)
	defer parent.Close()
	mustOK(t, "SetString", parent.SetString("decision", "pd\x00x"))
	mustOK(t, "SetFloat", parent.SetFloat("cache_hit_ratio", 0.5))
	mustOK(t, "SetInt", parent.SetInt("user_input_bytes", 1234))
	mustOK(t, "SetBool", parent.SetBool("b", true))
	mustOK(t, "AddEvent", parent.AddEvent("picked", 0))
	mustOK(t, "SetEventString", parent.SetEventString("pod", "p1"))
	mustOK(t, "SetEventInt", parent.SetEventInt("n", 2))
	mustOK(t, "SetEventFloat", parent.SetEventFloat("f", 2.5))
	mustOK(t, "SetEventBool", parent.SetEventBool("ok", true))
	child, err := tr.Start("child", KindClient, parent, 0)
	mustOK(t, "Start", err)
	defer child.Close()
	mustOK(t, "SetStatus", child.SetStatus(StatusError, "boom"))
	h := http.Header{"Tracestate": {"stale"}}
	mustOK(t, "Inject", child.Inject(h))
	ptid, pid, _ := parent.IDs()
	ctid, cid, sampled := child.IDs()
	if ptid != inboundT || ctid != inboundT || !sampled {
		t.Fatal("trace ids")
	}
	if h.Get("traceparent") != "00-"+inboundT+"-"+cid+"-01" || h.Get("tracestate") != "a=b" {
		t.Fatalf("inject %v", h)
	}
	if _, ok := h[HeaderRequestID]; ok {
		t.Fatal("spans have no request id")
	}
	tid, sid, flags, err := ParseTraceparent(h.Get("traceparent"))
	mustOK(t, "ParseTraceparent", err)
	if fmt.Sprintf("%x", tid) != inboundT || fmt.Sprintf("%x", sid) != cid || flags != 1 {
		t.Fatal("ParseTraceparent")
	}
	_, _, _, err = ParseTraceparent("00-zz")
	wantStatus(t, "bad traceparent", err, StatusParse)
	_, _, _, err = ParseTraceparent("")
	wantStatus(t, "empty traceparent", err, StatusInvalid)

	mustOK(t, "child End", child.End(0))
	wantStatus(t, "child End twice", child.End(0), StatusState)
	wantStatus(t, "end before start", parent.End(1), StatusRange)
	wantStatus(t, "bad kind", func() error { _, err := tr.Start("k", SpanKind(0), nil, 0); return err }(), StatusInvalid)
	wantStatus(t, "empty name", func() error { _, err := tr.Start("", KindClient, nil, 0); return err }(), StatusInvalid)

	// A request's leg span cannot be ended through the generic API, and
	// the library says so.
	flush(t, tr)
	spans := readSpans(t, path)
	p := byName(spans, "llm_d.epp.profile_handler.pick")
	c := byName(spans, "child")
	if len(p) != 1 || len(c) != 1 {
		t.Fatalf("spans %d", len(spans))
	}
	if p[0].ParentSpanID != "b7ad6b7169203331" || c[0].ParentSpanID != pid || p[0].TraceState != "a=b" {
		t.Fatal("parents")
	}
	if p[0].str("decision") != "pd\x00x" || len(p[0].Events) != 1 || len(p[0].Events[0].Attributes) != 4 {
		t.Fatalf("attributes %+v", p[0])
	}
	if c[0].Status.Code != 2 || c[0].Status.Message != "boom" {
		t.Fatal("status")
	}
}

// Many goroutines share one tracer; each request moves between
// goroutines once. Run with -race.
func TestConcurrentRequests(t *testing.T) {
	tr, path := openConsole(t, nil)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := tr.BeginRemote("", "", 0)
			if err != nil {
				errs <- err
				return
			}
			done := make(chan struct{})
			go func() { // the request moves to another goroutine
				defer close(done)
				h := http.Header{}
				if err := r.InjectPrefill(h); err != nil {
					errs <- err
				}
				_ = r.PrefillSent(0)
				_ = r.PrefillDone(0)
			}()
			<-done
			_ = r.DecodeSent(0)
			_ = r.Tokens(0, 2)
			if _, err := r.End(0); err != nil {
				errs <- err
			}
			r.Close()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	flush(t, tr)
	if got := len(readSpans(t, path)); got != 3*n {
		t.Fatalf("want %d spans, got %d", 3*n, got)
	}
	st, err := tr.Stats()
	mustOK(t, "Stats", err)
	if st.RequestsCompleted != n || st.SpansExported != 3*n {
		t.Fatalf("stats %+v", st)
	}
}

func TestFlushTimeoutContext(t *testing.T) {
	tr, _ := openConsole(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// An already cancelled context means a zero timeout: nothing pending
	// is fine, and the call returns at once either way.
	start := time.Now()
	_ = tr.Flush(ctx)
	if time.Since(start) > time.Second {
		t.Fatal("flush with a done context must not wait")
	}
}
