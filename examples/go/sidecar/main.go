// Command sidecar is a prefill/decode routing sidecar in the shape of
// llm-d's: it serves the OpenAI API in front of a decode server, sends the
// prefill to the host named in the x-prefiller-host-port header (nixlv2,
// lmcache or shared-storage: prefill first, then decode; sglang: both at
// once) and traces every request with libpdtrace. Non-streamed requests
// are streamed from decode and assembled, so the first token is observed
// for every request. docs/guide-go.md lists the flags.
//
// Tracing is configured by the OTEL_* environment, e.g.
// OTEL_TRACES_EXPORTER=console PDTRACE_CONSOLE_PATH=spans.jsonl.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "listen address")
	port := flag.Int("port", 0, "listen port (overrides the port of -listen)")
	decoder := flag.String("decoder-url", "http://127.0.0.1:8200",
		"decode server: base URL (http://host:8200) or full endpoint URL (http://host:8200/v1/completions)")
	flag.StringVar(decoder, "decode-url", *decoder, "same as -decoder-url")
	prefill := flag.String("prefill-url", "",
		"prefill server used when a request names none in x-prefiller-host-port (base or endpoint URL)")
	connector := flag.String("connector", "nixlv2", "KV connector: nixlv2, lmcache, shared-storage or sglang")
	bootstrap := flag.Int("bootstrap-port", 8998, "sglang bootstrap port")
	allow := flag.String("prefiller-allowlist", "",
		"comma-separated host:port a client may name in x-prefiller-host-port (\"*\": any); the -prefill-url host is always allowed")
	prefTLS := flag.Bool("prefiller-tls", false, "reach the hosts named in x-prefiller-host-port over https")
	caFile := flag.String("upstream-ca-file", "", "PEM CA certificate(s) to trust for https upstreams (default: the system's)")
	certFile := flag.String("upstream-cert-file", "", "PEM client certificate for https upstreams (mutual TLS)")
	keyFile := flag.String("upstream-key-file", "", "PEM key of -upstream-cert-file")
	noAssemble := flag.Bool("no-assemble", false,
		"send non-streamed requests to decode as they are (no streamed decode, first token not observed)")
	rate := flag.Float64("rate-limit", 0, "max requests per second (0: no limit)")
	burst := flag.Int("rate-burst", 1, "requests admitted at once under -rate-limit")
	maxConc := flag.Int("max-concurrent", 0, "max requests in flight (0: no limit)")
	queueWait := flag.Duration("queue-timeout", 30*time.Second, "longest wait for -rate-limit or -max-concurrent before 429 or 503")
	maxBody := flag.Int64("max-body-bytes", 32<<20, "largest request body (413 above it)")
	bodyTimeout := flag.Duration("body-read-timeout", 30*time.Second, "time to read a request body (408 after it)")
	accessLog := flag.Bool("access-log", true, "one log line per request: method, path, status, true TTFT ms, total ms")
	flag.Parse()

	addr := *listen
	if *port != 0 {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			log.Fatalf("bad -listen %q: %v", addr, err)
		}
		addr = net.JoinHostPort(host, strconv.Itoa(*port))
	}
	var allowlist []string
	if *allow != "" {
		allowlist = strings.Split(*allow, ",")
	}

	tracer, err := pdtrace.Open(&pdtrace.Options{
		Log: func(level pdtrace.LogLevel, msg string) { log.Printf("pdtrace[%d]: %s", level, msg) },
	})
	if err != nil {
		log.Fatalf("pdtrace: %v", err)
	}
	proxy, err := NewProxy(Config{
		DecoderURL: *decoder, PrefillURL: *prefill, Connector: *connector, BootstrapPort: *bootstrap,
		PrefillerAllow: allowlist, PrefillerTLS: *prefTLS,
		CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile,
		NoAssemble: *noAssemble, RateLimit: *rate, RateBurst: *burst, MaxConcurrent: *maxConc,
		QueueTimeout: *queueWait, MaxBodyBytes: *maxBody, BodyReadTimeout: *bodyTimeout,
		AccessLog: *accessLog,
	}, tracer)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: addr, Handler: proxy, ReadHeaderTimeout: 10 * time.Second}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	log.Printf("sidecar listening on %s, decoder %s, connector %s", addr, proxy.decoder, *connector)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Printf("serve: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tracer.Close(ctx); err != nil {
		log.Printf("pdtrace close: %v", err)
	}
}
