package otelbridge_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/otelbridge"
	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

const inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// span is what the tests compare: ids and the parent, in lowercase hex.
type span struct {
	TraceID string `json:"traceId"`
	SpanID  string `json:"spanId"`
	Parent  string `json:"parentSpanId"`
	Name    string `json:"name"`
}

func openTracer(t *testing.T) (*pdtrace.Tracer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spans.jsonl")
	tr, err := pdtrace.Open(&pdtrace.Options{
		Exporter:          pdtrace.ExporterConsole,
		ConsolePath:       path,
		IgnoreEnvironment: true,
		ScheduleDelay:     50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close(context.Background()) })
	return tr, path
}

func closeTracer(t *testing.T, tr *pdtrace.Tracer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// ourSpans reads the console exporter's OTLP JSON lines back.
func ourSpans(t *testing.T, path string) map[string]span {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]span{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var doc struct {
			ResourceSpans []struct {
				ScopeSpans []struct {
					Spans []span `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		}
		if err := json.Unmarshal(sc.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		for _, rs := range doc.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					out[s.Name] = s
				}
			}
		}
	}
	return out
}

func hostProvider() (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	return sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)), exp
}

func hostSpans(exp *tracetest.InMemoryExporter) map[string]span {
	out := map[string]span{}
	for _, s := range exp.GetSpans() {
		p := ""
		if s.Parent.IsValid() {
			p = s.Parent.SpanID().String()
		}
		out[s.Name] = span{s.SpanContext.TraceID().String(), s.SpanContext.SpanID().String(), p, s.Name}
	}
	return out
}

func runPD(t *testing.T, r *pdtrace.Request) {
	t.Helper()
	h := http.Header{}
	for _, err := range []error{
		r.SetConnector("nixlv2"),
		r.SendPrefill(h, 0), r.PrefillDone(0),
		r.SendDecode(h, 0), r.Tokens(0, 1), r.Tokens(0, 3),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.End(0); err != nil {
		t.Fatal(err)
	}
}

func inboundRequest(tp string) *http.Request {
	req := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	if tp != "" {
		req.Header.Set(pdtrace.HeaderTraceparent, tp)
	}
	req.Header.Set(pdtrace.HeaderRequestID, "req-7")
	return req
}

// Host span -> request -> host span, one trace, with the real SDK.
func TestOneTraceWithHostSDK(t *testing.T) {
	tr, path := openTracer(t)
	tp, exp := hostProvider()
	host := tp.Tracer("host-proxy")

	ctx, handle := host.Start(context.Background(), "handle")
	in := inboundRequest(inbound) // the host span wins over this header
	r, rctx, err := otelbridge.Begin(ctx, tr, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	if in.Header.Get(pdtrace.HeaderTraceparent) != inbound {
		t.Fatal("Begin modified the inbound headers")
	}
	if r.ID() != "req-7" {
		t.Fatalf("request id %q, want the inbound x-request-id", r.ID())
	}
	_, route := host.Start(rctx, "route")
	route.End()
	runPD(t, r)
	r.Close()
	_, after := host.Start(ctx, "after")
	after.End()
	handle.End()
	closeTracer(t, tr)

	hs, ours := hostSpans(exp), ourSpans(t, path)
	root := ours["llm_d.pd_proxy.request"]
	h := hs["handle"]
	if root.TraceID != h.TraceID || root.Parent != h.SpanID {
		t.Fatalf("request span %+v is not a child of host span %+v", root, h)
	}
	if hs["route"].TraceID != h.TraceID || hs["route"].Parent != root.SpanID {
		t.Fatalf("host span %+v is not a child of request span %+v", hs["route"], root)
	}
	if hs["after"].Parent != h.SpanID {
		t.Fatalf("the host's own context changed: %+v", hs["after"])
	}
	for _, leg := range []string{"llm_d.pd_proxy.prefill", "llm_d.pd_proxy.decode"} {
		if ours[leg].TraceID != h.TraceID || ours[leg].Parent != root.SpanID {
			t.Fatalf("%s: %+v", leg, ours[leg])
		}
	}
}

// Without a host span Begin keeps the inbound traceparent and tracestate.
func TestBeginWithoutHostSpan(t *testing.T) {
	tr, path := openTracer(t)
	tp, exp := hostProvider()
	in := inboundRequest(inbound)
	in.Header.Set(pdtrace.HeaderTracestate, "vendor=abc")
	r, rctx, err := otelbridge.Begin(context.Background(), tr, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.SpanContextFromContext(rctx)
	if !sc.IsValid() || sc.IsRemote() || !sc.IsSampled() || sc.TraceState().Get("vendor") != "abc" {
		t.Fatalf("span context %+v", sc)
	}
	_, route := tp.Tracer("host").Start(rctx, "route")
	route.End()
	if route.SpanContext().TraceState().Get("vendor") != "abc" {
		t.Fatal("tracestate not passed on to the host span")
	}
	r.SetMode(pdtrace.ModeDecodeOnly, "test")
	r.End(0)
	r.Close()
	closeTracer(t, tr)
	root := ourSpans(t, path)["llm_d.pd_proxy.request"]
	if root.TraceID != inbound[3:35] || root.Parent != inbound[36:52] {
		t.Fatalf("request span %+v", root)
	}
	if hostSpans(exp)["route"].Parent != root.SpanID {
		t.Fatal("host span not under the request span")
	}
}

func TestParentAndConversions(t *testing.T) {
	if tp, ts := otelbridge.Parent(context.Background()); tp != "" || ts != "" {
		t.Fatalf("Parent of an empty context: %q %q", tp, ts)
	}
	provider, _ := hostProvider()
	ctx, s := provider.Tracer("host").Start(context.Background(), "h")
	defer s.End()
	tp, _ := otelbridge.Parent(ctx)
	tid, sid, flags, err := pdtrace.ParseTraceparent(tp)
	if err != nil || trace.TraceID(tid) != s.SpanContext().TraceID() ||
		trace.SpanID(sid) != s.SpanContext().SpanID() || flags&1 != 1 {
		t.Fatalf("Parent gave %q (%v)", tp, err)
	}

	tr, _ := openTracer(t)
	r, err := tr.BeginRemote(tp, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := otelbridge.SpanContext(r, pdtrace.LegDecode); err != otelbridge.ErrNoSpan {
		t.Fatalf("decode leg before it was sent: %v", err)
	}
	if err := r.PrefillSent(0); err != nil {
		t.Fatal(err)
	}
	if err := r.PrefillDone(0); err != nil {
		t.Fatal(err)
	}
	if err := r.DecodeSent(0); err != nil {
		t.Fatal(err)
	}
	for _, leg := range []pdtrace.Leg{pdtrace.LegRequest, pdtrace.LegPrefill, pdtrace.LegDecode} {
		sc, err := otelbridge.SpanContext(r, leg)
		if err != nil {
			t.Fatal(err)
		}
		wantT, wantS, sampled := r.Leg(leg).IDs()
		if sc.TraceID().String() != wantT || sc.SpanID().String() != wantS || sc.IsSampled() != sampled {
			t.Fatalf("leg %d: %v, want %s %s", leg, sc, wantT, wantS)
		}
	}
	g, err := tr.Start("llm_d.epp.profile_handler.pick", pdtrace.KindInternal, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	gctx, err := otelbridge.ContextWithSpan(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	gt, gs, _ := g.IDs()
	if sc := trace.SpanContextFromContext(gctx); sc.TraceID().String() != gt || sc.SpanID().String() != gs {
		t.Fatalf("generic span context %v", sc)
	}
	g.Close()
	r.Close()

	// Freed or nil objects give errors, not panics.
	if _, err := otelbridge.SpanContext(r, pdtrace.LegRequest); err == nil {
		t.Fatal("closed request converted")
	}
	if _, err := otelbridge.ContextWithSpan(context.Background(), g); err == nil {
		t.Fatal("closed span converted")
	}
	if _, err := otelbridge.SpanContext(nil, pdtrace.LegRequest); err != otelbridge.ErrNil {
		t.Fatalf("nil request: %v", err)
	}
	if _, err := otelbridge.SpanContextOf(nil); err != otelbridge.ErrNil {
		t.Fatalf("nil span: %v", err)
	}
	if _, err := otelbridge.SpanContext(r, pdtrace.Leg(9)); err == nil {
		t.Fatal("bad leg accepted")
	}
}

// An unsampled host span keeps libpdtrace's request unsampled (parent-based
// sampling), and the host's spans under it stay unsampled too.
func TestUnsampledHostParent(t *testing.T) {
	tr, path := openTracer(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.NeverSample()))
	host := tp.Tracer("host")
	ctx, h := host.Start(context.Background(), "handle")
	r, rctx, err := otelbridge.Begin(ctx, tr, inboundRequest(""), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, sampled := r.Leg(pdtrace.LegRequest).IDs(); sampled {
		t.Fatal("request sampled under an unsampled parent")
	}
	_, inner := host.Start(rctx, "route")
	if inner.SpanContext().IsSampled() {
		t.Fatal("host span sampled under an unsampled request")
	}
	inner.End()
	h.End()
	r.SetMode(pdtrace.ModeDecodeOnly, "test")
	r.End(0)
	r.Close()
	closeTracer(t, tr)
	if n := len(ourSpans(t, path)); n != 0 {
		t.Fatalf("%d spans exported", n)
	}
}

// receiver is a loopback OTLP/HTTP endpoint that keeps every span it gets.
type receiver struct {
	mu    sync.Mutex
	spans map[string]span
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = io.LimitReader(r.Body, 8<<20)
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	var req coltrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	rc.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				rc.spans[s.Name] = span{hex.EncodeToString(s.TraceId), hex.EncodeToString(s.SpanId),
					hex.EncodeToString(s.ParentSpanId), s.Name}
			}
		}
	}
	rc.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// The way a proxy runs it: the host's SDK and libpdtrace both export
// OTLP/HTTP to one receiver, which sees one trace with the right parents.
func TestOneTraceAtOTLPReceiver(t *testing.T) {
	rc := &receiver{spans: map[string]span{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tr, err := pdtrace.Open(&pdtrace.Options{
		Exporter:          pdtrace.ExporterOTLP,
		Endpoint:          srv.URL + "/v1/traces",
		Compression:       pdtrace.CompressionGzip,
		IgnoreEnvironment: true,
		ScheduleDelay:     50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	host := tp.Tracer("host-proxy")
	hctx, handle := host.Start(ctx, "handle")
	r, rctx, err := otelbridge.Begin(hctx, tr, inboundRequest(""), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, route := host.Start(rctx, "route")
	route.End()
	runPD(t, r)
	r.Close()
	handle.End()
	if err := tr.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	rc.mu.Lock()
	got := rc.spans
	rc.mu.Unlock()
	if len(got) != 5 {
		t.Fatalf("receiver got %d spans: %v", len(got), got)
	}
	root, h := got["llm_d.pd_proxy.request"], got["handle"]
	for name, s := range got {
		if s.TraceID != h.TraceID {
			t.Fatalf("%s in trace %s, host span in %s", name, s.TraceID, h.TraceID)
		}
	}
	if h.Parent != "" || root.Parent != h.SpanID || got["route"].Parent != root.SpanID ||
		got["llm_d.pd_proxy.decode"].Parent != root.SpanID {
		t.Fatalf("wrong parents: %+v", got)
	}
}
