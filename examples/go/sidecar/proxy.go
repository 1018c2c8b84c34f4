package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
)

const (
	attrPrefix       = "llm_d.pd_proxy."
	prefillerHeader  = "X-Prefiller-Host-Port"
	maxBodyBytes     = 32 << 20
	maxPrefillAnswer = 8 << 20
)

// Config is the sidecar's configuration.
type Config struct {
	DecoderURL    string // base URL of the decode server, e.g. http://127.0.0.1:8200
	Connector     string // nixlv2, lmcache, shared-storage or sglang
	BootstrapPort int    // sglang bootstrap port on the prefill host
	// PrefillTimeout bounds one prefill request (the whole exchange).
	PrefillTimeout time.Duration
	// DecodeHeaderTimeout bounds the wait for the decode response headers;
	// the body is bounded by the client's own context.
	DecodeHeaderTimeout time.Duration
}

// Proxy is the P/D routing sidecar: an OpenAI-compatible front that sends
// the prefill to the host named in x-prefiller-host-port and the decode to
// its local decoder, traced with libpdtrace.
type Proxy struct {
	cfg     Config
	tracer  *pdtrace.Tracer
	decoder *url.URL
	client  *http.Client
	logf    func(format string, args ...any)
}

// NewProxy builds the handler. The caller owns the tracer.
func NewProxy(cfg Config, tracer *pdtrace.Tracer) (*Proxy, error) {
	u, err := url.Parse(cfg.DecoderURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("bad decoder URL %q", cfg.DecoderURL)
	}
	switch cfg.Connector {
	case "nixlv2", "lmcache", "shared-storage", "sglang":
	default:
		return nil, fmt.Errorf("unknown connector %q", cfg.Connector)
	}
	if cfg.BootstrapPort == 0 {
		cfg.BootstrapPort = 8998
	}
	if cfg.PrefillTimeout == 0 {
		cfg.PrefillTimeout = 60 * time.Second
	}
	if cfg.DecodeHeaderTimeout == 0 {
		cfg.DecodeHeaderTimeout = 60 * time.Second
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.DecodeHeaderTimeout,
	}
	return &Proxy{
		cfg:     cfg,
		tracer:  tracer,
		decoder: u,
		client:  &http.Client{Transport: tr},
		logf:    log.Printf,
	}, nil
}

// CloseIdle closes idle upstream connections.
func (p *Proxy) CloseIdle() { p.client.CloseIdleConnections() }

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/health":
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "OK")
	case "/metrics":
		p.serveMetrics(w, r)
	case "/v1/models":
		p.passThrough(w, r)
	case "/v1/completions", "/v1/chat/completions":
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p.serveInference(w, r)
	default:
		http.NotFound(w, r)
	}
}

// serveMetrics serves the tracer's Prometheus metrics: true TTFT and its
// stages per connector, model and mode.
func (p *Proxy) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	text, err := p.tracer.Metrics()
	if err != nil {
		http.Error(w, "metrics unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", pdtrace.MetricsContentType)
	_, _ = io.WriteString(w, text)
}

func (p *Proxy) target(path string) string {
	return strings.TrimRight(p.decoder.String(), "/") + path
}

// passThrough forwards a request to the decoder without tracing.
func (p *Proxy) passThrough(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.PrefillTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, r.Method, p.target(r.URL.Path), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, "decoder unavailable", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// traced serialises calls on one Request: in the concurrent flow the
// prefill goroutine and the decode path both record on it.
type traced struct {
	mu  sync.Mutex
	req *pdtrace.Request
}

func (t *traced) do(f func(r *pdtrace.Request) error) {
	t.mu.Lock()
	err := f(t.req)
	t.mu.Unlock()
	if err != nil {
		log.Printf("pdtrace: %v", err)
	}
}

// usage collects the token counts seen on both legs.
type usage struct {
	input, output, cached int64
}

type openAIUsage struct {
	PromptTokens        *int64 `json:"prompt_tokens"`
	CompletionTokens    *int64 `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens *int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func (u *usage) merge(o *openAIUsage) {
	if o == nil {
		return
	}
	if o.PromptTokens != nil {
		u.input = *o.PromptTokens
	}
	if o.CompletionTokens != nil {
		u.output = *o.CompletionTokens
	}
	if o.PromptTokensDetails != nil && o.PromptTokensDetails.CachedTokens != nil {
		u.cached = *o.PromptTokensDetails.CachedTokens
	}
}

func (p *Proxy) serveInference(w http.ResponseWriter, r *http.Request) {
	arrival := pdtrace.Now()
	raw, rerr := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	var body map[string]any
	bad := ""
	switch {
	case rerr != nil || len(raw) > maxBodyBytes:
		bad = "cannot read the request body"
	case json.Unmarshal(raw, &body) != nil:
		bad = "the body is not a JSON object"
	}
	// The request is begun once the body is read (A is still the
	// arrival), so that its connector, model and attributes go with the
	// begin in one call.
	var model string
	var attrs []pdtrace.Attr
	stream := false
	if bad == "" {
		stream, _ = body["stream"].(bool)
		op := "text_completion"
		if r.URL.Path == "/v1/chat/completions" {
			op = "chat"
		}
		model, _ = body["model"].(string)
		attrs = append(make([]pdtrace.Attr, 0, 4),
			pdtrace.String("gen_ai.operation.name", op),
			pdtrace.Bool("gen_ai.request.stream", stream),
			pdtrace.Bool(attrPrefix+"decode.streaming", stream))
		if mt, ok := maxTokens(body); ok {
			attrs = append(attrs, pdtrace.Int("gen_ai.request.max_tokens", mt))
		}
	}
	req, err := p.tracer.BeginWith(r, arrival, p.cfg.Connector, model, attrs...)
	if req == nil {
		// Tracing is unavailable (tracer closed): serve untraced would
		// need a second code path; refuse instead.
		http.Error(w, "tracing unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		p.logf("pdtrace: a setting of the request was refused: %v", err)
	}
	defer req.Close() // ends an unfinished request as abandoned
	t := &traced{req: req}

	fail := func(status int, errType, msg string) {
		t.do(func(q *pdtrace.Request) error {
			_, err := q.Finish(0, &pdtrace.Outcome{Status: status, ErrorType: errType})
			return err
		})
		http.Error(w, msg, status)
	}
	if bad != "" {
		fail(http.StatusBadRequest, "invalid_request", bad)
		return
	}

	candidates := prefillers(r.Header)
	var u usage
	u.input, u.output, u.cached = -1, -1, -1
	decodeBody := raw

	switch {
	case len(candidates) == 0:
		t.do(func(q *pdtrace.Request) error { return q.SetMode(pdtrace.ModeDecodeOnly, "no prefiller") })
	case p.cfg.Connector == "sglang":
		p.serveConcurrent(w, r, t, body, candidates[0], stream, &u)
		return
	default:
		kv, status, errType, ok := p.prefill(r.Context(), t, body, candidates, r.URL.Path, &u)
		if !ok {
			if status == 0 || status >= 500 {
				status = http.StatusBadGateway
			}
			fail(status, errType, "prefill failed")
			return
		}
		if p.cfg.Connector == "nixlv2" {
			decodeBody, err = withKV(body, kv)
			if err != nil {
				fail(http.StatusInternalServerError, "internal", "cannot build the decode request")
				return
			}
		}
	}
	p.decode(w, r, t, decodeBody, stream, &u, 0, nil)
}

// maxTokens returns max_completion_tokens or max_tokens.
func maxTokens(body map[string]any) (int64, bool) {
	for _, k := range []string{"max_completion_tokens", "max_tokens"} {
		if v, ok := body[k].(float64); ok {
			return int64(v), true
		}
	}
	return 0, false
}

// prefillers lists the candidates of x-prefiller-host-port (one header or
// several, each comma-separated).
func prefillers(h http.Header) []string {
	var out []string
	for _, v := range h.Values(prefillerHeader) {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" {
				out = append(out, c)
			}
		}
	}
	return out
}

func prefillURL(hostport, path string) string {
	if strings.Contains(hostport, "://") {
		return strings.TrimRight(hostport, "/") + path
	}
	return "http://" + hostport + path
}

func cloneBody(body map[string]any) map[string]any {
	c := make(map[string]any, len(body)+4)
	for k, v := range body {
		c[k] = v
	}
	return c
}

// prefillBody is docs/upstreams.md: the client's body with
// kv_transfer_params asking for a remote decode (nixlv2), no streaming and
// a single token.
func (p *Proxy) prefillBody(body map[string]any) ([]byte, error) {
	c := cloneBody(body)
	if p.cfg.Connector == "nixlv2" {
		c["kv_transfer_params"] = map[string]any{
			"do_remote_decode":  true,
			"do_remote_prefill": false,
			"remote_engine_id":  nil,
			"remote_block_ids":  nil,
			"remote_host":       nil,
			"remote_port":       nil,
		}
		c["stream"] = false
		delete(c, "stream_options")
		c["max_completion_tokens"] = 1
	}
	c["max_tokens"] = 1
	return json.Marshal(c)
}

func withKV(body map[string]any, kv json.RawMessage) ([]byte, error) {
	c := cloneBody(body)
	if len(kv) != 0 {
		c["kv_transfer_params"] = kv
	}
	return json.Marshal(c)
}

// errorType names a transport failure for error.type.
func errorType(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection_refused"
	}
	return "transport_error"
}

// prefill runs the prefill leg against each candidate in turn until one
// answers; every attempt is its own span. It returns the
// kv_transfer_params of the answer.
func (p *Proxy) prefill(ctx context.Context, t *traced, body map[string]any, candidates []string, path string, u *usage) (json.RawMessage, int, string, bool) {
	pbody, err := p.prefillBody(body)
	if err != nil {
		return nil, http.StatusInternalServerError, "internal", false
	}
	status, errType := 0, "transport_error"
	for _, target := range candidates {
		kv, st, et, ok, retry := p.prefillOnce(ctx, t, pbody, target, path, u)
		if ok {
			return kv, st, "", true
		}
		status, errType = st, et
		if !retry || ctx.Err() != nil {
			break
		}
	}
	return nil, status, errType, false
}

func (p *Proxy) prefillOnce(ctx context.Context, t *traced, pbody []byte, target, path string, u *usage) (kv json.RawMessage, status int, errType string, ok, retry bool) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PrefillTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, prefillURL(target, path), bytes.NewReader(pbody))
	if err != nil {
		t.do(func(q *pdtrace.Request) error { return q.SetLeg(pdtrace.LegPrefill, target, 0, "bad_target") })
		return nil, http.StatusBadGateway, "bad_target", false, true
	}
	out.Header.Set("Content-Type", "application/json")
	t.do(func(q *pdtrace.Request) error { return q.SendPrefill(out.Header, 0) })
	resp, err := p.client.Do(out)
	if err != nil {
		et := errorType(err)
		t.do(func(q *pdtrace.Request) error { return q.PrefillResult(0, target, 0, et) })
		return nil, 0, et, false, true
	}
	answer, rerr := io.ReadAll(io.LimitReader(resp.Body, maxPrefillAnswer))
	resp.Body.Close()
	et := ""
	switch {
	case rerr != nil:
		et = errorType(rerr)
	case resp.StatusCode >= 500:
		et = fmt.Sprintf("http_%d", resp.StatusCode)
	}
	t.do(func(q *pdtrace.Request) error { return q.PrefillResult(0, target, resp.StatusCode, et) })
	if et != "" || resp.StatusCode >= 300 {
		if et == "" {
			et = fmt.Sprintf("http_%d", resp.StatusCode)
		}
		return nil, resp.StatusCode, et, false, resp.StatusCode >= 500
	}
	var pr struct {
		KV    json.RawMessage `json:"kv_transfer_params"`
		Usage *openAIUsage    `json:"usage"`
	}
	if err := json.Unmarshal(answer, &pr); err != nil {
		return nil, http.StatusBadGateway, "bad_prefill_response", false, false
	}
	if pr.Usage != nil && pr.Usage.PromptTokensDetails != nil && pr.Usage.PromptTokensDetails.CachedTokens != nil {
		u.cached = *pr.Usage.PromptTokensDetails.CachedTokens
	}
	return pr.KV, resp.StatusCode, "", true, false
}

// serveConcurrent is the sglang flow: the same body, with the bootstrap
// fields, goes to prefill and decode at once.
func (p *Proxy) serveConcurrent(w http.ResponseWriter, r *http.Request, t *traced, body map[string]any, target string, stream bool, u *usage) {
	host := target
	if h, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(target, "http://"), "https://")); err == nil {
		host = h
	}
	c := cloneBody(body)
	c["bootstrap_host"] = host
	c["bootstrap_port"] = p.cfg.BootstrapPort
	c["bootstrap_room"] = rand.Int64N(1 << 62)
	both, err := json.Marshal(c)
	if err != nil {
		http.Error(w, "cannot build the request", http.StatusInternalServerError)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	pctx, pcancel := context.WithTimeout(ctx, p.cfg.PrefillTimeout)
	defer pcancel()
	out, err := http.NewRequestWithContext(pctx, http.MethodPost, prefillURL(target, r.URL.Path), bytes.NewReader(both))
	if err != nil {
		http.Error(w, "bad prefill target", http.StatusBadRequest)
		return
	}
	out.Header.Set("Content-Type", "application/json")
	// Both legs start at the same instant.
	start := pdtrace.Now()
	t.do(func(q *pdtrace.Request) error {
		if err := q.SetMode(pdtrace.ModeConcurrent, ""); err != nil {
			return err
		}
		if err := q.InjectPrefill(out.Header); err != nil {
			return err
		}
		return q.PrefillSent(start)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := p.client.Do(out)
		status, et := 0, ""
		if err != nil {
			et = errorType(err)
		} else {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxPrefillAnswer))
			resp.Body.Close()
			status = resp.StatusCode
			if status >= 500 {
				et = fmt.Sprintf("http_%d", status)
			}
		}
		t.do(func(q *pdtrace.Request) error {
			if err := q.PrefillDone(0); err != nil {
				return err
			}
			return q.SetLeg(pdtrace.LegPrefill, target, status, et)
		})
	}()
	// The request ends after the prefill outcome is recorded; the prefill
	// is bounded by PrefillTimeout and by the client's context.
	p.decode(w, r.WithContext(ctx), t, both, stream, u, start, func() { <-done })
}

// decode runs the decode leg and streams its answer to the client, then
// ends the request. sentAt is mark Ds (0: now); beforeEnd, if not nil,
// runs before the request is ended.
func (p *Proxy) decode(w http.ResponseWriter, r *http.Request, t *traced, dbody []byte, stream bool, u *usage, sentAt pdtrace.Time, beforeEnd func()) {
	target := p.decoder.Host
	// end records the decode leg's outcome (when o has one), the usage and
	// the response, and ends the request, in one call.
	end := func(status int, errType string, o pdtrace.Outcome) {
		if beforeEnd != nil {
			beforeEnd()
		}
		o.Status, o.ErrorType = status, errType
		o.Usage, o.InputTokens, o.OutputTokens, o.CachedInputTokens = true, u.input, u.output, u.cached
		t.do(func(q *pdtrace.Request) error {
			_, err := q.Finish(0, &o)
			return err
		})
	}
	out, err := http.NewRequestWithContext(r.Context(), http.MethodPost, p.target(r.URL.Path), bytes.NewReader(dbody))
	if err != nil {
		end(http.StatusInternalServerError, "internal", pdtrace.Outcome{})
		http.Error(w, "cannot build the decode request", http.StatusInternalServerError)
		return
	}
	out.Header.Set("Content-Type", "application/json")
	if a := r.Header.Get("Authorization"); a != "" {
		out.Header.Set("Authorization", a)
	}
	t.do(func(q *pdtrace.Request) error { return q.SendDecode(out.Header, sentAt) })
	resp, err := p.client.Do(out)
	if err != nil {
		et := errorType(err)
		end(http.StatusBadGateway, "decode_"+et,
			pdtrace.Outcome{DecodeTarget: target, DecodeErrorType: et})
		http.Error(w, "decode failed", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()

	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	var rerr, werr error
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		rerr, werr = p.relaySSE(w, resp.Body, t, u)
	} else {
		rerr, werr = p.relayBody(w, resp.Body, t, u)
	}
	legErr, clientErr := "", ""
	switch {
	case werr != nil || r.Context().Err() != nil:
		legErr, clientErr = "cancelled", "client_disconnected"
	case rerr != nil:
		legErr, clientErr = errorType(rerr), "upstream_aborted"
	case resp.StatusCode >= 500:
		legErr, clientErr = fmt.Sprintf("http_%d", resp.StatusCode), "upstream_error"
	case resp.StatusCode >= 400:
		clientErr = fmt.Sprintf("http_%d", resp.StatusCode)
	}
	if legErr != "" && resp.StatusCode < 500 {
		// The response started well and was cut: the decode span fails
		// with that error whatever its status.
		t.do(func(q *pdtrace.Request) error {
			return q.Leg(pdtrace.LegDecode).SetStatus(pdtrace.StatusError, legErr)
		})
	}
	end(resp.StatusCode, clientErr, pdtrace.Outcome{DecodeTarget: target,
		DecodeStatus: resp.StatusCode, DecodeErrorType: legErr})
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		switch k {
		case "Content-Length", "Connection", "Transfer-Encoding":
			continue
		}
		dst[k] = append([]string(nil), vs...)
	}
}

type sseChunk struct {
	ID      string `json:"id"`
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *openAIUsage `json:"usage"`
}

// relaySSE forwards the event stream line by line, flushing at each event
// end, and records a token for each data chunk that carries text (the
// first one is mark F).
func (p *Proxy) relaySSE(w http.ResponseWriter, body io.Reader, t *traced, u *usage) (readErr, writeErr error) {
	fl, _ := w.(http.Flusher)
	rc := http.NewResponseController(w)
	br := bufio.NewReaderSize(body, 64<<10)
	respID := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if _, werr := w.Write(line); werr != nil {
				return nil, werr
			}
			trimmed := bytes.TrimRight(line, "\r\n")
			if len(trimmed) == 0 {
				if fl != nil {
					if ferr := rc.Flush(); ferr != nil {
						return nil, ferr
					}
				}
			} else if data, ok := bytes.CutPrefix(trimmed, []byte("data:")); ok {
				data = bytes.TrimSpace(data)
				if len(data) != 0 && !bytes.Equal(data, []byte("[DONE]")) {
					var c sseChunk
					if json.Unmarshal(data, &c) == nil {
						n := uint32(0)
						for _, ch := range c.Choices {
							if ch.Text != "" || ch.Delta.Content != "" || ch.Delta.ReasoningContent != "" {
								n++
							}
						}
						now := pdtrace.Now()
						t.do(func(q *pdtrace.Request) error {
							if !respID && c.ID != "" {
								respID = true
								if err := q.SetString("gen_ai.response.id", c.ID); err != nil {
									return err
								}
							}
							if n == 0 {
								return nil
							}
							return q.Tokens(now, n)
						})
						u.merge(c.Usage)
					}
				}
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if fl != nil {
				_ = rc.Flush()
			}
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

// relayBody forwards a non-streaming answer; its first byte is mark F.
func (p *Proxy) relayBody(w http.ResponseWriter, body io.Reader, t *traced, u *usage) (readErr, writeErr error) {
	var buf bytes.Buffer
	chunk := make([]byte, 32<<10)
	first := true
	for {
		n, err := body.Read(chunk)
		if n > 0 {
			if first {
				first = false
				t.do(func(q *pdtrace.Request) error { return q.FirstToken(0) })
			}
			if buf.Len() < maxPrefillAnswer {
				buf.Write(chunk[:n])
			}
			if _, werr := w.Write(chunk[:n]); werr != nil {
				return nil, werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err, nil
		}
	}
	var ans struct {
		ID    string       `json:"id"`
		Usage *openAIUsage `json:"usage"`
	}
	if json.Unmarshal(buf.Bytes(), &ans) == nil {
		u.merge(ans.Usage)
		if ans.ID != "" {
			t.do(func(q *pdtrace.Request) error { return q.SetString("gen_ai.response.id", ans.ID) })
		}
	}
	if !first {
		t.do(func(q *pdtrace.Request) error { return q.LastToken(0) })
	}
	return nil, nil
}
