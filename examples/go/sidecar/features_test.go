package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiErr decodes a JSON error answer; the test fails when it is not one.
func apiErr(t *testing.T, resp *http.Response, text string) apiError {
	t.Helper()
	var e apiError
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
		json.Unmarshal([]byte(text), &e) != nil || e.Error.Message == "" || e.Error.Code != resp.StatusCode {
		t.Fatalf("not a JSON error: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), text)
	}
	return e
}

func TestPassthroughKeepsRequestAndSaysWhy(t *testing.T) {
	cases := []struct {
		body, reason string
		disable      bool
	}{
		{`{"model":"m","prompt":"p","max_tokens":3,"n":2}`, "n>1", false},
		{`{"model":"m","prompt":"p","max_tokens":3,"best_of":2}`, "best_of", false},
		{`{"model":"m","prompt":"p","max_tokens":3,"logprobs":1}`, "logprobs", false},
		{`{"model":"m","prompt":"p","max_tokens":3}`, "disabled", true},
	}
	for _, c := range cases {
		t.Run(c.reason, func(t *testing.T) {
			dec := fakeDecode(t, 3, false)
			e := newEnv(t, dec.srv.URL, "nixlv2", func(cfg *Config) { cfg.NoAssemble = c.disable })
			resp, text := post(t, e.srv.URL, "/v1/completions", c.body, nil)
			if resp.StatusCode != 200 || !strings.Contains(text, "hello") {
				t.Fatalf("%d %q", resp.StatusCode, text)
			}
			db := dec.got()[0].body
			if _, ok := db["stream"]; ok {
				t.Fatalf("a passed-through request goes to decode unchanged: %v", db)
			}
			spans := e.spans(t, 2)
			for _, s := range []jsonSpan{one(t, spans, pfx+"request"), one(t, spans, pfx+"decode")} {
				if s.str(pfx+"passthrough_reason") != c.reason {
					t.Fatalf("%s: passthrough_reason %q", s.Name, s.str(pfx+"passthrough_reason"))
				}
				for key, want := range map[string]bool{pfx + "assembled": false, pfx + "first_token_observed": false,
					pfx + "decode.streaming": false, "gen_ai.request.stream": false} {
					if v, ok := boolAttr(s, key); !ok || v != want {
						t.Fatalf("%s: %s = %v (present %v)", s.Name, key, v, ok)
					}
				}
				for _, k := range []string{"true_ttft_ms", "decode_ttft_ms", "tpot_ms"} {
					if v, ok := s.float(pfx + k); ok {
						t.Fatalf("%s: %s = %v, want absent (not observed)", s.Name, k, v)
					}
				}
			}
			root := one(t, spans, pfx+"request")
			if v, _ := root.int("gen_ai.usage.output_tokens"); v != 3 {
				t.Fatalf("output tokens from the body's usage: %d", v)
			}
		})
	}
}

// A streaming client that did not ask for usage gets none, but the spans
// still have the token counts: the sidecar asks decode for usage and
// keeps that chunk for itself.
func TestStreamWithoutUsageStillCounted(t *testing.T) {
	dec := fakeDecode(t, 4, false)
	e := newEnv(t, dec.srv.URL, "nixlv2")
	resp, text := post(t, e.srv.URL, "/v1/chat/completions", `{"model":"m","messages":[],"stream":true}`, nil)
	if resp.StatusCode != 200 || strings.Contains(text, `"usage"`) || !strings.HasSuffix(text, "data: [DONE]\n\n") {
		t.Fatalf("%d %q", resp.StatusCode, text)
	}
	if so, _ := dec.got()[0].body["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Fatal("decode must be asked for usage")
	}
	root := one(t, e.spans(t, 2), pfx+"request")
	if v, _ := root.int("gen_ai.usage.input_tokens"); v != 20 {
		t.Fatalf("input tokens %d", v)
	}
	if v, _ := root.int("gen_ai.usage.output_tokens"); v != 4 {
		t.Fatalf("output tokens %d", v)
	}
	if b, ok := boolAttr(root, pfx+"first_token_observed"); !ok || !b {
		t.Fatal("first_token_observed")
	}
}

func TestUpstreamEndpointURLs(t *testing.T) {
	pre, dec := fakePrefill(t), fakeDecode(t, 2, false)
	// Both given as full endpoint URLs, the way the seed guide writes
	// them; a chat request goes to the chat path of the same servers.
	e := newEnv(t, dec.srv.URL+"/v1/completions", "nixlv2", func(c *Config) {
		c.PrefillURL = pre.srv.URL + "/v1/completions"
		c.PrefillerAllow = nil
	})
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		resp, text := post(t, e.srv.URL, path, `{"model":"m","messages":[],"prompt":"x","stream":true}`, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, text)
		}
	}
	pc, dc := pre.got(), dec.got()
	if len(pc) != 2 || len(dc) != 2 || pc[0].path != "/v1/chat/completions" || dc[0].path != "/v1/chat/completions" ||
		pc[1].path != "/v1/completions" || dc[1].path != "/v1/completions" {
		t.Fatalf("paths: prefill %v decode %v", pc, dc)
	}
	for _, bad := range []string{"ftp://h:1", "http://", "http://h:1/v1/completions?x=1", "http://u@h:1"} {
		if _, err := parseUpstream(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	for in, want := range map[string]string{
		"http://h:1":                     "http://h:1",
		"http://h:1/":                    "http://h:1",
		"http://h:1/v1/chat/completions": "http://h:1",
		"https://h/x/v1/completions/":    "https://h/x",
	} {
		if got, err := parseUpstream(in); err != nil || got != want {
			t.Fatalf("%q: %q %v, want %q", in, got, err, want)
		}
	}
}

// logLines collects what the proxy logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logLines) with(sub string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			out = append(out, s)
		}
	}
	return out
}

func TestNotFoundUpstreamLoggedOnce(t *testing.T) {
	dec := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		u.record(r)
		http.NotFound(w, r)
	})
	e := newEnv(t, dec.srv.URL+"/wrong", "nixlv2")
	var logs logLines
	e.proxy.logf = logs.logf
	for i := 0; i < 3; i++ {
		resp, _ := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`, nil)
		if resp.StatusCode != 404 {
			t.Fatalf("want the upstream's 404, got %d", resp.StatusCode)
		}
	}
	got := logs.with("404")
	if len(got) != 1 || !strings.Contains(got[0], dec.srv.URL+"/wrong/v1/completions") {
		t.Fatalf("want one 404 line naming the URL called, got %q", got)
	}
	root := byName(e.spans(t, 6), pfx+"request")[0]
	if root.Status.Code != 2 {
		t.Fatal("the client got an error: the request fails")
	}
}

func TestAccessLog(t *testing.T) {
	for _, on := range []bool{true, false} {
		dec := fakeDecode(t, 3, false)
		e := newEnv(t, dec.srv.URL, "nixlv2", func(c *Config) { c.AccessLog = on })
		var logs logLines
		e.proxy.logf = logs.logf
		post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`, nil)
		post(t, e.srv.URL, "/nope", `{}`, nil)
		got := logs.with("access:")
		if !on {
			if len(got) != 0 {
				t.Fatalf("access log off, got %q", got)
			}
			continue
		}
		if len(got) != 2 {
			t.Fatalf("want 2 lines, got %q", got)
		}
		var ttft, total float64
		if n, err := fmt.Sscanf(got[0], `access: POST "/v1/completions" 200 ttft_ms=%g total_ms=%g`, &ttft, &total); n != 2 || err != nil ||
			ttft < float64(firstDelay)/1e6 || total < ttft {
			t.Fatalf("line %q: ttft %v total %v (%v)", got[0], ttft, total, err)
		}
		if !strings.HasPrefix(got[1], `access: POST "/nope" 404 ttft_ms=- total_ms=`) {
			t.Fatalf("line %q", got[1])
		}
	}
}

func TestRateLimitAndMaxConcurrent(t *testing.T) {
	release := make(chan struct{})
	slow := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		u.record(r)
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"x","choices":[{"text":"a"}]}`)
	})
	e := newEnv(t, slow.srv.URL, "nixlv2", func(c *Config) {
		c.MaxConcurrent, c.QueueTimeout, c.NoAssemble = 1, 100*time.Millisecond, true
	})
	first := make(chan int, 1)
	go func() {
		resp, _ := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`, nil)
		first <- resp.StatusCode
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(slow.got()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || apiErr(t, resp, text).Error.Type != "overloaded" {
		t.Fatalf("second request in flight: %d %q", resp.StatusCode, text)
	}
	close(release)
	if st := <-first; st != 200 {
		t.Fatalf("first request %d", st)
	}

	dec := fakeDecode(t, 1, false)
	r := newEnv(t, dec.srv.URL, "nixlv2", func(c *Config) {
		c.RateLimit, c.RateBurst, c.QueueTimeout = 2, 1, 10*time.Millisecond
	})
	codes := map[int]int{}
	for i := 0; i < 3; i++ {
		resp, _ := post(t, r.srv.URL, "/v1/completions", `{"model":"m","prompt":"p","stream":true}`, nil)
		codes[resp.StatusCode]++
	}
	if codes[200] < 1 || codes[http.StatusTooManyRequests] < 1 {
		t.Fatalf("rate limit 2/s, 3 requests at once: %v", codes)
	}
	// A longer queue timeout waits for the slot instead.
	w := newEnv(t, dec.srv.URL, "nixlv2", func(c *Config) {
		c.RateLimit, c.RateBurst, c.QueueTimeout = 20, 1, 2*time.Second
	})
	start := time.Now()
	for i := 0; i < 3; i++ {
		if resp, _ := post(t, w.srv.URL, "/v1/completions", `{"model":"m","prompt":"p","stream":true}`, nil); resp.StatusCode != 200 {
			t.Fatalf("queued request %d", resp.StatusCode)
		}
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Fatalf("3 requests at 20/s took %v", d)
	}
}

func TestPrefillerHeaderChecked(t *testing.T) {
	// Another local listener that must never be reached.
	admin := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) { u.record(r) })
	pre, dec := fakePrefill(t), fakeDecode(t, 2, false)
	e := newEnv(t, dec.srv.URL, "nixlv2", func(c *Config) { c.PrefillerAllow = []string{hostPort(pre)} })
	for hdr, want := range map[string]int{
		admin.srv.URL + "/internal/admin?x=1": 400,
		hostPort(admin) + "/internal/admin":   400,
		"user@" + hostPort(admin):             400,
		"127.0.0.1:0":                         400,
		"127.0.0.1:99999":                     400,
		"127.0.0.1":                           400,
		hostPort(admin):                       403,
		hostPort(pre) + "," + hostPort(admin): 403,
	} {
		resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`,
			map[string]string{"x-prefiller-host-port": hdr})
		if resp.StatusCode != want {
			t.Fatalf("%q: %d %q, want %d", hdr, resp.StatusCode, text, want)
		}
		apiErr(t, resp, text)
	}
	if n := len(admin.got()); n != 0 || len(pre.got()) != 0 || len(dec.got()) != 0 {
		t.Fatalf("a refused request reached an upstream (admin %d)", n)
	}
	resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`,
		map[string]string{"x-prefiller-host-port": hostPort(pre)})
	if resp.StatusCode != 200 {
		t.Fatalf("allowed prefiller: %d %q", resp.StatusCode, text)
	}
	roots := byName(e.spans(t, 11), pfx+"request")
	forbidden := 0
	for _, r := range roots {
		if r.str("error.type") == "prefiller_not_allowed" {
			forbidden++
		}
	}
	if forbidden != 2 {
		t.Fatalf("want 2 refused requests recorded, got %d", forbidden)
	}
	if _, err := newAllowlist([]string{"http://x:1"}); err == nil {
		t.Fatal("a URL in the allowlist must be refused")
	}
}

func TestBadBodies(t *testing.T) {
	dec := fakeDecode(t, 2, false)
	e := newEnv(t, dec.srv.URL, "nixlv2", func(c *Config) {
		c.MaxBodyBytes, c.BodyReadTimeout = 1024, 200*time.Millisecond
	})
	for body, want := range map[string]int{
		`{"model":"m","prompt":"p","stream":"yes"}`: 400,
		`{"model":"m","prompt":"p","stream":1}`:     400,
		`[1,2]`:                                     400,
		`{"model":"m"} {}`:                          400,
		`{"model":"m","prompt":"` + strings.Repeat("x", 2000) + `"}`: 413,
	} {
		resp, text := post(t, e.srv.URL, "/v1/completions", body, nil)
		if resp.StatusCode != want {
			t.Fatalf("%.40q: %d %q, want %d", body, resp.StatusCode, text, want)
		}
		apiErr(t, resp, text)
	}
	// A body sent in chunks without a length, over the limit: 413.
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 40; i++ {
			if _, err := pw.Write([]byte(strings.Repeat("y", 100))); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/completions", pr)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked body over the limit: %d %q", resp.StatusCode, b)
	}
	// A body that stalls: 408 after the read timeout.
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(e.srv.URL, "http://"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	start := time.Now()
	sr, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("stalled body: %v", err)
	}
	sb, _ := io.ReadAll(sr.Body)
	if sr.StatusCode != http.StatusRequestTimeout || time.Since(start) > 3*time.Second {
		t.Fatalf("stalled body: %d %q after %v", sr.StatusCode, sb, time.Since(start))
	}
	apiErr(t, sr, string(sb))
	if len(dec.got()) != 0 {
		t.Fatal("a refused body reached decode")
	}
}

func TestPrefillAnswerNotAnObject(t *testing.T) {
	for _, answer := range []string{`[1,2,3]`, `"text"`, `null`, `not json`} {
		pre := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
			u.record(r)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, answer)
		})
		dec := fakeDecode(t, 2, false)
		e := newEnv(t, dec.srv.URL, "nixlv2")
		resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`,
			map[string]string{"x-prefiller-host-port": hostPort(pre)})
		if resp.StatusCode != http.StatusBadGateway || apiErr(t, resp, text).Error.Type != "invalid_response" {
			t.Fatalf("%q: %d %q", answer, resp.StatusCode, text)
		}
		if len(dec.got()) != 0 {
			t.Fatal("decode called after a bad prefill answer")
		}
		spans := e.spans(t, 2)
		if ps := one(t, spans, pfx+"prefill"); ps.Status.Code != 2 || ps.str("error.type") != "invalid_response" {
			t.Fatalf("prefill span %d %q", ps.Status.Code, ps.str("error.type"))
		}
	}
}

// lmcache sends the client's body, stream included, to prefill: a
// streamed prefill answer is read as a stream, its usage kept.
func TestStreamedPrefillAnswer(t *testing.T) {
	pre := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"id\":\"p\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n")
		fmt.Fprint(w, "data: {\"id\":\"p\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":16}}}\n\n")
		fmt.Fprint(w, "data: [DONE]\n\n")
	})
	dec := fakeDecode(t, 3, false)
	e := newEnv(t, dec.srv.URL, "lmcache")
	resp, text := post(t, e.srv.URL, "/v1/chat/completions", `{"model":"m","messages":[],"stream":true}`,
		map[string]string{"x-prefiller-host-port": hostPort(pre)})
	if resp.StatusCode != 200 {
		t.Fatalf("%d %q", resp.StatusCode, text)
	}
	if pre.got()[0].body["stream"] != true {
		t.Fatal("lmcache prefill keeps the client's stream")
	}
	spans := e.spans(t, 3)
	root := one(t, spans, pfx+"request")
	if root.Status.Code == 2 || one(t, spans, pfx+"prefill").Status.Code == 2 {
		t.Fatal("no error expected")
	}
	if v, _ := root.int("gen_ai.usage.cache_read.input_tokens"); v != 16 {
		t.Fatalf("cached tokens from the streamed prefill answer: %d", v)
	}
}

// sglang: prefill and decode run at once; a failed prefill fails its own
// span, and the request only if the client did not get its answer.
func TestSglangLegStatusesFollowTheirOwnOutcome(t *testing.T) {
	pre := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		fmt.Fprint(w, `{"error":{"message":"busy"}}`)
	})
	dec := fakeDecode(t, 3, false)
	e := newEnv(t, dec.srv.URL, "sglang")
	resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p","max_tokens":3}`,
		map[string]string{"x-prefiller-host-port": hostPort(pre)})
	if resp.StatusCode != 200 || !strings.Contains(text, "t0t1t2") {
		t.Fatalf("%d %q", resp.StatusCode, text)
	}
	spans := e.spans(t, 3)
	ps, root := one(t, spans, pfx+"prefill"), one(t, spans, pfx+"request")
	if ps.Status.Code != 2 || ps.str("error.type") != "http_503" {
		t.Fatalf("prefill span %d %q", ps.Status.Code, ps.str("error.type"))
	}
	if root.Status.Code == 2 || one(t, spans, pfx+"decode").Status.Code == 2 {
		t.Fatal("the client got a complete answer: request and decode do not fail")
	}
	if v, _ := root.int(pfx + "prefill.status_code"); v != 503 {
		t.Fatalf("prefill.status_code %d", v)
	}
}

// A decode stream that breaks off before [DONE] fails the request, also
// when the client asked for a non-streamed answer.
func TestDecodeStreamCutBeforeDone(t *testing.T) {
	dec := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"id\":\"d\",\"choices\":[{\"text\":\"a\"}]}\n\n")
	})
	e := newEnv(t, dec.srv.URL, "nixlv2")
	resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`, nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("%d %q", resp.StatusCode, text)
	}
	apiErr(t, resp, text)
	spans := e.spans(t, 2)
	if one(t, spans, pfx+"request").Status.Code != 2 || one(t, spans, pfx+"decode").Status.Code != 2 {
		t.Fatal("an incomplete answer fails the request and the decode span")
	}
}

// Every line of a repeated header is read: tracestate members from two
// lines are both passed on.
func TestRepeatedTraceHeaders(t *testing.T) {
	dec := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
		u.record(r)
		u.mu.Lock()
		u.calls[len(u.calls)-1].requestID = r.Header.Get("tracestate")
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"id\":\"d\",\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n")
	})
	e := newEnv(t, dec.srv.URL, "nixlv2")
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"p","stream":true}`))
	req.Header.Add("traceparent", inTrace)
	req.Header.Add("tracestate", "a=1")
	req.Header.Add("tracestate", "b=2")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	ts := dec.got()[0].requestID
	if !strings.Contains(ts, "a=1") || !strings.Contains(ts, "b=2") {
		t.Fatalf("tracestate passed on: %q", ts)
	}
	root := one(t, e.spans(t, 2), pfx+"request")
	if root.TraceID != inTraceID {
		t.Fatal("inbound trace not continued")
	}
}

// Two traceparent lines are one invalid value (W3C): the request starts a
// new trace rather than continue the first line's.
func TestRepeatedTraceparentStartsNewTrace(t *testing.T) {
	dec := fakeDecode(t, 2, false)
	e := newEnv(t, dec.srv.URL, "nixlv2")
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"p","stream":true}`))
	req.Header.Add("traceparent", inTrace)
	req.Header.Add("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	root := one(t, e.spans(t, 2), pfx+"request")
	if root.TraceID == inTraceID || root.TraceID == "0af7651916cd43dd8448eb211c80319c" || root.ParentSpanID != "" {
		t.Fatalf("repeated traceparent continued a trace: %s parent %q", root.TraceID, root.ParentSpanID)
	}
}
