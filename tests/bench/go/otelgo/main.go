// Command otelgo is the opentelemetry-go row of the benchmarks: the same
// traced P/D request as libpdtrace's (request, prefill and decode spans with
// the same attributes, the breakdown computed from six marks, W3C
// propagation extracted from the inbound traceparent and injected for both
// legs), exported by otlptracehttp through a BatchSpanProcessor.
package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"pdtrace.test/bench/internal/benchutil"
)

const inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

const p = "llm_d.pd_proxy."

func ms(a, b time.Time) float64 { return float64(b.Sub(a).Nanoseconds()) / 1e6 }

// requestID returns a random UUID-formatted id, as libpdtrace generates.
func requestID() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rand.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

func main() {
	c := benchutil.Parse()
	ctx := context.Background()
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(c.Endpoint)}
	switch c.Compression {
	case "none":
		opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.NoCompression))
	case "gzip":
		opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	default:
		fmt.Fprintln(os.Stderr, "otlptracehttp supports none and gzip only")
		os.Exit(3)
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	host, _ := os.Hostname()
	res := resource.NewSchemaless(
		attribute.String("service.name", "llm-d-pd-proxy"),
		attribute.String("telemetry.sdk.name", "opentelemetry"),
		attribute.String("telemetry.sdk.language", "go"),
		attribute.String("telemetry.sdk.version", "1.47.0"),
		attribute.Int("process.pid", os.Getpid()),
		attribute.String("host.name", host),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithBatcher(exp,
			sdktrace.WithMaxExportBatchSize(c.Batch),
			sdktrace.WithMaxQueueSize(c.Queue),
			sdktrace.WithBatchTimeout(time.Duration(c.DelayMs)*time.Millisecond)),
	)
	tracer := tp.Tracer("libpdtrace-bench", trace.WithInstrumentationVersion("0.1.0"))
	prop := propagation.TraceContext{}

	one := func(int) {
		a := time.Now()
		in := propagation.MapCarrier{"traceparent": inbound}
		pctx := prop.Extract(ctx, in)
		rctx, req := tracer.Start(pctx, "llm_d.pd_proxy.request",
			trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(a))
		id := requestID()
		req.SetAttributes(
			attribute.String("http.request.method", "POST"),
			attribute.String("url.path", "/v1/chat/completions"),
			attribute.String("gen_ai.request.model", "llama-3.1-8b"),
			attribute.String("gen_ai.operation.name", "chat"),
			attribute.Int64("gen_ai.request.max_tokens", 128),
			attribute.Bool("gen_ai.request.stream", true))

		ps := time.Now()
		_, pre := tracer.Start(rctx, "llm_d.pd_proxy.prefill",
			trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(ps))
		hp := propagation.MapCarrier{}
		prop.Inject(trace.ContextWithSpan(rctx, pre), hp)
		hp["x-request-id"] = id
		pe := time.Now()
		pre.SetAttributes(
			attribute.String("server.address", "10.0.0.1"),
			attribute.Int64("server.port", 8000),
			attribute.Int64("http.response.status_code", 200))
		pre.End(trace.WithTimestamp(pe))
		req.SetAttributes(
			attribute.String(p+"prefill_target", "10.0.0.1:8000"),
			attribute.Int64(p+"prefill.status_code", 200))

		ds := time.Now()
		_, dec := tracer.Start(rctx, "llm_d.pd_proxy.decode",
			trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(ds))
		hd := propagation.MapCarrier{}
		prop.Inject(trace.ContextWithSpan(rctx, dec), hd)
		hd["x-request-id"] = id
		f := time.Now()
		l := time.Now()
		dec.SetAttributes(
			attribute.String("server.address", "10.0.0.2"),
			attribute.Int64("server.port", 8000),
			attribute.Int64("http.response.status_code", 200))
		req.SetAttributes(
			attribute.String(p+"decode_target", "10.0.0.2:8000"),
			attribute.Int64(p+"decode.status_code", 200),
			attribute.Int64("http.response.status_code", 200))
		const in_, out, cached = 1024, 128, 512
		e := time.Now()
		bd := []attribute.KeyValue{
			attribute.Float64(p+"queue_ms", ms(a, ps)),
			attribute.Float64(p+"prefill_duration_ms", ms(ps, pe)),
			attribute.Float64(p+"kv_transfer_overhead_ms", ms(pe, ds)),
			attribute.Float64(p+"decode_ttft_ms", ms(ds, f)),
			attribute.Float64(p+"true_ttft_ms", ms(a, f)),
			attribute.Float64(p+"decode_duration_ms", ms(ds, e)),
			attribute.Float64(p+"total_duration_ms", ms(a, e)),
			attribute.Float64(p+"tpot_ms", ms(f, l)/float64(out-1)),
			attribute.String(p+"request_id", id),
		}
		req.SetAttributes(bd...)
		req.SetAttributes(
			attribute.String(p+"connector", "nixlv2"),
			attribute.Bool(p+"disaggregation_enabled", true),
			attribute.Bool(p+"concurrent_pd", false),
			attribute.Int64("gen_ai.usage.input_tokens", in_),
			attribute.Int64("gen_ai.usage.output_tokens", out),
			attribute.Int64("gen_ai.usage.cache_read.input_tokens", cached))
		dec.SetAttributes(bd...)
		dec.SetAttributes(attribute.Int64("gen_ai.usage.output_tokens", out))
		dec.End(trace.WithTimestamp(e))
		req.End(trace.WithTimestamp(e))
	}
	flush := func() {
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := tp.ForceFlush(fctx); err != nil {
			fmt.Fprintln(os.Stderr, "flush:", err)
		}
	}
	benchutil.Run(c, "otel-go", one, flush, nil)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = tp.Shutdown(sctx)
}
