// Package pdtrace is the Go binding of libpdtrace, a C library that traces
// prefill/decode (P/D) disaggregated LLM serving: one root span per client
// request with prefill and decode child spans, the true-TTFT stage
// breakdown, W3C trace context propagation and OTLP export.
//
// The binding holds no tracing logic: every call maps to one libpdtrace
// call (or a few, batched into one cgo call), and errors carry the
// library's own status and message.
//
// Thread rules follow the C library: a Tracer may be used from any number
// of goroutines at once; a Request or Span is used by one goroutine at a
// time (it may move between goroutines with the usual synchronisation).
// Close every Request and Span before closing their Tracer.
//
// Timestamps are Time values: CLOCK_MONOTONIC nanoseconds from Now(). The
// zero Time means "now" wherever a timestamp is accepted.
package pdtrace

import (
	"context"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"time"
)

// Time is a point on libpdtrace's clock: CLOCK_MONOTONIC nanoseconds
// (pdt_now_ns). The zero Time means "now" when passed to this package.
type Time uint64

// Now returns the current time on libpdtrace's clock.
func Now() Time { return cNow() }

// Add returns t+d.
func (t Time) Add(d time.Duration) Time { return Time(int64(t) + int64(d)) }

// Sub returns t-u.
func (t Time) Sub(u Time) time.Duration { return time.Duration(int64(t) - int64(u)) }

// HeaderVersion is the libpdtrace version of the headers this package was
// compiled against.
const HeaderVersion = headerVersion

// Version returns the version of the libpdtrace library in use at run
// time, as a string and as 0x00MMmmpp.
func Version() (string, uint32) { return cVersion() }

// Exporter selects where finished spans go (pdt_exporter_kind).
type Exporter int

// Exporters.
const (
	ExporterDefault Exporter = 0 // OTEL_TRACES_EXPORTER, else OTLP
	ExporterOTLP    Exporter = 1 // OTLP/HTTP protobuf
	ExporterConsole Exporter = 2 // OTLP JSON lines to a file or stdout
	ExporterNone    Exporter = 3 // spans are built and dropped (counted)
)

// Protocol of the OTLP export (pdt_protocol).
type Protocol int

// Protocols.
const (
	ProtocolDefault      Protocol = 0 // OTEL_EXPORTER_OTLP_*_PROTOCOL, else HTTP/protobuf
	ProtocolHTTPProtobuf Protocol = 1
	ProtocolGRPC         Protocol = 2
	ProtocolHTTPJSON     Protocol = 3
)

// Compression of OTLP requests (pdt_compression).
type Compression int

// Compressions.
const (
	CompressionDefault Compression = 0
	CompressionNone    Compression = 1
	CompressionGzip    Compression = 2
	CompressionZstd    Compression = 3
)

// Sampler selects the sampler (pdt_sampler_kind).
type Sampler int

// Samplers.
const (
	SamplerDefault                 Sampler = 0
	SamplerAlwaysOn                Sampler = 1
	SamplerAlwaysOff               Sampler = 2
	SamplerTraceIDRatio            Sampler = 3
	SamplerParentBasedAlwaysOn     Sampler = 4
	SamplerParentBasedAlwaysOff    Sampler = 5
	SamplerParentBasedTraceIDRatio Sampler = 6
)

// Options configure Open. Zero values mean "take it from the OTEL_*
// environment, else the library default"; values set here win over the
// environment. Durations are passed to the library in milliseconds.
type Options struct {
	ServiceName               string
	ResourceAttributes        string // "k=v,k=v", percent-encoded
	Exporter                  Exporter
	Endpoint                  string // full traces URL
	Headers                   string // "k=v,k=v", percent-encoded values
	Compression               Compression
	Timeout                   time.Duration // one export request
	ConsolePath               string        // console exporter file; "-" is stdout
	CAFile                    string
	ClientCert                string
	ClientKey                 string
	ScheduleDelay             time.Duration
	ExportTimeout             time.Duration
	MaxQueueSize              int64
	MaxExportBatchSize        int64
	AttributeCountLimit       int64
	AttributeValueLengthLimit int64
	Sampler                   Sampler
	SamplerRatio              *float64      // nil: unset
	TailTTFTThreshold         time.Duration // export unsampled requests slower than this; 0 = off
	TailKeepErrors            *bool         // nil: library default (keep)
	Disabled                  *bool         // nil: OTEL_SDK_DISABLED decides
	IgnoreEnvironment         bool
	// Log receives background messages (export failures, dropped spans,
	// ignored environment values). It is called from the library's
	// exporter thread; it must not block for long and must not close the
	// tracer.
	Log           func(level LogLevel, message string)
	SpoolDir      string
	SpoolMaxBytes int64
	// MaxConcurrentExports is how many export requests may be in flight
	// at once (1..64); 0: PDTRACE_EXPORT_MAX_CONCURRENT, else 4.
	MaxConcurrentExports int64
	// CompressionLevel: gzip 1..9, zstd -131072..22; 0:
	// PDTRACE_COMPRESSION_LEVEL, else the codec's default.
	CompressionLevel int
	// MetricsTenants lists, comma-separated, the tenants (Request.SetTenant)
	// that keep their name in the metrics' tenant label; any other is
	// counted as "other". "": PDTRACE_METRICS_TENANTS, else none.
	MetricsTenants string
	// Protocol: OTLP/HTTP protobuf (default), OTLP/gRPC or OTLP/HTTP
	// JSON; ProtocolDefault reads OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL.
	Protocol Protocol
	// MaxQueueBytes bounds the memory of spans queued or being exported
	// (at least 65536); 0: PDTRACE_MAX_QUEUE_BYTES, else 64 MiB.
	MaxQueueBytes int64
}

// Stats are the tracer's counters (pdt_stats).
type Stats struct {
	SpansStarted        uint64
	SpansEnded          uint64
	SpansNotSampled     uint64
	SpansExported       uint64
	SpansRejected       uint64
	DroppedQueueFull    uint64
	DroppedExportFailed uint64
	DroppedShutdown     uint64
	DroppedDisabled     uint64
	ExportRequests      uint64
	ExportRetries       uint64
	ExportFailures      uint64
	BytesSent           uint64
	QueueDepth          uint64
	AttributesDropped   uint64
	ValuesTruncated     uint64
	StringsSanitized    uint64
	RequestsCompleted   uint64
	SpansSpooled        uint64
	SpansReplayed       uint64
	SpoolDropped        uint64
	SpoolCorrupt        uint64
}

// Tracer owns a libpdtrace tracer and its exporter thread.
type Tracer struct {
	mu   sync.RWMutex // write-held only by Close
	h    tracerHandle // nil once closed
	live atomic.Int64 // open Requests and Spans
	// metricsCap is the buffer size the last Metrics call needed.
	metricsCap atomic.Int64
	log        cgo.Handle
	cleanup    runtime.Cleanup

	orphan     tracerHandle // set when Close left the C tracer to the last handle
	orphanOnce sync.Once
}

type tracerCleanup struct {
	h   tracerHandle
	log cgo.Handle
}

// Open opens a tracer and starts its exporter thread. opts nil means
// "environment and defaults only".
func Open(opts *Options) (*Tracer, error) {
	var lh cgo.Handle
	if opts != nil && opts.Log != nil {
		lh = cgo.NewHandle(opts.Log)
	}
	h, err := cOpen(opts, uintptr(lh))
	if err != nil {
		if lh != 0 {
			lh.Delete()
		}
		return nil, err
	}
	t := &Tracer{h: h, log: lh}
	// Safety net only: a Tracer dropped without Close. Requests and Spans
	// keep their Tracer reachable, so none is alive when this runs.
	t.cleanup = runtime.AddCleanup(t, func(c tracerCleanup) {
		cClose(c.h, 1000)
		if c.log != 0 {
			c.log.Delete()
		}
	}, tracerCleanup{h, lh})
	return t, nil
}

// timeoutMs turns a context deadline into a libpdtrace timeout: the time
// left, 0 if the context is already done, or -1 (the library's export
// timeout) without a deadline.
func timeoutMs(ctx context.Context) int64 {
	if ctx.Err() != nil {
		return 0
	}
	d, ok := ctx.Deadline()
	if !ok {
		return -1
	}
	ms := time.Until(d).Milliseconds()
	if ms < 0 {
		ms = 0
	}
	return ms
}

// handle returns the C tracer with the read lock held; the caller
// unlocks t.mu.RUnlock() when its C call is done.
func (t *Tracer) rlock(op string) (tracerHandle, error) {
	t.mu.RLock()
	if t.h == nil {
		t.mu.RUnlock()
		return nil, errTracerClosed(op)
	}
	return t.h, nil
}

// Flush exports every span ended before the call and waits for the
// export, bounded by ctx's deadline (the library's export timeout when ctx
// has none). A timeout gives an error with StatusTimeout; the spans stay
// queued.
func (t *Tracer) Flush(ctx context.Context) error {
	h, err := t.rlock("pdt_tracer_flush")
	if err != nil {
		return err
	}
	defer t.mu.RUnlock()
	_, err = cFlush(h, timeoutMs(ctx))
	return err
}

// MetricsContentType is the Content-Type of the text Metrics returns.
const MetricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// Metrics renders the tracer's Prometheus metrics (pdt_tracer_metrics) in
// the text exposition format 0.0.4, to serve on /metrics with
// MetricsContentType. It may be called from any goroutine while requests
// end on others. A buffer that turns out too small is retried with the
// size the library asks for.
func (t *Tracer) Metrics() (string, error) {
	h, err := t.rlock("pdt_tracer_metrics")
	if err != nil {
		return "", err
	}
	defer t.mu.RUnlock()
	size := int(t.metricsCap.Load())
	if size == 0 {
		size = 32 << 10
	}
	for {
		buf := make([]byte, size)
		n, err := cMetrics(h, buf)
		if e, ok := err.(*Error); ok && e.Status == StatusBufferSize {
			// Counters move between calls: a little headroom.
			size = n + n/16 + 256
			t.metricsCap.Store(int64(size))
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}

// Stats returns the tracer's counters.
func (t *Tracer) Stats() (Stats, error) {
	h, err := t.rlock("pdt_tracer_stats")
	if err != nil {
		return Stats{}, err
	}
	defer t.mu.RUnlock()
	return cStats(h)
}

// Close flushes, stops the exporter and frees the tracer, bounded by ctx's
// deadline (the library's export timeout when it has none). It is
// idempotent: later calls return nil. Spans not delivered in time are
// dropped and reported as an error with StatusTimeout.
//
// Requests and Spans must be closed before. If some are still open, Close
// waits for them until ctx is done; if they are still open then, the
// tracer is flushed, refuses new requests, and is freed by the last of
// them to close; Close returns an error with StatusState.
func (t *Tracer) Close(ctx context.Context) error {
	t.mu.Lock()
	h := t.h
	t.h = nil
	t.mu.Unlock()
	if h == nil {
		return nil
	}
	t.cleanup.Stop()
	if t.live.Load() > 0 && ctx.Done() != nil {
		tick := time.NewTicker(time.Millisecond)
		for t.live.Load() > 0 && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		tick.Stop()
	}
	if t.live.Load() > 0 {
		_, ferr := cFlush(h, timeoutMs(ctx))
		t.mu.Lock()
		t.orphan = h
		t.mu.Unlock()
		// The last handle may have closed since the load above;
		// release() sees orphan only from now on.
		if t.live.Load() == 0 {
			t.freeOrphan()
		}
		if ferr != nil {
			return ferr
		}
		return &Error{Op: "pdt_tracer_close", Status: StatusState,
			Message: "requests or spans still open; the tracer is freed when the last one is closed"}
	}
	_, err := cClose(h, timeoutMs(ctx))
	if t.log != 0 {
		t.log.Delete()
	}
	runtime.KeepAlive(t)
	return err
}

func (t *Tracer) acquire() { t.live.Add(1) }

func (t *Tracer) release() {
	if t.live.Add(-1) == 0 {
		t.mu.RLock()
		orphaned := t.orphan != nil
		t.mu.RUnlock()
		if orphaned {
			t.freeOrphan()
		}
	}
}

func (t *Tracer) freeOrphan() {
	t.orphanOnce.Do(func() {
		cClose(t.orphan, 1000)
		if t.log != 0 {
			t.log.Delete()
		}
	})
}
