// Command sink is the loopback OTLP/HTTP receiver of the benchmarks.
//
// It accepts POST /v1/traces (protobuf, optionally gzip or zstd), counts
// requests, body bytes as received (after compression, i.e. wire bytes),
// decoded bytes and spans (by a minimal walk of ExportTraceServiceRequest),
// and answers 200 with an empty ExportTraceServiceResponse. GET /stats
// returns the counters as JSON; POST /reset zeroes them. The listening
// port is printed on stdout as the first line. It listens on 127.0.0.1
// only and exits after -max-seconds.
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

var (
	nRequests, nBody, nRaw, nSpans, nErrors atomic.Uint64
	zdec                                    *zstd.Decoder
	bufPool                                 = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	gzPool                                  sync.Pool
)

// varint reads a protobuf varint.
func varint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad varint")
}

// fields calls fn for each length-delimited field of msg and skips the rest.
func fields(msg []byte, fn func(num uint64, val []byte) error) error {
	for len(msg) > 0 {
		key, n, err := varint(msg)
		if err != nil {
			return err
		}
		msg = msg[n:]
		switch key & 7 {
		case 0:
			_, n, err = varint(msg)
			if err != nil {
				return err
			}
			msg = msg[n:]
		case 1:
			if len(msg) < 8 {
				return errors.New("short fixed64")
			}
			msg = msg[8:]
		case 5:
			if len(msg) < 4 {
				return errors.New("short fixed32")
			}
			msg = msg[4:]
		case 2:
			l, n, err := varint(msg)
			if err != nil || uint64(len(msg)-n) < l {
				return errors.New("bad length")
			}
			if err := fn(key>>3, msg[n:n+int(l)]); err != nil {
				return err
			}
			msg = msg[n+int(l):]
		default:
			return errors.New("bad wire type")
		}
	}
	return nil
}

// countSpans counts ExportTraceServiceRequest.resource_spans[].scope_spans[].spans[].
func countSpans(req []byte) (uint64, error) {
	var spans uint64
	err := fields(req, func(f uint64, rs []byte) error {
		if f != 1 {
			return nil
		}
		return fields(rs, func(f uint64, ss []byte) error {
			if f != 2 {
				return nil
			}
			return fields(ss, func(f uint64, _ []byte) error {
				if f == 2 {
					spans++
				}
				return nil
			})
		})
	})
	return spans, err
}

func traces(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	if _, err := io.Copy(buf, io.LimitReader(r.Body, 64<<20)); err != nil {
		nErrors.Add(1)
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	wire := buf.Bytes()
	raw := wire
	var err error
	switch r.Header.Get("Content-Encoding") {
	case "", "identity":
	case "gzip":
		var zr *gzip.Reader
		if v := gzPool.Get(); v != nil {
			zr = v.(*gzip.Reader)
			err = zr.Reset(bytes.NewReader(wire))
		} else {
			zr, err = gzip.NewReader(bytes.NewReader(wire))
		}
		if err == nil {
			raw, err = io.ReadAll(zr)
			gzPool.Put(zr)
		}
	case "zstd":
		raw, err = zdec.DecodeAll(wire, nil)
	default:
		err = errors.New("unknown encoding")
	}
	var spans uint64
	if err == nil {
		spans, err = countSpans(raw)
	}
	if err != nil {
		nErrors.Add(1)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	nRequests.Add(1)
	nBody.Add(uint64(len(wire)))
	nRaw.Add(uint64(len(raw)))
	nSpans.Add(spans)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func stats(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/reset" {
		nRequests.Store(0)
		nBody.Store(0)
		nRaw.Store(0)
		nSpans.Store(0)
		nErrors.Store(0)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"requests":    nRequests.Load(),
		"body_bytes":  nBody.Load(),
		"raw_bytes":   nRaw.Load(),
		"spans":       nSpans.Load(),
		"errors":      nErrors.Load(),
		"cpu_seconds": cpuSeconds(),
	})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback)")
	maxSeconds := flag.Int("max-seconds", 1800, "exit after this many seconds")
	flag.Parse()
	var err error
	zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(2))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		fmt.Fprintln(os.Stderr, "sink: refusing a non-loopback address")
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", traces)
	mux.HandleFunc("/stats", stats)
	mux.HandleFunc("/reset", stats)
	time.AfterFunc(time.Duration(*maxSeconds)*time.Second, func() { os.Exit(0) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
}
