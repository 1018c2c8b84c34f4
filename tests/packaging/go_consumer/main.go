// A program outside the libpdtrace repository that uses the Go binding:
// it exports one traced P/D request to an OTLP/HTTP receiver it runs on
// loopback and checks what arrived. Built by tests/packaging/go_module.sh.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pdtrace/libpdtrace/bindings/go/pdtrace"
)

func main() {
	var mu sync.Mutex
	var bodies [][]byte
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" {
			mu.Lock()
			bodies = append(bodies, b)
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	tr, err := pdtrace.Open(&pdtrace.Options{
		ServiceName:       "go-module-test",
		Exporter:          pdtrace.ExporterOTLP,
		Endpoint:          "http://" + ln.Addr().String() + "/v1/traces",
		Compression:       pdtrace.CompressionNone,
		IgnoreEnvironment: true,
	})
	if err != nil {
		fail("open: %v", err)
	}
	req, err := tr.BeginRemote("", "", pdtrace.Now())
	if err != nil {
		fail("begin: %v", err)
	}
	check(req.SetConnector("nixlv2"))
	check(req.PrefillSent(pdtrace.Now()))
	check(req.PrefillDone(pdtrace.Now()))
	check(req.DecodeSent(pdtrace.Now()))
	check(req.Tokens(pdtrace.Now(), 1))
	check(req.SetResponse(200, ""))
	bd, err := req.End(pdtrace.Now())
	check(err)
	req.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check(tr.Flush(ctx))
	st, err := tr.Stats()
	check(err)
	check(tr.Close(ctx))

	mu.Lock()
	all := bytes.Join(bodies, nil)
	n := len(bodies)
	mu.Unlock()
	if st.SpansExported < 3 || n == 0 {
		fail("exported %d spans in %d requests, want >= 3 spans", st.SpansExported, n)
	}
	for _, name := range []string{"llm_d.pd_proxy.request", "llm_d.pd_proxy.prefill",
		"llm_d.pd_proxy.decode", "go-module-test"} {
		if !bytes.Contains(all, []byte(name)) {
			fail("%q not in the exported payload", name)
		}
	}
	maps, _ := os.ReadFile("/proc/self/maps")
	shared := strings.Contains(string(maps), "libpdtrace.so")
	if want := os.Getenv("PDTRACE_WANT_SHARED") == "1"; shared != want {
		fail("shared libpdtrace loaded: %v, want %v", shared, want)
	}
	v, _ := pdtrace.Version()
	if want := os.Getenv("PDTRACE_WANT_VERSION"); want != "" && v != want {
		fail("library version %s, want %s", v, want)
	}
	fmt.Printf("ok: %d spans exported in %d request(s), library %s, true TTFT %v\n",
		st.SpansExported, n, v, bd.TrueTTFT)
}

func check(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+f+"\n", a...)
	os.Exit(1)
}
