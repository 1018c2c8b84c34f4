package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
)

const (
	pfx         = "llm_d.pd_proxy."
	inTraceID   = "4bf92f3577b34da6a3ce929d0e0e4736"
	inSpanID    = "00f067aa0ba902b7"
	inTrace     = "00-" + inTraceID + "-" + inSpanID + "-01"
	firstDelay  = 40 * time.Millisecond // decode: role chunk, then this pause
	tokenPause  = 2 * time.Millisecond
	prefillTime = 15 * time.Millisecond
)

// seen is what a fake upstream received.
type seen struct {
	path        string
	traceparent string
	requestID   string
	body        map[string]any
}

type upstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls []seen
}

func (u *upstream) record(r *http.Request) map[string]any {
	var body map[string]any
	raw, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(raw, &body)
	u.mu.Lock()
	u.calls = append(u.calls, seen{r.URL.Path, r.Header.Get("traceparent"), r.Header.Get("x-request-id"), body})
	u.mu.Unlock()
	return body
}

func (u *upstream) got() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.calls...)
}

func newUpstream(t *testing.T, h func(u *upstream, w http.ResponseWriter, r *http.Request)) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(u, w, r) }))
	t.Cleanup(u.srv.Close)
	return u
}

func hostPort(u *upstream) string { return strings.TrimPrefix(u.srv.URL, "http://") }

// fakePrefill answers like vLLM with the NIXL connector.
func fakePrefill(t *testing.T) *upstream {
	return newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		u.record(r)
		time.Sleep(prefillTime)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"cmpl-p","choices":[{"text":"x"}],`+
			`"kv_transfer_params":{"do_remote_prefill":true,"do_remote_decode":false,`+
			`"remote_block_ids":[1,2,3],"remote_engine_id":"eng-1","remote_host":"127.0.0.1","remote_port":5600},`+
			`"usage":{"prompt_tokens":20,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":8}}}`)
	})
}

// fakeDecode streams `tokens` chunks (SSE) or answers in one JSON body. A
// role-only chunk comes first, then a pause, so that F must be the first
// chunk with text. With hang set it stops after two tokens and waits for
// the client to go away (at most 10 s).
func fakeDecode(t *testing.T, tokens int, hang bool) *upstream {
	return newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		body := u.record(r)
		if s, _ := body["stream"].(bool); !s {
			time.Sleep(firstDelay)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"cmpl-d","choices":[{"text":"hello"}],"usage":{"prompt_tokens":20,"completion_tokens":%d}}`, tokens)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		fmt.Fprint(w, "data: {\"id\":\"chat-d\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")
		fl.Flush()
		time.Sleep(firstDelay)
		for i := 0; i < tokens; i++ {
			if hang && i == 2 {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
				return
			}
			fmt.Fprintf(w, "data: {\"id\":\"chat-d\",\"choices\":[{\"delta\":{\"content\":\"t%d\"}}]}\n\n", i)
			fl.Flush()
			time.Sleep(tokenPause)
		}
		fmt.Fprintf(w, "data: {\"id\":\"chat-d\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":%d}}\n\n", tokens)
		fmt.Fprint(w, "data: [DONE]\n\n")
		fl.Flush()
	})
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

type env struct {
	tracer *pdtrace.Tracer
	path   string
	proxy  *Proxy
	srv    *httptest.Server
}

func newEnv(t *testing.T, decoderURL, connector string, opts ...func(*Config)) *env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spans.jsonl")
	tr, err := pdtrace.Open(&pdtrace.Options{
		Exporter:          pdtrace.ExporterConsole,
		ConsolePath:       path,
		ScheduleDelay:     20 * time.Millisecond,
		IgnoreEnvironment: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{DecoderURL: decoderURL, Connector: connector, PrefillerAllow: []string{"*"},
		PrefillTimeout: 5 * time.Second, DecodeHeaderTimeout: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := NewProxy(cfg, tr)
	if err != nil {
		tr.Close(context.Background())
		t.Fatal(err)
	}
	p.logf = t.Logf
	e := &env{tracer: tr, path: path, proxy: p, srv: httptest.NewServer(p)}
	t.Cleanup(func() {
		e.srv.Close()
		p.CloseIdle()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Every request was closed: nothing may be left open.
		if err := tr.Close(ctx); err != nil {
			t.Errorf("tracer close: %v", err)
		}
	})
	return e
}

// spans flushes and reads the exported spans until at least n are there
// (bounded).
func (e *env) spans(t *testing.T, n int) []jsonSpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = e.tracer.Flush(ctx)
		cancel()
		s := readSpans(t, e.path)
		if len(s) >= n || time.Now().After(deadline) {
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func post(t *testing.T, url, path, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func one(t *testing.T, spans []jsonSpan, name string) jsonSpan {
	t.Helper()
	s := byName(spans, name)
	if len(s) != 1 {
		t.Fatalf("want one %s span, got %d", name, len(s))
	}
	return s[0]
}

func boolAttr(s jsonSpan, key string) (bool, bool) {
	v, ok := s.attr(key)
	if !ok || v.BoolValue == nil {
		return false, false
	}
	return *v.BoolValue, true
}

// checkBreakdown verifies the contract's identities on a span.
func checkBreakdown(t *testing.T, s jsonSpan, sequential bool) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, k := range []string{"queue_ms", "prefill_duration_ms", "kv_transfer_overhead_ms", "decode_ttft_ms",
		"true_ttft_ms", "decode_duration_ms", "total_duration_ms", "tpot_ms"} {
		if v, ok := s.float(pfx + k); ok {
			if v < 0 {
				t.Fatalf("%s: negative %s %v", s.Name, k, v)
			}
			m[k] = v
		}
	}
	if sequential {
		sum := m["queue_ms"] + m["prefill_duration_ms"] + m["kv_transfer_overhead_ms"] + m["decode_ttft_ms"]
		if math.Abs(sum-m["true_ttft_ms"]) > 1e-6 {
			t.Fatalf("%s: true_ttft %.6f != %.6f", s.Name, m["true_ttft_ms"], sum)
		}
	}
	return m
}

func TestNixlv2Streaming(t *testing.T) {
	pre, dec := fakePrefill(t), fakeDecode(t, 5, false)
	e := newEnv(t, dec.srv.URL, "nixlv2")

	body := `{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true,` +
		`"stream_options":{"include_usage":true},"max_tokens":50,"temperature":0.7}`
	resp, text := post(t, e.srv.URL, "/v1/chat/completions", body, map[string]string{
		"traceparent": inTrace, "x-request-id": "rid-1", "x-prefiller-host-port": hostPort(pre)})
	if resp.StatusCode != 200 || !strings.Contains(text, "t4") || !strings.HasSuffix(text, "data: [DONE]\n\n") {
		t.Fatalf("status %d body %q", resp.StatusCode, text)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatal("content type")
	}

	// Upstream bodies (docs/upstreams.md).
	pc, dc := pre.got(), dec.got()
	if len(pc) != 1 || len(dc) != 1 {
		t.Fatalf("calls: prefill %d decode %d", len(pc), len(dc))
	}
	pb := pc[0].body
	kv, _ := pb["kv_transfer_params"].(map[string]any)
	if pc[0].path != "/v1/chat/completions" || kv["do_remote_decode"] != true || kv["do_remote_prefill"] != false ||
		pb["stream"] != false || pb["max_tokens"] != 1.0 || pb["max_completion_tokens"] != 1.0 {
		t.Fatalf("prefill body %v", pb)
	}
	for _, k := range []string{"remote_engine_id", "remote_block_ids", "remote_host", "remote_port"} {
		if v, ok := kv[k]; !ok || v != nil {
			t.Fatalf("prefill kv_transfer_params[%s] = %v", k, v)
		}
	}
	if _, ok := pb["stream_options"]; ok || pb["temperature"] != 0.7 {
		t.Fatalf("prefill body %v", pb)
	}
	db := dc[0].body
	dkv, _ := db["kv_transfer_params"].(map[string]any)
	if db["stream"] != true || db["max_tokens"] != 50.0 || dkv["remote_engine_id"] != "eng-1" || dkv["do_remote_prefill"] != true {
		t.Fatalf("decode body %v", db)
	}
	if _, ok := db["stream_options"]; !ok {
		t.Fatal("decode must keep stream_options")
	}

	spans := e.spans(t, 3)
	if len(spans) != 3 {
		t.Fatalf("want 3 spans, got %d", len(spans))
	}
	root := one(t, spans, pfx+"request")
	ps := one(t, spans, pfx+"prefill")
	ds := one(t, spans, pfx+"decode")
	if root.TraceID != inTraceID || root.ParentSpanID != inSpanID || root.Kind != 2 {
		t.Fatalf("root %+v", root)
	}
	if ps.ParentSpanID != root.SpanID || ds.ParentSpanID != root.SpanID {
		t.Fatal("prefill and decode must be children of the request span")
	}
	// Upstreams see traceparents whose parent is their leg's span.
	if pc[0].traceparent != "00-"+inTraceID+"-"+ps.SpanID+"-01" {
		t.Fatalf("prefill traceparent %q, span %s", pc[0].traceparent, ps.SpanID)
	}
	if dc[0].traceparent != "00-"+inTraceID+"-"+ds.SpanID+"-01" {
		t.Fatalf("decode traceparent %q, span %s", dc[0].traceparent, ds.SpanID)
	}
	if pc[0].requestID != "rid-1" || dc[0].requestID != "rid-1" || root.str(pfx+"request_id") != "rid-1" {
		t.Fatal("x-request-id must reach both legs")
	}
	if root.str(pfx+"connector") != "nixlv2" || root.str("gen_ai.request.model") != "m1" ||
		root.str("gen_ai.operation.name") != "chat" || root.str("gen_ai.response.id") != "chat-d" {
		t.Fatalf("root attributes %+v", root.Attributes)
	}
	if v, _ := root.int("gen_ai.usage.output_tokens"); v != 5 {
		t.Fatalf("output tokens %d", v)
	}
	if v, _ := root.int("gen_ai.usage.cache_read.input_tokens"); v != 8 {
		t.Fatalf("cached tokens %d", v)
	}
	if v, _ := root.int("http.response.status_code"); v != 200 {
		t.Fatal("response status")
	}
	if ps.str("server.address") != "127.0.0.1" || ds.str("server.address") != "127.0.0.1" {
		t.Fatal("server.address")
	}
	if root.Status.Code == 2 || ds.Status.Code == 2 {
		t.Fatal("no error expected")
	}
	m := checkBreakdown(t, root, true)
	md := checkBreakdown(t, ds, true)
	for k, v := range m {
		if md[k] != v {
			t.Fatalf("%s not mirrored on decode: %v vs %v", k, v, md[k])
		}
	}
	if m["prefill_duration_ms"] < float64(prefillTime)/1e6 {
		t.Fatalf("prefill %.3f ms < server time", m["prefill_duration_ms"])
	}
	// F is the first chunk with text, after the role-only chunk.
	if m["decode_ttft_ms"] < float64(firstDelay)/1e6 {
		t.Fatalf("decode_ttft %.3f ms: F taken before the first non-empty chunk", m["decode_ttft_ms"])
	}
	if _, ok := m["tpot_ms"]; !ok {
		t.Fatal("tpot missing")
	}
	if b, ok := boolAttr(root, pfx+"disaggregation_enabled"); !ok || !b {
		t.Fatal("disaggregation_enabled")
	}
}

func TestNixlv2NonStreaming(t *testing.T) {
	pre, dec := fakePrefill(t), fakeDecode(t, 7, false)
	e := newEnv(t, dec.srv.URL, "nixlv2")
	resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p","max_tokens":7}`,
		map[string]string{"x-prefiller-host-port": " , " + hostPort(pre)})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q", resp.StatusCode, text)
	}
	// The client gets one body, assembled from decode's stream.
	var got struct {
		ID      string `json:"id"`
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(text), &got); err != nil || got.ID != "chat-d" || len(got.Choices) != 1 ||
		got.Choices[0].Text != "t0t1t2t3t4t5t6" || got.Usage.CompletionTokens != 7 {
		t.Fatalf("assembled body %q (%v)", text, err)
	}
	db := dec.got()[0].body
	so, _ := db["stream_options"].(map[string]any)
	if db["stream"] != true || so["include_usage"] != true {
		t.Fatalf("decode must be asked to stream with usage: %v", db)
	}
	spans := e.spans(t, 3)
	root := one(t, spans, pfx+"request")
	ds := one(t, spans, pfx+"decode")
	if root.str("gen_ai.operation.name") != "text_completion" || root.str("gen_ai.response.id") != "chat-d" {
		t.Fatal("attributes")
	}
	for _, s := range []jsonSpan{root, ds} {
		for key, want := range map[string]bool{"gen_ai.request.stream": false, pfx + "decode.streaming": true,
			pfx + "assembled": true, pfx + "first_token_observed": true} {
			if v, ok := boolAttr(s, key); !ok || v != want {
				t.Fatalf("%s: %s = %v (present %v), want %v", s.Name, key, v, ok, want)
			}
		}
		if _, ok := s.attr(pfx + "passthrough_reason"); ok {
			t.Fatalf("%s: no passthrough_reason expected", s.Name)
		}
	}
	m := checkBreakdown(t, root, true)
	if m["decode_ttft_ms"] < float64(firstDelay)/1e6 {
		t.Fatalf("decode ttft %.3f", m["decode_ttft_ms"])
	}
	if _, ok := m["tpot_ms"]; !ok {
		t.Fatal("tpot_ms: the tokens were observed")
	}
	if v, _ := root.int("gen_ai.usage.output_tokens"); v != 7 {
		t.Fatalf("output tokens %d", v)
	}
	if v, _ := root.int("gen_ai.usage.input_tokens"); v != 20 {
		t.Fatalf("input tokens %d", v)
	}
	if v, _ := root.int("gen_ai.usage.cache_read.input_tokens"); v != 8 {
		t.Fatalf("cached tokens (from prefill) %d", v)
	}
	if pre.got()[0].path != "/v1/completions" {
		t.Fatal("prefill path")
	}
}

func TestDecodeOnly(t *testing.T) {
	dec := fakeDecode(t, 3, false)
	e := newEnv(t, dec.srv.URL, "nixlv2")
	resp, _ := post(t, e.srv.URL, "/v1/chat/completions", `{"model":"m","messages":[],"stream":true}`, nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	spans := e.spans(t, 2)
	if len(spans) != 2 || len(byName(spans, pfx+"prefill")) != 0 {
		t.Fatalf("want request and decode only, got %d", len(spans))
	}
	root := one(t, spans, pfx+"request")
	if b, ok := boolAttr(root, pfx+"disaggregation_enabled"); !ok || b {
		t.Fatal("disaggregation_enabled must be false")
	}
	if root.str(pfx+"reason") == "" {
		t.Fatal("reason")
	}
	if _, ok := root.float(pfx + "queue_ms"); ok {
		t.Fatal("queue_ms must be absent on decode-only")
	}
	if _, ok := root.float(pfx + "true_ttft_ms"); !ok {
		t.Fatal("true_ttft_ms")
	}
	// The decode upstream got the body unchanged.
	if _, ok := dec.got()[0].body["kv_transfer_params"]; ok {
		t.Fatal("decode-only body must not carry kv_transfer_params")
	}
}

func TestPrefillDown(t *testing.T) {
	dec := fakeDecode(t, 3, false)
	e := newEnv(t, dec.srv.URL, "nixlv2")
	resp, _ := post(t, e.srv.URL, "/v1/chat/completions", `{"model":"m","messages":[]}`,
		map[string]string{"x-prefiller-host-port": closedAddr(t)})
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("want 502, got %d", resp.StatusCode)
	}
	if len(dec.got()) != 0 {
		t.Fatal("decode must not be called when prefill fails")
	}
	spans := e.spans(t, 2)
	root := one(t, spans, pfx+"request")
	ps := one(t, spans, pfx+"prefill")
	if len(byName(spans, pfx+"decode")) != 0 {
		t.Fatal("no decode span expected")
	}
	if root.Status.Code != 2 || ps.Status.Code != 2 || ps.str("error.type") != "connection_refused" {
		t.Fatalf("statuses root %d prefill %d (%s)", root.Status.Code, ps.Status.Code, ps.str("error.type"))
	}
	if v, _ := root.int("http.response.status_code"); v != 502 {
		t.Fatal("status attribute")
	}
}

func TestPrefillFallsBackToNextCandidate(t *testing.T) {
	pre, dec := fakePrefill(t), fakeDecode(t, 3, false)
	e := newEnv(t, dec.srv.URL, "nixlv2")
	resp, _ := post(t, e.srv.URL, "/v1/chat/completions", `{"model":"m","messages":[],"stream":true}`,
		map[string]string{"x-prefiller-host-port": closedAddr(t) + "," + hostPort(pre)})
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	spans := e.spans(t, 4)
	pss := byName(spans, pfx+"prefill")
	if len(pss) != 2 {
		t.Fatalf("want 2 prefill attempts, got %d", len(pss))
	}
	var failed, ok int
	for _, s := range pss {
		if s.Status.Code == 2 {
			failed++
		} else {
			ok++
			// A new trace: sampled, random trace id (W3C Level 2).
			if pre.got()[0].traceparent != "00-"+s.TraceID+"-"+s.SpanID+"-03" {
				t.Fatal("the retried prefill's traceparent must name its own span")
			}
		}
	}
	if failed != 1 || ok != 1 {
		t.Fatalf("attempts: %d failed, %d ok", failed, ok)
	}
	root := one(t, spans, pfx+"request")
	// The client got a complete answer: one failed attempt does not fail
	// the request.
	if root.Status.Code == 2 {
		t.Fatal("request failed although the second prefill answered")
	}
	checkBreakdown(t, root, true)
}

func TestDecodeDown(t *testing.T) {
	pre := fakePrefill(t)
	e := newEnv(t, "http://"+closedAddr(t), "nixlv2")
	resp, _ := post(t, e.srv.URL, "/v1/chat/completions", `{"model":"m","messages":[]}`,
		map[string]string{"x-prefiller-host-port": hostPort(pre)})
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("want 502, got %d", resp.StatusCode)
	}
	spans := e.spans(t, 3)
	root := one(t, spans, pfx+"request")
	ds := one(t, spans, pfx+"decode")
	if root.Status.Code != 2 || ds.Status.Code != 2 || ds.str("error.type") != "connection_refused" {
		t.Fatalf("root %d decode %d %q", root.Status.Code, ds.Status.Code, ds.str("error.type"))
	}
	if _, ok := root.float(pfx + "true_ttft_ms"); ok {
		t.Fatal("no first token: true_ttft_ms must be absent")
	}
	if one(t, spans, pfx+"prefill").Status.Code == 2 {
		t.Fatal("prefill succeeded")
	}
}

func TestClientDisconnectMidStream(t *testing.T) {
	pre, dec := fakePrefill(t), fakeDecode(t, 10, true)
	e := newEnv(t, dec.srv.URL, "nixlv2")
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","messages":[],"stream":true}`))
	req.Header.Set("x-prefiller-host-port", hostPort(pre))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for got := 0; got < 2; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended early: %v", err)
		}
		if strings.Contains(line, `"content":"t`) {
			got++
		}
	}
	cancel() // the client goes away mid-stream
	resp.Body.Close()

	spans := e.spans(t, 3)
	if len(spans) != 3 {
		t.Fatalf("want 3 spans, got %d", len(spans))
	}
	root := one(t, spans, pfx+"request")
	ds := one(t, spans, pfx+"decode")
	if root.Status.Code != 2 || root.str("error.type") != "client_disconnected" {
		t.Fatalf("root status %d error.type %q", root.Status.Code, root.str("error.type"))
	}
	if ds.Status.Code != 2 {
		t.Fatal("decode span must end with an error")
	}
	if _, ok := root.float(pfx + "true_ttft_ms"); !ok {
		t.Fatal("first token was forwarded: true_ttft_ms expected")
	}
	st, err := e.tracer.Stats()
	if err != nil || st.RequestsCompleted != 1 {
		t.Fatalf("stats %+v %v", st, err)
	}
	// No goroutine is left behind (bounded wait for the server side).
	e.proxy.CloseIdle()
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Fatalf("goroutines: %d before, %d after", before, n)
	}
}

func TestSglangConcurrent(t *testing.T) {
	pre := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		u.record(r)
		time.Sleep(prefillTime)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"p","choices":[{"text":"x"}]}`)
	})
	dec := fakeDecode(t, 4, false)
	e := newEnv(t, dec.srv.URL, "sglang")
	resp, _ := post(t, e.srv.URL, "/v1/chat/completions", `{"model":"m","messages":[],"stream":true}`,
		map[string]string{"x-prefiller-host-port": hostPort(pre)})
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	pb, db := pre.got()[0].body, dec.got()[0].body
	if pb["bootstrap_host"] != "127.0.0.1" || pb["bootstrap_port"] != 8998.0 || pb["bootstrap_room"] != db["bootstrap_room"] || pb["bootstrap_room"] == nil {
		t.Fatalf("bootstrap fields: %v / %v", pb, db)
	}
	spans := e.spans(t, 3)
	root := one(t, spans, pfx+"request")
	if b, ok := boolAttr(root, pfx+"concurrent_pd"); !ok || !b {
		t.Fatal("concurrent_pd")
	}
	if _, ok := root.float(pfx + "kv_transfer_overhead_ms"); ok {
		t.Fatal("kv_transfer_overhead_ms must be absent")
	}
	m := checkBreakdown(t, root, false)
	if math.Abs(m["true_ttft_ms"]-(m["queue_ms"]+m["decode_ttft_ms"])) > 1e-6 {
		t.Fatalf("concurrent: true_ttft %v != queue + decode_ttft %v", m["true_ttft_ms"], m["queue_ms"]+m["decode_ttft_ms"])
	}
	ps := one(t, spans, pfx+"prefill")
	// A new trace: sampled, random trace id (W3C Level 2).
	if pre.got()[0].traceparent != "00-"+ps.TraceID+"-"+ps.SpanID+"-03" {
		t.Fatal("prefill traceparent")
	}
}

func TestHealthModelsAndBadInput(t *testing.T) {
	dec := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"m"}]}`)
	})
	e := newEnv(t, dec.srv.URL, "nixlv2")
	c := &http.Client{Timeout: 5 * time.Second}
	for path, want := range map[string]string{"/health": "OK", "/v1/models": `"id":"m"`} {
		resp, err := c.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, b)
		}
	}
	resp, _ := post(t, e.srv.URL, "/v1/completions", `not json`, nil)
	if resp.StatusCode != 400 {
		t.Fatal(resp.StatusCode)
	}
	spans := e.spans(t, 1)
	root := one(t, spans, pfx+"request")
	if root.str("error.type") != "invalid_request" {
		t.Fatal("invalid request must be recorded")
	}
}
