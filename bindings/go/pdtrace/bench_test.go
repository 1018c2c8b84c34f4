package pdtrace

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// benchRequest traces one sequential P/D request the way the sidecar does:
// 3 spans and about 20 attributes, both propagation headers injected.
func benchRequest(tr *Tracer, in *http.Request, ph, dh http.Header) error {
	r, err := tr.Begin(in, 0)
	if err != nil {
		return err
	}
	defer r.Close()
	_ = r.SetConnector("nixlv2")
	_ = r.SetString("gen_ai.request.model", "meta-llama/Llama-3.1-8B-Instruct")
	_ = r.SetString("gen_ai.operation.name", "chat")
	_ = r.SetInt("gen_ai.request.max_tokens", 128)
	_ = r.SetBool("gen_ai.request.stream", true)
	_ = r.InjectPrefill(ph)
	_ = r.PrefillSent(0)
	_ = r.PrefillDone(0)
	_ = r.SetLeg(LegPrefill, "127.0.0.1:8100", 200, "")
	_ = r.InjectDecode(dh)
	_ = r.DecodeSent(0)
	_ = r.Tokens(0, 1)
	_ = r.Tokens(0, 63)
	_ = r.SetLeg(LegDecode, "127.0.0.1:8200", 200, "")
	_ = r.SetUsage(812, 64, 256)
	_ = r.SetResponse(200, "")
	_, err = r.End(0)
	return err
}

func newSink(b *testing.B) *httptest.Server {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(sink.Close)
	return sink
}

// BenchmarkRequest measures the caller's cost of one traced P/D request,
// exporting OTLP/HTTP protobuf to a loopback sink.
func BenchmarkRequest(b *testing.B) {
	sink := newSink(b)
	tr, err := Open(&Options{
		Exporter:          ExporterOTLP,
		Endpoint:          sink.URL + "/v1/traces",
		Compression:       CompressionNone,
		IgnoreEnvironment: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	in := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	in.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	in.Header.Set("x-request-id", "bench-request")
	ph, dh := http.Header{}, http.Header{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := benchRequest(tr, in, ph, dh); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st, _ := tr.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = tr.Close(ctx)
	b.ReportMetric(float64(st.DroppedQueueFull)/float64(b.N), "dropped/op")
}

// BenchmarkSetInt is the floor: one attribute, one cgo call.
func BenchmarkSetInt(b *testing.B) {
	tr, err := Open(&Options{Exporter: ExporterNone, IgnoreEnvironment: true})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close(context.Background())
	r, _ := tr.BeginRemote("", "", 0)
	defer r.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = r.SetInt("k", 1)
	}
}

// BenchmarkRequestNoExport is BenchmarkRequest with the exporter "none":
// the spans are built and dropped, so no exporter thread competes.
func BenchmarkRequestNoExport(b *testing.B) {
	tr, err := Open(&Options{Exporter: ExporterNone, IgnoreEnvironment: true})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close(context.Background())
	in := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	in.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	in.Header.Set("x-request-id", "bench-request")
	ph, dh := http.Header{}, http.Header{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := benchRequest(tr, in, ph, dh); err != nil {
			b.Fatal(err)
		}
	}
}
