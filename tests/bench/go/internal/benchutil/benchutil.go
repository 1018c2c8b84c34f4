// Package benchutil holds what the Go benchmark rows share: the command
// line, the measurement loop and the JSON result line that run_bench.py reads.
package benchutil

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Config is the command line common to the rows.
type Config struct {
	Endpoint    string // full traces URL on the loopback sink
	Compression string // none, gzip or zstd
	N           int    // timed requests
	Warm        int    // warm-up requests (not timed)
	FlushEvery  int    // flush after this many requests (outside the timing)
	Batch       int    // spans per export request
	Queue       int    // span queue size
	DelayMs     int    // batch schedule delay
	Rate        int    // rate mode: offered requests/s (0: closed loop)
	Seconds     float64
	Goroutines  int // rate mode: goroutines sharing the offered rate
}

// Parse reads the flags.
func Parse() Config {
	var c Config
	flag.StringVar(&c.Endpoint, "endpoint", "", "OTLP/HTTP traces URL (loopback)")
	flag.StringVar(&c.Compression, "compression", "gzip", "none, gzip or zstd")
	flag.IntVar(&c.N, "n", 20000, "timed requests")
	flag.IntVar(&c.Warm, "warm", 5000, "warm-up requests")
	flag.IntVar(&c.FlushEvery, "flush-every", 8192, "flush after this many requests")
	flag.IntVar(&c.Batch, "batch", 1536, "spans per export request (512 requests)")
	flag.IntVar(&c.Queue, "queue", 65536, "span queue size")
	flag.IntVar(&c.DelayMs, "delay-ms", 200, "batch schedule delay")
	flag.IntVar(&c.Rate, "rate", 0, "rate mode: offered requests/s for -seconds")
	flag.Float64Var(&c.Seconds, "seconds", 5, "rate mode duration")
	flag.IntVar(&c.Goroutines, "goroutines", 1, "rate mode: goroutines sharing the rate (RunMany rows)")
	flag.Parse()
	if c.Endpoint == "" || c.N <= 0 || c.Goroutines < 1 || c.Goroutines > 256 {
		fmt.Fprintln(os.Stderr, "need -endpoint, -n > 0 and -goroutines 1..256")
		os.Exit(2)
	}
	return c
}

func cpuNs() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// MaxRSSKB is the peak resident set size of the process.
func MaxRSSKB() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss
}

// Run warms up, then times c.N calls of one(i) one by one, flushing every
// c.FlushEvery requests and at the end (flushes are outside the per-request
// timing but inside the CPU and allocation totals). It prints one JSON line.
func Run(c Config, impl string, one func(i int), flush func(), extra func() map[string]any) {
	if c.Rate > 0 {
		runRate(c, impl, one, flush, extra)
		return
	}
	for i := 0; i < c.Warm; i++ {
		one(i)
		if (i+1)%c.FlushEvery == 0 {
			flush()
		}
	}
	flush()
	runtime.GC()
	lat := make([]int64, c.N)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuNs()
	w0 := time.Now()
	for i := 0; i < c.N; i++ {
		s := time.Now()
		one(i)
		lat[i] = int64(time.Since(s))
		if (i+1)%c.FlushEvery == 0 {
			flush()
		}
	}
	flush()
	wall := time.Since(w0)
	cpu1 := cpuNs()
	runtime.ReadMemStats(&ms1)
	slices.Sort(lat)
	var sum int64
	for _, v := range lat {
		sum += v
	}
	res := map[string]any{
		"impl":                impl,
		"n":                   c.N,
		"compression":         c.Compression,
		"caller_mean_ns":      float64(sum) / float64(c.N),
		"caller_p50_ns":       lat[c.N/2],
		"caller_p99_ns":       lat[int(float64(c.N)*0.99)],
		"cpu_ns_per_req":      float64(cpu1-cpu0) / float64(c.N),
		"wall_s":              wall.Seconds(),
		"allocs_per_req":      float64(ms1.Mallocs-ms0.Mallocs) / float64(c.N),
		"allocs_how":          "Go runtime.MemStats.Mallocs delta, all goroutines, incl. export",
		"alloc_bytes_per_req": float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(c.N),
		"maxrss_kb":           MaxRSSKB(),
		"gomaxprocs":          runtime.GOMAXPROCS(0),
	}
	if extra != nil {
		for k, v := range extra() {
			res[k] = v
		}
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
}

// runRate offers c.Rate requests/s for c.Seconds (open loop, 1 ms ticks),
// flushes and prints what was sent; the sink counts what arrived.
func runRate(c Config, impl string, one func(i int), flush func(), extra func() map[string]any) {
	t0 := time.Now()
	cpu0 := cpuNs()
	dur := time.Duration(c.Seconds * float64(time.Second))
	sent, late := 0, 0
	for {
		el := time.Since(t0)
		if el >= dur {
			break
		}
		due := int(el.Seconds() * float64(c.Rate))
		if due > sent+c.Rate/100 {
			late++
		}
		for sent < due {
			one(sent)
			sent++
		}
		time.Sleep(500 * time.Microsecond)
	}
	wall := time.Since(t0).Seconds()
	flush()
	res := map[string]any{
		"impl": impl, "mode": "rate", "rate": c.Rate, "seconds": wall,
		"busy_s":   time.Since(t0).Seconds(),
		"requests": sent, "achieved_rps": float64(sent) / wall, "late_ticks": late,
		"cpu_ns_per_req": float64(cpuNs()-cpu0) / float64(max(sent, 1)),
		"maxrss_kb":      MaxRSSKB(),
	}
	if extra != nil {
		for k, v := range extra() {
			res[k] = v
		}
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
}

// RunMany is Run for rows whose request function is not safe for
// concurrent use: mk makes one per goroutine. In rate mode with
// c.Goroutines > 1, that many goroutines each offer c.Rate/c.Goroutines
// requests/s; otherwise it is Run with one mk().
func RunMany(c Config, impl string, mk func() func(int), flush func(), extra func() map[string]any) {
	if c.Rate == 0 || c.Goroutines <= 1 {
		Run(c, impl, mk(), flush, extra)
		return
	}
	t0 := time.Now()
	cpu0 := cpuNs()
	dur := time.Duration(c.Seconds * float64(time.Second))
	per := float64(c.Rate) / float64(c.Goroutines)
	sent := make([]int, c.Goroutines)
	late := make([]int, c.Goroutines)
	var wg sync.WaitGroup
	for g := 0; g < c.Goroutines; g++ {
		wg.Add(1)
		go func(g int, one func(int)) {
			defer wg.Done()
			for {
				el := time.Since(t0)
				if el >= dur {
					return
				}
				due := int(el.Seconds() * per)
				if due > sent[g]+int(per)/100 {
					late[g]++
				}
				for sent[g] < due {
					one(sent[g])
					sent[g]++
				}
				time.Sleep(500 * time.Microsecond)
			}
		}(g, mk())
	}
	wg.Wait()
	wall := time.Since(t0).Seconds()
	flush()
	total, lates := 0, 0
	for g := range sent {
		total += sent[g]
		lates += late[g]
	}
	res := map[string]any{
		"impl": impl, "mode": "rate", "rate": c.Rate, "seconds": wall,
		"goroutines": c.Goroutines, "busy_s": time.Since(t0).Seconds(),
		"requests": total, "achieved_rps": float64(total) / wall, "late_ticks": lates,
		"cpu_ns_per_req": float64(cpuNs()-cpu0) / float64(max(total, 1)),
		"maxrss_kb":      MaxRSSKB(),
	}
	if extra != nil {
		for k, v := range extra() {
			res[k] = v
		}
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
}
