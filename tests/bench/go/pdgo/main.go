// Command pdgo is the libpdtrace-through-Go row of the benchmarks: the same
// traced P/D request as bench_c_rows.c, made with the Go binding.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"

	"pdtrace.test/bench/internal/benchutil"
)

const inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func main() {
	c := benchutil.Parse()
	comp := map[string]pdtrace.Compression{
		"none": pdtrace.CompressionNone, "gzip": pdtrace.CompressionGzip,
		"zstd": pdtrace.CompressionZstd}[c.Compression]
	t, err := pdtrace.Open(&pdtrace.Options{
		Exporter:           pdtrace.ExporterOTLP,
		Endpoint:           c.Endpoint,
		Compression:        comp,
		MaxQueueSize:       int64(c.Queue),
		MaxExportBatchSize: int64(c.Batch),
		ScheduleDelay:      time.Duration(c.DelayMs) * time.Millisecond,
		IgnoreEnvironment:  true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(1)
	}
	// One request function (and its header maps) per goroutine.
	mk := func() func(int) {
		hp, hd := http.Header{}, http.Header{}
		return func(int) {
			r, _ := t.BeginRemote(inbound, "", 0)
			r.SetConnector("nixlv2")
			r.SetString("http.request.method", "POST")
			r.SetString("url.path", "/v1/chat/completions")
			r.SetString("gen_ai.request.model", "llama-3.1-8b")
			r.SetString("gen_ai.operation.name", "chat")
			r.SetInt("gen_ai.request.max_tokens", 128)
			r.SetBool("gen_ai.request.stream", true)
			r.InjectPrefill(hp)
			r.PrefillSent(0)
			r.PrefillDone(0)
			r.SetLeg(pdtrace.LegPrefill, "10.0.0.1:8000", 200, "")
			r.InjectDecode(hd)
			r.DecodeSent(0)
			r.FirstToken(0)
			r.LastToken(0)
			r.SetLeg(pdtrace.LegDecode, "10.0.0.2:8000", 200, "")
			r.SetUsage(1024, 128, 512)
			r.SetResponse(200, "")
			r.End(0)
			r.Close()
		}
	}
	flush := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := t.Flush(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "flush:", err)
		}
	}
	extra := func() map[string]any {
		st, _ := t.Stats()
		return map[string]any{"dropped_queue_full": st.DroppedQueueFull,
			"spans_exported": st.SpansExported}
	}
	benchutil.RunMany(c, "pdtrace-go", mk, flush, extra)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = t.Close(ctx)
}
