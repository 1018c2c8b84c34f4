// Command sidecar is a prefill/decode routing sidecar in the shape of
// llm-d's: it serves the OpenAI API in front of a decode server, sends the
// prefill to the host named in the x-prefiller-host-port header (nixlv2,
// lmcache or shared-storage: prefill first, then decode; sglang: both at
// once) and traces every request with libpdtrace.
//
// Tracing is configured by the OTEL_* environment, e.g.
// OTEL_TRACES_EXPORTER=console PDTRACE_CONSOLE_PATH=spans.jsonl.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "listen address")
	decoder := flag.String("decoder-url", "http://127.0.0.1:8200", "decode server base URL")
	connector := flag.String("connector", "nixlv2", "KV connector: nixlv2, lmcache, shared-storage or sglang")
	bootstrap := flag.Int("bootstrap-port", 8998, "sglang bootstrap port")
	flag.Parse()

	tracer, err := pdtrace.Open(&pdtrace.Options{
		Log: func(level pdtrace.LogLevel, msg string) { log.Printf("pdtrace[%d]: %s", level, msg) },
	})
	if err != nil {
		log.Fatalf("pdtrace: %v", err)
	}
	proxy, err := NewProxy(Config{DecoderURL: *decoder, Connector: *connector, BootstrapPort: *bootstrap}, tracer)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: *listen, Handler: proxy, ReadHeaderTimeout: 10 * time.Second}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	log.Printf("sidecar listening on %s, decoder %s, connector %s", *listen, *decoder, *connector)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Printf("serve: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tracer.Close(ctx); err != nil {
		log.Printf("pdtrace close: %v", err)
	}
}
