package main

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// rateLimiter is a token bucket: rate requests per second, bursts of
// burst. take reserves the next slot and says how long to wait for it.
type rateLimiter struct {
	mu       sync.Mutex
	interval time.Duration
	burst    time.Duration // interval * burst
	next     time.Time     // when the bucket is full again minus burst
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	iv := time.Duration(float64(time.Second) / rate)
	return &rateLimiter{interval: iv, burst: iv * time.Duration(burst)}
}

// wait blocks until a slot is free, for at most maxWait; false when the
// wait would be longer (nothing is reserved) or ctx ended.
func (l *rateLimiter) wait(ctx context.Context, maxWait time.Duration) bool {
	l.mu.Lock()
	now := time.Now()
	if earliest := now.Add(-l.burst); l.next.Before(earliest) {
		l.next = earliest
	}
	at := l.next.Add(l.interval)
	d := at.Sub(now)
	if d <= 0 {
		l.next = at
		l.mu.Unlock()
		return true
	}
	if d > maxWait {
		l.mu.Unlock()
		return false
	}
	l.next = at
	l.mu.Unlock()
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// slots bounds the requests in flight; acquire waits at most maxWait.
type slots chan struct{}

func (s slots) acquire(ctx context.Context, maxWait time.Duration) bool {
	select {
	case s <- struct{}{}:
		return true
	default:
	}
	tm := time.NewTimer(maxWait)
	defer tm.Stop()
	select {
	case s <- struct{}{}:
		return true
	case <-tm.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (s slots) release() { <-s }

// apiError is an OpenAI-style error body.
type apiError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    int    `json:"code"`
	} `json:"error"`
}

// writeError answers with a JSON error body.
func writeError(w http.ResponseWriter, status int, errType, msg string) {
	var e apiError
	e.Error.Message, e.Error.Type, e.Error.Code = msg, errType, status
	b, _ := json.Marshal(e)
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// recorder keeps the status sent to the client and the request's
// timings, for the access log. It passes Flush and the response
// controller's calls through.
type recorder struct {
	http.ResponseWriter
	status      int
	ttft, total float64 // ms; < 0 when not observed
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.wroteHeader, r.status = true, code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wroteHeader {
		r.wroteHeader, r.status = true, http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func fmtMs(v float64) string {
	if v < 0 {
		return "-"
	}
	b, _ := json.Marshal(float64(int64(v*1000+0.5)) / 1000)
	return string(b)
}
