// Package bench compares the caller's cost of tracing one P/D request
// through the libpdtrace Go binding with the same spans and attributes
// made with the OpenTelemetry Go SDK (BatchSpanProcessor, OTLP/HTTP
// exporter). Both export to the same loopback sink that reads and discards
// request bodies.
//
//	go test -run x -bench . -benchmem
package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

const (
	pfx   = "llm_d.pd_proxy."
	model = "meta-llama/Llama-3.1-8B-Instruct"
	inTP  = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

func sink(b *testing.B) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(s.Close)
	return s
}

func inbound() *http.Request {
	in := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	in.Header.Set("traceparent", inTP)
	in.Header.Set("x-request-id", "bench-request")
	return in
}

func openPdtrace(b *testing.B) *pdtrace.Tracer {
	s := sink(b)
	tr, err := pdtrace.Open(&pdtrace.Options{
		Exporter:          pdtrace.ExporterOTLP,
		Endpoint:          s.URL + "/v1/traces",
		Compression:       pdtrace.CompressionNone,
		IgnoreEnvironment: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	return tr
}

func closePdtrace(b *testing.B, tr *pdtrace.Tracer) {
	b.StopTimer()
	st, _ := tr.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = tr.Close(ctx)
	b.ReportMetric(float64(st.DroppedQueueFull)/float64(b.N), "dropped/op")
}

// BenchmarkPdtrace: one sequential P/D request through the binding's
// batched calls (8 cgo calls: begin with connector, model and attributes;
// prefill headers and mark; prefill outcome; decode headers and mark; two
// token calls; outcome, usage and end; close). The library adds the
// breakdown (8 doubles) on the request and decode spans and the leg
// attributes itself.
func BenchmarkPdtrace(b *testing.B) {
	tr := openPdtrace(b)
	in := inbound()
	ph, dh := http.Header{}, http.Header{}
	out := pdtrace.Outcome{Status: 200, DecodeTarget: "127.0.0.1:8200", DecodeStatus: 200,
		Usage: true, InputTokens: 812, OutputTokens: 64, CachedInputTokens: 256}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := tr.BeginWith(in, 0, "nixlv2", model,
			pdtrace.String("gen_ai.operation.name", "chat"),
			pdtrace.Int("gen_ai.request.max_tokens", 128),
			pdtrace.Bool("gen_ai.request.stream", true))
		if err != nil {
			b.Fatal(err)
		}
		_ = r.SendPrefill(ph, 0)
		_ = r.PrefillResult(0, "127.0.0.1:8100", 200, "")
		_ = r.SendDecode(dh, 0)
		_ = r.Tokens(0, 1)
		_ = r.Tokens(0, 63)
		if _, err := r.Finish(0, &out); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
	closePdtrace(b, tr)
}

// BenchmarkPdtracePerCall: the same request with one cgo call per library
// call (19 calls).
func BenchmarkPdtracePerCall(b *testing.B) {
	tr := openPdtrace(b)
	in := inbound()
	ph, dh := http.Header{}, http.Header{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := tr.Begin(in, 0)
		if err != nil {
			b.Fatal(err)
		}
		_ = r.SetConnector("nixlv2")
		_ = r.SetModel(model)
		_ = r.SetString("gen_ai.operation.name", "chat")
		_ = r.SetInt("gen_ai.request.max_tokens", 128)
		_ = r.SetBool("gen_ai.request.stream", true)
		_ = r.InjectPrefill(ph)
		_ = r.PrefillSent(0)
		_ = r.PrefillDone(0)
		_ = r.SetLeg(pdtrace.LegPrefill, "127.0.0.1:8100", 200, "")
		_ = r.InjectDecode(dh)
		_ = r.DecodeSent(0)
		_ = r.Tokens(0, 1)
		_ = r.Tokens(0, 63)
		_ = r.SetLeg(pdtrace.LegDecode, "127.0.0.1:8200", 200, "")
		_ = r.SetUsage(812, 64, 256)
		_ = r.SetResponse(200, "")
		if _, err := r.End(0); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
	closePdtrace(b, tr)
}

func ms(a, b time.Time) float64 { return float64(b.Sub(a).Nanoseconds()) / 1e6 }

// BenchmarkOtelGo: the same three spans and attributes with the
// OpenTelemetry Go SDK; the breakdown is computed here, as an application
// using the SDK would have to.
func BenchmarkOtelGo(b *testing.B) {
	s := sink(b)
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(s.URL+"/v1/traces"),
		otlptracehttp.WithCompression(otlptracehttp.NoCompression))
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "llm-d-pd-proxy"))),
	)
	tracer := tp.Tracer("bench")
	prop := propagation.TraceContext{}
	in := inbound()
	ph, dh := http.Header{}, http.Header{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := time.Now()
		ctx := prop.Extract(context.Background(), propagation.HeaderCarrier(in.Header))
		ctx, root := tracer.Start(ctx, pfx+"request", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(a))
		rid := in.Header.Get("x-request-id")
		root.SetAttributes(
			attribute.String("http.request.method", in.Method),
			attribute.String("url.path", in.URL.Path),
			attribute.String(pfx+"connector", "nixlv2"),
			attribute.String("gen_ai.request.model", model),
			attribute.String("gen_ai.operation.name", "chat"),
			attribute.Int64("gen_ai.request.max_tokens", 128),
			attribute.Bool("gen_ai.request.stream", true),
		)
		ps := time.Now()
		pctx, pre := tracer.Start(ctx, pfx+"prefill", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(ps))
		prop.Inject(pctx, propagation.HeaderCarrier(ph))
		ph.Set("x-request-id", rid)
		pe := time.Now()
		pre.SetAttributes(attribute.String("server.address", "127.0.0.1"), attribute.Int64("server.port", 8100),
			attribute.Int64("http.response.status_code", 200))
		pre.End(trace.WithTimestamp(pe))
		ds := time.Now()
		dctx, dec := tracer.Start(ctx, pfx+"decode", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(ds))
		prop.Inject(dctx, propagation.HeaderCarrier(dh))
		dh.Set("x-request-id", rid)
		f := time.Now()
		l := time.Now()
		e := time.Now()
		dec.SetAttributes(attribute.String("server.address", "127.0.0.1"), attribute.Int64("server.port", 8200),
			attribute.Int64("http.response.status_code", 200))
		summary := []attribute.KeyValue{
			attribute.Float64(pfx+"queue_ms", ms(a, ps)),
			attribute.Float64(pfx+"prefill_duration_ms", ms(ps, pe)),
			attribute.Float64(pfx+"kv_transfer_overhead_ms", ms(pe, ds)),
			attribute.Float64(pfx+"decode_ttft_ms", ms(ds, f)),
			attribute.Float64(pfx+"true_ttft_ms", ms(a, f)),
			attribute.Float64(pfx+"decode_duration_ms", ms(ds, e)),
			attribute.Float64(pfx+"total_duration_ms", ms(a, e)),
			attribute.Float64(pfx+"tpot_ms", ms(f, l)/63),
		}
		dec.SetAttributes(summary...)
		dec.End(trace.WithTimestamp(e))
		root.SetAttributes(summary...)
		root.SetAttributes(
			attribute.String(pfx+"request_id", rid),
			attribute.String(pfx+"prefill_target", "127.0.0.1:8100"),
			attribute.Int64(pfx+"prefill.status_code", 200),
			attribute.String(pfx+"decode_target", "127.0.0.1:8200"),
			attribute.Int64(pfx+"decode.status_code", 200),
			attribute.Bool(pfx+"disaggregation_enabled", true),
			attribute.Bool(pfx+"concurrent_pd", false),
			attribute.Int64("gen_ai.usage.input_tokens", 812),
			attribute.Int64("gen_ai.usage.output_tokens", 64),
			attribute.Int64("gen_ai.usage.cache_read.input_tokens", 256),
			attribute.Int64("http.response.status_code", 200),
		)
		root.SetStatus(codes.Unset, "")
		root.End(trace.WithTimestamp(e))
	}
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = tp.Shutdown(ctx)
}
