package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
)

const (
	attrPrefix       = "llm_d.pd_proxy."
	prefillerHeader  = "X-Prefiller-Host-Port"
	maxPrefillAnswer = 8 << 20
	maxSSELine       = 8 << 20
	maxAssembled     = 64 << 20
)

// Config is the sidecar's configuration.
type Config struct {
	// DecoderURL is the decode server: a base URL (http://127.0.0.1:8200)
	// or a full endpoint URL (http://127.0.0.1:8200/v1/completions); each
	// route goes to its own path on that server.
	DecoderURL string
	// PrefillURL, if set, is the prefill server used when a request names
	// none in x-prefiller-host-port (base or endpoint URL). Its host:port
	// is also allowed in that header.
	PrefillURL    string
	Connector     string // nixlv2, lmcache, shared-storage or sglang
	BootstrapPort int    // sglang bootstrap port on the prefill host
	// PrefillerAllow lists the host:port a client may name in
	// x-prefiller-host-port; "*" allows any. Empty: only PrefillURL's.
	PrefillerAllow []string
	// PrefillerTLS reaches the hosts named in x-prefiller-host-port over
	// https.
	PrefillerTLS bool
	// CAFile, CertFile and KeyFile set the TLS of https upstreams: the CA
	// to trust (else the system's) and a client certificate.
	CAFile, CertFile, KeyFile string
	// NoAssemble turns off the streamed decode for non-streamed clients:
	// their requests go to decode as they are (first token unobserved).
	NoAssemble bool
	// RateLimit is the admitted requests per second (0: no limit), in
	// bursts of RateBurst; MaxConcurrent bounds the requests in flight (0:
	// no bound). A request waits at most QueueTimeout for either, then
	// gets 429 or 503.
	RateLimit     float64
	RateBurst     int
	MaxConcurrent int
	QueueTimeout  time.Duration
	// MaxBodyBytes bounds a request body (413 above it) and
	// BodyReadTimeout the time to read it (408 after it).
	MaxBodyBytes    int64
	BodyReadTimeout time.Duration
	// AccessLog writes one line per request: method, path, status, true
	// TTFT and total milliseconds.
	AccessLog bool
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
	cfg         Config
	tracer      *pdtrace.Tracer
	decoder     string // base URL
	prefillBase string // base URL of the default prefiller, or ""
	allow       *allowlist
	client      *http.Client
	rate        *rateLimiter
	slots       slots
	notFound    notFoundWatch
	logf        func(format string, args ...any)
}

// NewProxy builds the handler. The caller owns the tracer.
func NewProxy(cfg Config, tracer *pdtrace.Tracer) (*Proxy, error) {
	dec, err := parseUpstream(cfg.DecoderURL)
	if err != nil {
		return nil, fmt.Errorf("decoder: %v", err)
	}
	pre := ""
	if cfg.PrefillURL != "" {
		if pre, err = parseUpstream(cfg.PrefillURL); err != nil {
			return nil, fmt.Errorf("prefill: %v", err)
		}
	}
	switch cfg.Connector {
	case "nixlv2", "lmcache", "shared-storage", "sglang":
	default:
		return nil, fmt.Errorf("unknown connector %q", cfg.Connector)
	}
	allow, err := newAllowlist(cfg.PrefillerAllow)
	if err != nil {
		return nil, err
	}
	if pre != "" {
		allow.hosts[strings.ToLower(hostOf(pre))] = true
	}
	tc, err := tlsConfig(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	if cfg.RateLimit < 0 || cfg.MaxConcurrent < 0 || cfg.MaxBodyBytes < 0 {
		return nil, errors.New("rate limit, max concurrent and max body bytes must not be negative")
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
	if cfg.QueueTimeout == 0 {
		cfg.QueueTimeout = 30 * time.Second
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	if cfg.BodyReadTimeout == 0 {
		cfg.BodyReadTimeout = 30 * time.Second
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     tc != nil,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.DecodeHeaderTimeout,
	}
	p := &Proxy{
		cfg:         cfg,
		tracer:      tracer,
		decoder:     dec,
		prefillBase: pre,
		allow:       allow,
		client:      &http.Client{Transport: tr},
		rate:        newRateLimiter(cfg.RateLimit, cfg.RateBurst),
		logf:        log.Printf,
	}
	if cfg.MaxConcurrent > 0 {
		p.slots = make(slots, cfg.MaxConcurrent)
	}
	return p, nil
}

// CloseIdle closes idle upstream connections.
func (p *Proxy) CloseIdle() { p.client.CloseIdleConnections() }

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, ttft: -1, total: -1}
	p.route(rec, r)
	if p.cfg.AccessLog {
		total := rec.total
		if total < 0 {
			total = float64(time.Since(start).Nanoseconds()) / 1e6
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		p.logf("access: %s %q %d ttft_ms=%s total_ms=%s", r.Method, r.URL.Path, status, fmtMs(rec.ttft), fmtMs(total))
	}
}

func (p *Proxy) route(w *recorder, r *http.Request) {
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
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
			return
		}
		p.serveInference(w, r)
	default:
		writeError(w, http.StatusNotFound, "not_found", "no route for "+strconv.Quote(r.URL.Path))
	}
}

// serveMetrics serves the tracer's Prometheus metrics: true TTFT and its
// stages per connector, model and mode.
func (p *Proxy) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return
	}
	text, err := p.tracer.Metrics()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "metrics unavailable: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", pdtrace.MetricsContentType)
	_, _ = io.WriteString(w, text)
}

// passThrough forwards a request to the decoder without tracing.
func (p *Proxy) passThrough(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.PrefillTimeout)
	defer cancel()
	target := p.decoder + r.URL.Path
	out, err := http.NewRequestWithContext(ctx, r.Method, target, nil)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	resp, err := p.client.Do(out)
	if err != nil {
		writeError(w, http.StatusBadGateway, errorType(err), "decoder unavailable: "+upstreamMessage(err))
		return
	}
	defer resp.Body.Close()
	p.notFound.observe("decode", target, resp.StatusCode, p.logf)
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
	if t == nil {
		return
	}
	t.mu.Lock()
	err := f(t.req)
	t.mu.Unlock()
	if err != nil {
		log.Printf("pdtrace: %v", err)
	}
}

// usage holds the token counts of one leg's answer (-1: not given).
type usage struct {
	input, output, cached int64
}

func newUsage() usage { return usage{-1, -1, -1} }

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

// combined is decode's usage, with prefill's input and cached prompt
// tokens where decode gives none (never prefill's single output token).
func combined(dec, pre usage) usage {
	u := dec
	if u.input < 0 {
		u.input = pre.input
	}
	if u.cached < 0 {
		u.cached = pre.cached
	}
	return u
}

// inference is one client request in flight.
type inference struct {
	w        *recorder
	r        *http.Request
	t        *traced
	body     map[string]any
	raw      []byte
	chat     bool
	stream   bool   // the client asked for a stream
	assemble bool   // non-streamed for the client, streamed from decode
	reason   string // why a non-streamed request is passed through
	pre, dec usage
	preMu    sync.Mutex
}

func (p *Proxy) serveInference(w *recorder, r *http.Request) {
	arrival := pdtrace.Now()
	if p.rate != nil && !p.rate.wait(r.Context(), p.cfg.QueueTimeout) {
		writeError(w, http.StatusTooManyRequests, "rate_limited", "over the rate limit")
		return
	}
	if p.slots != nil {
		if !p.slots.acquire(r.Context(), p.cfg.QueueTimeout) {
			writeError(w, http.StatusServiceUnavailable, "overloaded", "too many requests in flight")
			return
		}
		defer p.slots.release()
	}
	raw, status, bad := p.readBody(w, r)
	var body map[string]any
	if bad == "" {
		body, bad = parseBody(raw)
		if bad != "" {
			status = http.StatusBadRequest
		}
	}
	in := &inference{w: w, r: r, raw: raw, body: body, chat: r.URL.Path == "/v1/chat/completions",
		pre: newUsage(), dec: newUsage()}
	// The request is begun once the body is read (A is still the
	// arrival), so that its connector, model and attributes go with the
	// begin in one call.
	var model string
	var attrs []pdtrace.Attr
	if bad == "" {
		in.stream, _ = body["stream"].(bool)
		if !in.stream {
			in.reason = passthroughReason(body, in.chat)
			if in.reason == "" && p.cfg.NoAssemble {
				in.reason = "disabled"
			}
			in.assemble = in.reason == ""
		}
		op := "text_completion"
		if in.chat {
			op = "chat"
		}
		model, _ = body["model"].(string)
		attrs = append(make([]pdtrace.Attr, 0, 8), pdtrace.String("gen_ai.operation.name", op))
		attrs = append(attrs, in.streamAttrs()...)
		if mt, ok := maxTokens(body); ok {
			attrs = append(attrs, pdtrace.Int("gen_ai.request.max_tokens", mt))
		}
	}
	req, err := p.tracer.BeginWith(r, arrival, p.cfg.Connector, model, attrs...)
	if req == nil {
		// Tracing is unavailable (tracer closed): serve untraced would
		// need a second code path; refuse instead.
		writeError(w, http.StatusServiceUnavailable, "unavailable", "tracing unavailable: "+err.Error())
		return
	}
	if err != nil {
		p.logf("pdtrace: a setting of the request was refused: %v", err)
	}
	defer req.Close() // ends an unfinished request as abandoned
	in.t = &traced{req: req}

	if bad != "" {
		p.fail(in, status, errTypeFor(status), bad)
		return
	}
	candidates, status, msg := p.prefillTargets(r.Header)
	if msg != "" {
		p.fail(in, status, errTypeFor(status), msg)
		return
	}

	var kv json.RawMessage
	switch {
	case len(candidates) == 0:
		reason := decisionReason(r.Header.Get("x-pd-decision-reason"))
		in.t.do(func(q *pdtrace.Request) error { return q.SetMode(pdtrace.ModeDecodeOnly, reason) })
	case p.cfg.Connector == "sglang":
		p.serveConcurrent(in, candidates[0])
		return
	default:
		var ok bool
		var errType, msg string
		kv, status, errType, msg, ok = p.prefill(in, candidates)
		if !ok {
			p.fail(in, status, errType, msg)
			return
		}
	}
	dbody, dropUsage, err := in.decodeBody(kv, p.cfg.Connector == "nixlv2")
	if err != nil {
		p.fail(in, http.StatusInternalServerError, "internal", "cannot build the decode request")
		return
	}
	p.decode(in, dbody, dropUsage, 0, nil)
}

// streamAttrs are the stream flags, on the request and decode spans.
func (in *inference) streamAttrs() []pdtrace.Attr {
	a := []pdtrace.Attr{
		pdtrace.Bool("gen_ai.request.stream", in.stream),
		pdtrace.Bool(attrPrefix+"decode.streaming", in.stream || in.assemble),
	}
	if !in.stream {
		a = append(a, pdtrace.Bool(attrPrefix+"assembled", in.assemble))
		if in.reason != "" {
			a = append(a, pdtrace.String(attrPrefix+"passthrough_reason", in.reason))
		}
	}
	return a
}

func errTypeFor(status int) string {
	switch status {
	case http.StatusRequestEntityTooLarge:
		return "body_too_large"
	case http.StatusRequestTimeout:
		return "body_timeout"
	case http.StatusForbidden:
		return "prefiller_not_allowed"
	}
	return "invalid_request"
}

// fail ends the request with an error sent to the client.
func (p *Proxy) fail(in *inference, status int, errType, msg string) {
	in.t.do(func(q *pdtrace.Request) error {
		bd, err := q.Finish(0, &pdtrace.Outcome{Status: status, ErrorType: errType})
		in.w.note(bd)
		return err
	})
	writeError(in.w, status, errType, msg)
}

func (r *recorder) note(bd pdtrace.Breakdown) {
	if bd.TrueTTFT.OK {
		r.ttft = bd.TrueTTFT.Value
	}
	if bd.Total.OK {
		r.total = bd.Total.Value
	}
}

// readBody reads the request body, bounded in size (413) and time (408).
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	limit := p.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over %d bytes", limit)
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(p.cfg.BodyReadTimeout))
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		_ = rc.SetReadDeadline(time.Time{})
	} else {
		// The rest of the body is not read: the connection is not
		// reused, and the expired deadline stops the server from waiting
		// for that rest before it sends the answer.
		w.Header().Set("Connection", "close")
	}
	var tooBig *http.MaxBytesError
	var ne net.Error
	switch {
	case err == nil:
		return raw, 0, ""
	case errors.As(err, &tooBig):
		return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over %d bytes", limit)
	case errors.As(err, &ne) && ne.Timeout():
		return nil, http.StatusRequestTimeout, fmt.Sprintf("the body was not read within %v", p.cfg.BodyReadTimeout)
	}
	return nil, http.StatusBadRequest, "cannot read the request body"
}

// parseBody decodes a JSON object, numbers kept as written.
func parseBody(raw []byte) (map[string]any, string) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil || body == nil {
		return nil, "the body is not a JSON object"
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "the body has data after its JSON object"
	}
	if v, ok := body["stream"]; ok && v != nil {
		if _, isBool := v.(bool); !isBool {
			return nil, `"stream" must be a boolean`
		}
	}
	return body, ""
}

// maxTokens returns max_completion_tokens or max_tokens.
func maxTokens(body map[string]any) (int64, bool) {
	for _, k := range []string{"max_completion_tokens", "max_tokens"} {
		if n, ok := body[k].(json.Number); ok {
			if v, err := n.Int64(); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// target is one prefill server: host:port as named, and its base URL.
type target struct{ hostport, base string }

// prefillTargets lists the candidates of x-prefiller-host-port (one header
// or several, each comma-separated), each host:port and allowed; without
// the header, the configured prefill server, if any.
func (p *Proxy) prefillTargets(h http.Header) ([]target, int, string) {
	var out []target
	scheme := "http://"
	if p.cfg.PrefillerTLS {
		scheme = "https://"
	}
	for _, v := range h.Values(prefillerHeader) {
		for _, c := range strings.Split(v, ",") {
			c = strings.TrimSpace(c)
			if c == "" {
				continue
			}
			if err := checkHostPort(c); err != nil {
				return nil, http.StatusBadRequest, prefillerHeader + ": " + err.Error()
			}
			if !p.allow.allows(c) {
				return nil, http.StatusForbidden, prefillerHeader + ": " + strconv.Quote(c) + " is not an allowed prefill host"
			}
			base := scheme + c
			if p.prefillBase != "" && strings.EqualFold(hostOf(p.prefillBase), c) {
				base = p.prefillBase
			}
			out = append(out, target{c, base})
		}
	}
	if len(out) == 0 && p.prefillBase != "" {
		out = append(out, target{hostOf(p.prefillBase), p.prefillBase})
	}
	return out, 0, ""
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

// includesUsage says whether the client's stream_options asks for usage.
func includesUsage(body map[string]any) bool {
	so, _ := body["stream_options"].(map[string]any)
	v, _ := so["include_usage"].(bool)
	return v
}

// decodeBody is the body for decode: the client's, plus kv (nixlv2);
// streamed with usage when the answer is assembled, and with usage when
// the client streams without it (the usage chunk is then not forwarded:
// dropUsage).
func (in *inference) decodeBody(kv json.RawMessage, withKV bool) ([]byte, bool, error) {
	dropUsage := in.stream && !includesUsage(in.body)
	if !in.assemble && !dropUsage && !(withKV && len(kv) != 0) {
		return in.raw, false, nil
	}
	c := cloneBody(in.body)
	if withKV && len(kv) != 0 {
		c["kv_transfer_params"] = kv
	}
	if in.assemble || dropUsage {
		so := map[string]any{}
		if old, ok := c["stream_options"].(map[string]any); ok && in.stream {
			for k, v := range old {
				so[k] = v
			}
		}
		so["include_usage"] = true
		c["stream"] = true
		c["stream_options"] = so
	}
	b, err := json.Marshal(c)
	return b, dropUsage, err
}

// errorType names a transport failure for error.type.
func errorType(err error) string {
	var ne net.Error
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	var ve *tls.CertificateVerificationError
	var re tls.RecordHeaderError
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &ua), errors.As(err, &ci), errors.As(err, &hn), errors.As(err, &ve), errors.As(err, &re),
		strings.Contains(err.Error(), "tls: "):
		return "tls_error"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection_refused"
	}
	return "transport_error"
}

// upstreamMessage explains a transport failure to the client.
func upstreamMessage(err error) string {
	msg := err.Error()
	if errorType(err) == "tls_error" {
		msg += " (check the upstream CA file and client certificate)"
	}
	return msg
}

// legFailed records a failed leg on its span (address, status, error
// type, ERROR status) without failing the request: whether the request
// failed is decided by what the client got.
func legFailed(q *pdtrace.Request, leg pdtrace.Leg, hostport string, status int, errType string) error {
	attrs := make([]pdtrace.Attr, 0, 4)
	if h, port, err := net.SplitHostPort(hostport); err == nil {
		attrs = append(attrs, pdtrace.String("server.address", h))
		if n, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, pdtrace.Int("server.port", int64(n)))
		}
	}
	if status > 0 {
		attrs = append(attrs, pdtrace.Int("http.response.status_code", int64(status)))
	}
	attrs = append(attrs, pdtrace.String("error.type", errType))
	err := q.Leg(leg).SetAttributes(attrs...)
	if serr := q.Leg(leg).SetStatus(pdtrace.StatusError, errType); err == nil {
		err = serr
	}
	return err
}

// prefill runs the prefill leg against each candidate in turn until one
// answers; every attempt is its own span. It returns the
// kv_transfer_params of the answer, or the status and error for the
// client.
func (p *Proxy) prefill(in *inference, candidates []target) (json.RawMessage, int, string, string, bool) {
	pbody, err := p.prefillBody(in.body)
	if err != nil {
		return nil, http.StatusInternalServerError, "internal", "cannot build the prefill request", false
	}
	var last attempt
	for _, c := range candidates {
		last = p.prefillOnce(in, pbody, c)
		if last.ok {
			return last.kv, last.status, "", "", true
		}
		if !last.retry || in.r.Context().Err() != nil {
			break
		}
	}
	// Every attempt failed: the request span names the last one.
	in.t.do(func(q *pdtrace.Request) error {
		return q.SetAttributes(pdtrace.String(attrPrefix+"prefill_target", last.target),
			pdtrace.Int(attrPrefix+"prefill.status_code", int64(last.status)))
	})
	status := last.status
	if status == 0 || status >= 500 || status < 400 {
		status = http.StatusBadGateway
	}
	return nil, status, last.errType, last.msg, false
}

// attempt is the outcome of one prefill request.
type attempt struct {
	target  string
	kv      json.RawMessage
	status  int
	errType string
	msg     string
	ok      bool
	retry   bool
}

func (p *Proxy) prefillOnce(in *inference, pbody []byte, c target) (a attempt) {
	a.target = c.hostport
	ctx, cancel := context.WithTimeout(in.r.Context(), p.cfg.PrefillTimeout)
	defer cancel()
	url := c.base + in.r.URL.Path
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(pbody))
	if err != nil {
		a.status, a.errType, a.msg = http.StatusBadGateway, "bad_target", "bad prefill target "+strconv.Quote(c.hostport)
		return a
	}
	out.Header.Set("Content-Type", "application/json")
	in.t.do(func(q *pdtrace.Request) error { return q.SendPrefill(out.Header, 0) })
	resp, err := p.client.Do(out)
	if err != nil {
		a.errType, a.msg, a.retry = errorType(err), "prefill "+c.hostport+": "+upstreamMessage(err), true
		in.t.do(func(q *pdtrace.Request) error {
			if err := q.PrefillDone(0); err != nil {
				return err
			}
			return legFailed(q, pdtrace.LegPrefill, c.hostport, 0, a.errType)
		})
		return a
	}
	p.notFound.observe("prefill", url, resp.StatusCode, p.logf)
	a.status = resp.StatusCode
	var ans prefillAnswer
	ans.u = newUsage()
	var rerr error
	if isEventStream(resp.Header) {
		rerr = ans.readStream(resp.Body)
	} else {
		rerr = ans.readBody(resp.Body)
	}
	resp.Body.Close()
	switch {
	case rerr != nil && ctx.Err() == nil && !errors.Is(rerr, errInvalidAnswer):
		a.errType, a.msg = errorType(rerr), "prefill "+c.hostport+": reading the answer: "+rerr.Error()
	case resp.StatusCode >= 500:
		a.errType, a.msg, a.retry = fmt.Sprintf("http_%d", resp.StatusCode), fmt.Sprintf("prefill %s answered %d", c.hostport, resp.StatusCode), true
	case resp.StatusCode >= 300:
		a.errType, a.msg = fmt.Sprintf("http_%d", resp.StatusCode), fmt.Sprintf("prefill %s answered %d: %s", c.hostport, resp.StatusCode, ans.errMsg)
	case rerr != nil && ctx.Err() != nil:
		a.errType, a.msg = errorType(ctx.Err()), "prefill "+c.hostport+": "+ctx.Err().Error()
	case rerr != nil:
		a.errType, a.msg = "invalid_response", "prefill "+c.hostport+": "+rerr.Error()
	case ans.errMsg != "":
		a.errType, a.msg = "upstream_error", "prefill "+c.hostport+": "+ans.errMsg
	}
	if a.errType != "" {
		in.t.do(func(q *pdtrace.Request) error {
			if err := q.PrefillDone(0); err != nil {
				return err
			}
			return legFailed(q, pdtrace.LegPrefill, c.hostport, resp.StatusCode, a.errType)
		})
		return a
	}
	in.t.do(func(q *pdtrace.Request) error { return q.PrefillResult(0, c.hostport, resp.StatusCode, "") })
	in.preMu.Lock()
	in.pre = ans.u
	in.preMu.Unlock()
	a.kv, a.ok = ans.kv, true
	return a
}

var errInvalidAnswer = errors.New("the answer is not a JSON object")

// prefillAnswer is what the sidecar reads from a prefill answer.
type prefillAnswer struct {
	kv     json.RawMessage
	u      usage
	errMsg string // an error the upstream reported
}

type answerDoc struct {
	KV    json.RawMessage `json:"kv_transfer_params"`
	Usage *openAIUsage    `json:"usage"`
	Error json.RawMessage `json:"error"`
}

func errorMessage(raw json.RawMessage) string {
	if len(raw) == 0 || isNull(raw) {
		return ""
	}
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Message != "" {
		return e.Message
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return s
	}
	return string(raw)
}

func (a *prefillAnswer) take(d *answerDoc) {
	if len(d.KV) != 0 && !isNull(d.KV) {
		a.kv = d.KV
	}
	a.u.merge(d.Usage)
	if m := errorMessage(d.Error); m != "" {
		a.errMsg = m
	}
}

// readBody reads a non-streamed answer; it must be one JSON object.
func (a *prefillAnswer) readBody(body io.Reader) error {
	raw, err := io.ReadAll(io.LimitReader(body, maxPrefillAnswer+1))
	if err != nil {
		return err
	}
	if len(raw) > maxPrefillAnswer {
		return fmt.Errorf("%w: over %d bytes", errInvalidAnswer, maxPrefillAnswer)
	}
	trimmed := bytes.TrimSpace(raw)
	var d answerDoc
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &d) != nil {
		a.errMsg = snippet(trimmed)
		return errInvalidAnswer
	}
	a.take(&d)
	return nil
}

// readStream reads a streamed answer (a prefill asked with stream true):
// every event is read, usage and kv_transfer_params taken from its
// chunks; it must end with [DONE].
func (a *prefillAnswer) readStream(body io.Reader) error {
	done := false
	err := scanSSE(io.LimitReader(body, maxPrefillAnswer), func(line []byte) error {
		data, ok := sseData(line)
		if !ok {
			return nil
		}
		if bytes.Equal(data, []byte("[DONE]")) {
			done = true
			return nil
		}
		var d answerDoc
		if json.Unmarshal(data, &d) != nil {
			return fmt.Errorf("%w: a stream event is not JSON", errInvalidAnswer)
		}
		a.take(&d)
		return nil
	})
	if err != nil {
		return err
	}
	if !done && a.errMsg == "" {
		return fmt.Errorf("%w: the stream ended before [DONE]", errInvalidAnswer)
	}
	return nil
}

func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.ToValidUTF8(string(b), "?")
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
}

// serveConcurrent is the sglang flow: the client's body, with the
// bootstrap fields, goes to prefill and decode at once.
func (p *Proxy) serveConcurrent(in *inference, c target) {
	host, _, _ := net.SplitHostPort(c.hostport)
	room := rand.Int64N(1 << 62)
	pc := cloneBody(in.body)
	pc["bootstrap_host"] = host
	pc["bootstrap_port"] = p.cfg.BootstrapPort
	pc["bootstrap_room"] = room
	both, err := json.Marshal(pc)
	if err != nil {
		p.fail(in, http.StatusInternalServerError, "internal", "cannot build the request")
		return
	}
	// Decode gets the same body, streamed when the answer is assembled.
	in.body, in.raw = pc, both
	dbody, dropUsage, err := in.decodeBody(nil, false)
	if err != nil {
		p.fail(in, http.StatusInternalServerError, "internal", "cannot build the request")
		return
	}
	ctx, cancel := context.WithCancel(in.r.Context())
	defer cancel()
	pctx, pcancel := context.WithTimeout(ctx, p.cfg.PrefillTimeout)
	defer pcancel()
	url := c.base + in.r.URL.Path
	out, err := http.NewRequestWithContext(pctx, http.MethodPost, url, bytes.NewReader(both))
	if err != nil {
		p.fail(in, http.StatusBadGateway, "bad_target", "bad prefill target")
		return
	}
	out.Header.Set("Content-Type", "application/json")
	// Both legs start at the same instant.
	start := pdtrace.Now()
	in.t.do(func(q *pdtrace.Request) error {
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
		var ans prefillAnswer
		ans.u = newUsage()
		if err != nil {
			et = errorType(err)
		} else {
			p.notFound.observe("prefill", url, resp.StatusCode, p.logf)
			status = resp.StatusCode
			var rerr error
			if isEventStream(resp.Header) {
				rerr = ans.readStream(resp.Body)
			} else {
				rerr = ans.readBody(resp.Body)
			}
			resp.Body.Close()
			switch {
			case status >= 300:
				et = fmt.Sprintf("http_%d", status)
			case rerr != nil && errors.Is(rerr, errInvalidAnswer):
				et = "invalid_response"
			case rerr != nil:
				et = errorType(rerr)
			case ans.errMsg != "":
				et = "upstream_error"
			}
		}
		if et == "" {
			in.preMu.Lock()
			in.pre = ans.u
			in.preMu.Unlock()
		}
		in.t.do(func(q *pdtrace.Request) error {
			if et == "" {
				return q.PrefillResult(0, c.hostport, status, "")
			}
			if err := q.PrefillDone(0); err != nil {
				return err
			}
			if err := q.SetAttributes(pdtrace.String(attrPrefix+"prefill_target", c.hostport),
				pdtrace.Int(attrPrefix+"prefill.status_code", int64(status))); err != nil {
				return err
			}
			return legFailed(q, pdtrace.LegPrefill, c.hostport, status, et)
		})
	}()
	// The request ends after the prefill outcome is recorded; the prefill
	// is bounded by PrefillTimeout and by the client's context.
	in.r = in.r.WithContext(ctx)
	p.decode(in, dbody, dropUsage, start, func() { <-done })
}

// decode runs the decode leg, relays or assembles its answer for the
// client, then ends the request. sentAt is mark Ds (0: now); beforeEnd,
// if not nil, runs before the request is ended.
func (p *Proxy) decode(in *inference, dbody []byte, dropUsage bool, sentAt pdtrace.Time, beforeEnd func()) {
	w, r, t := in.w, in.r, in.t
	dhost := hostOf(p.decoder)
	observed := false
	// end records the decode leg's outcome (when o has one), the usage and
	// the response, and ends the request, in one call.
	end := func(status int, errType string, o pdtrace.Outcome) {
		if beforeEnd != nil {
			beforeEnd()
		}
		in.preMu.Lock()
		u := combined(in.dec, in.pre)
		in.preMu.Unlock()
		o.Status, o.ErrorType = status, errType
		o.Usage, o.InputTokens, o.OutputTokens, o.CachedInputTokens = true, u.input, u.output, u.cached
		t.do(func(q *pdtrace.Request) error {
			fo := pdtrace.Bool(attrPrefix+"first_token_observed", observed)
			err := q.SetAttributes(fo)
			if lerr := q.Leg(pdtrace.LegDecode).SetAttributes(fo); err == nil && !errors.Is(lerr, pdtrace.ErrState) {
				err = lerr
			}
			bd, ferr := q.Finish(0, &o)
			w.note(bd)
			if err == nil {
				err = ferr
			}
			return err
		})
	}
	url := p.decoder + r.URL.Path
	out, err := http.NewRequestWithContext(r.Context(), http.MethodPost, url, bytes.NewReader(dbody))
	if err != nil {
		end(http.StatusInternalServerError, "internal", pdtrace.Outcome{})
		writeError(w, http.StatusInternalServerError, "internal", "cannot build the decode request")
		return
	}
	out.Header.Set("Content-Type", "application/json")
	if a := r.Header.Get("Authorization"); a != "" {
		out.Header.Set("Authorization", a)
	}
	t.do(func(q *pdtrace.Request) error {
		if err := q.SendDecode(out.Header, sentAt); err != nil {
			return err
		}
		return q.Leg(pdtrace.LegDecode).SetAttributes(in.streamAttrs()...)
	})
	resp, err := p.client.Do(out)
	if err != nil {
		et := errorType(err)
		end(http.StatusBadGateway, "decode_"+et,
			pdtrace.Outcome{DecodeTarget: dhost, DecodeErrorType: et})
		writeError(w, http.StatusBadGateway, "decode_"+et, "decode: "+upstreamMessage(err))
		return
	}
	defer resp.Body.Close()
	p.notFound.observe("decode", url, resp.StatusCode, p.logf)

	tok := &tokenCounter{t: t, u: &in.dec}
	streamed := resp.StatusCode == http.StatusOK && isEventStream(resp.Header)
	var rerr, werr error
	complete := true
	status := resp.StatusCode
	clientErr := ""
	switch {
	case streamed && in.assemble:
		asm := newAssembler(in.chat)
		var res sseResult
		res, rerr = tok.read(resp.Body, asm)
		observed = tok.first
		switch {
		case rerr != nil && r.Context().Err() != nil:
			werr = r.Context().Err()
		case rerr != nil:
		case res.errMsg != "":
			status, clientErr = http.StatusBadGateway, "upstream_error"
			writeError(w, status, clientErr, "decode stream error: "+res.errMsg)
		case !res.done || res.bad:
			status, clientErr = http.StatusBadGateway, "invalid_response"
			writeError(w, status, clientErr, "decode stream ended before [DONE] or had a chunk that is not OpenAI JSON")
		default:
			b := asm.body()
			copyHeader(w.Header(), resp.Header)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, werr = w.Write(b)
		}
		if rerr != nil && werr == nil {
			status, clientErr = http.StatusBadGateway, "upstream_aborted"
			writeError(w, status, clientErr, "decode stream broke off: "+rerr.Error())
		}
		complete = status == http.StatusOK && werr == nil
	case streamed:
		copyHeader(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		var res sseResult
		res, rerr, werr = tok.relay(w, resp.Body, dropUsage)
		observed = tok.first
		complete = rerr == nil && werr == nil && res.done && res.errMsg == ""
	default:
		// Not streamed (a passed-through request, or an error answer):
		// relayed as it is; its first token is not observed.
		copyHeader(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		var id string
		id, rerr, werr = relayBody(w, resp.Body, &in.dec)
		if resp.StatusCode == http.StatusOK && id != "" {
			t.do(func(q *pdtrace.Request) error { return q.SetString("gen_ai.response.id", id) })
		}
	}
	legErr := ""
	switch {
	case werr != nil || r.Context().Err() != nil:
		legErr, clientErr = "cancelled", "client_disconnected"
	case rerr != nil:
		legErr = errorType(rerr)
		if clientErr == "" {
			clientErr = "upstream_aborted"
		}
	case resp.StatusCode >= 500:
		legErr, clientErr = fmt.Sprintf("http_%d", resp.StatusCode), "upstream_error"
	case resp.StatusCode >= 400:
		clientErr = fmt.Sprintf("http_%d", resp.StatusCode)
	case !complete && clientErr == "":
		legErr, clientErr = "incomplete_response", "upstream_aborted"
	case clientErr != "":
		legErr = clientErr
	}
	if legErr != "" && resp.StatusCode < 500 {
		// The response started well and was cut: the decode span fails
		// with that error whatever its status.
		t.do(func(q *pdtrace.Request) error {
			return q.Leg(pdtrace.LegDecode).SetStatus(pdtrace.StatusError, legErr)
		})
	}
	end(status, clientErr, pdtrace.Outcome{DecodeTarget: dhost,
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

// relayBody forwards a non-streamed answer and takes its usage and id.
func relayBody(w http.ResponseWriter, body io.Reader, u *usage) (id string, readErr, writeErr error) {
	var buf bytes.Buffer
	chunk := make([]byte, 32<<10)
	for {
		n, err := body.Read(chunk)
		if n > 0 {
			if buf.Len() < maxPrefillAnswer {
				buf.Write(chunk[:n])
			}
			if _, werr := w.Write(chunk[:n]); werr != nil {
				return "", nil, werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err, nil
		}
	}
	var ans struct {
		answerDoc
		ID string `json:"id"`
	}
	if json.Unmarshal(buf.Bytes(), &ans) == nil {
		u.merge(ans.Usage)
	}
	return ans.ID, nil, nil
}

// scanSSE calls f with every line of an event stream (without its line
// end; an empty line ends an event). A line longer than maxSSELine is an
// error.
func scanSSE(body io.Reader, f func(line []byte) error) error {
	br := bufio.NewReaderSize(body, 64<<10)
	var long []byte
	for {
		part, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long, part...)
			if len(long) > maxSSELine {
				return fmt.Errorf("an event stream line is over %d bytes", maxSSELine)
			}
			continue
		}
		line := part
		if long != nil {
			line = append(long, part...)
			long = nil
		}
		if len(line) > 0 {
			if ferr := f(bytes.TrimRight(line, "\r\n")); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func sseData(line []byte) ([]byte, bool) {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return nil, false
	}
	data = bytes.TrimSpace(data)
	return data, len(data) != 0
}

type sseChunk struct {
	ID      string          `json:"id"`
	Choices []sseChoice     `json:"choices"`
	Usage   *openAIUsage    `json:"usage"`
	Error   json.RawMessage `json:"error"`
}

type sseChoice struct {
	Text  string `json:"text"`
	Delta struct {
		Content          string `json:"content"`
		ReasoningContent string `json:"reasoning_content"`
	} `json:"delta"`
}

// sseResult is how a decode stream ended.
type sseResult struct {
	done   bool   // [DONE] arrived
	bad    bool   // a chunk was not OpenAI JSON
	errMsg string // an error event
}

// tokenCounter records the decode stream's tokens: one Tokens call per
// chunk that carries text (the first is mark F), with the chunk's count.
type tokenCounter struct {
	t      *traced
	u      *usage
	first  bool
	lastID string
	idSet  bool
}

// chunk takes one data event; it returns whether the event is the usage
// chunk alone (no choices).
func (c *tokenCounter) chunk(data []byte, res *sseResult) (usageOnly bool) {
	if bytes.Equal(data, []byte("[DONE]")) {
		res.done = true
		return false
	}
	var ch sseChunk
	if json.Unmarshal(data, &ch) != nil {
		res.bad = true
		return false
	}
	if m := errorMessage(ch.Error); m != "" {
		res.errMsg = m
	}
	n := uint32(0)
	for _, x := range ch.Choices {
		if x.Text != "" || x.Delta.Content != "" || x.Delta.ReasoningContent != "" {
			n++
		}
	}
	now := pdtrace.Now()
	setID := !c.idSet && ch.ID != ""
	if setID {
		c.idSet, c.lastID = true, ch.ID
	}
	if n > 0 {
		c.first = true
	}
	if setID || n > 0 {
		c.t.do(func(q *pdtrace.Request) error {
			if setID {
				if err := q.SetString("gen_ai.response.id", ch.ID); err != nil {
					return err
				}
			}
			if n == 0 {
				return nil
			}
			return q.Tokens(now, n)
		})
	}
	c.u.merge(ch.Usage)
	return ch.Usage != nil && len(ch.Choices) == 0
}

// read consumes a decode stream for assembly.
func (c *tokenCounter) read(body io.Reader, asm *assembler) (sseResult, error) {
	var res sseResult
	size := 0
	err := scanSSE(body, func(line []byte) error {
		data, ok := sseData(line)
		if !ok {
			return nil
		}
		size += len(data)
		if size > maxAssembled {
			return fmt.Errorf("the decode answer is over %d bytes", maxAssembled)
		}
		c.chunk(data, &res)
		if !bytes.Equal(data, []byte("[DONE]")) && asm.add(data) != nil {
			res.bad = true
		}
		return nil
	})
	return res, err
}

// relay forwards the event stream line by line, flushing at each event
// end. With dropUsage the usage-only chunk (asked for by the sidecar, not
// the client) is not forwarded.
func (c *tokenCounter) relay(w http.ResponseWriter, body io.Reader, dropUsage bool) (res sseResult, readErr, writeErr error) {
	rc := http.NewResponseController(w)
	skipBlank := false
	readErr = scanSSE(body, func(line []byte) error {
		if len(line) == 0 {
			if skipBlank {
				skipBlank = false
				return nil
			}
			if _, err := w.Write([]byte("\n")); err != nil {
				writeErr = err
				return err
			}
			if err := rc.Flush(); err != nil {
				writeErr = err
				return err
			}
			return nil
		}
		if data, ok := sseData(line); ok {
			if c.chunk(data, &res) && dropUsage {
				skipBlank = true
				return nil
			}
		}
		if _, err := w.Write(line); err != nil {
			writeErr = err
			return err
		}
		if _, err := w.Write([]byte("\n")); err != nil {
			writeErr = err
			return err
		}
		return nil
	})
	if writeErr != nil {
		readErr = nil
	} else {
		_ = rc.Flush()
	}
	return res, readErr, writeErr
}

// decisionReason is the gateway's reason for a decode-only pick, from
// x-pd-decision-reason when it is 1-64 characters of letters, digits and
// _.:-, else "no prefiller".
func decisionReason(v string) string {
	if len(v) == 0 || len(v) > 64 {
		return "no prefiller"
	}
	for _, c := range v {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '.' || c == ':' || c == '-'
		if !ok {
			return "no prefiller"
		}
	}
	return v
}
