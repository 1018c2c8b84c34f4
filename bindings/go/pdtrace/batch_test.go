package pdtrace

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const testModel = "meta-llama/Llama-3.1-8B-Instruct"

var allTypes = []Attr{
	String("s", "text"), String("u", "h\u00e9llo"), String("e", ""),
	String("nul", "a\x00b"), Int("i", math.MinInt64), Int("big", math.MaxInt64),
	Float("f", 0.25), Bool("t", true), Bool("b", false),
}

func checkAllTypes(t *testing.T, s *jsonSpan) {
	t.Helper()
	for _, k := range []struct{ key, want string }{{"s", "text"}, {"u", "h\u00e9llo"}, {"e", ""}, {"nul", "a\x00b"}} {
		if v, ok := s.attr(k.key); !ok || v.StringValue == nil || *v.StringValue != k.want {
			t.Fatalf("%s: %+v", k.key, v)
		}
	}
	if v, _ := s.int("i"); v != math.MinInt64 {
		t.Fatalf("i = %d", v)
	}
	if v, _ := s.int("big"); v != math.MaxInt64 {
		t.Fatalf("big = %d", v)
	}
	if v, _ := s.float("f"); v != 0.25 {
		t.Fatalf("f = %v", v)
	}
	for _, k := range []struct {
		key  string
		want bool
	}{{"t", true}, {"b", false}} {
		if v, ok := s.attr(k.key); !ok || v.BoolValue == nil || *v.BoolValue != k.want {
			t.Fatalf("%s: %+v", k.key, v)
		}
	}
}

func TestAttrConstructors(t *testing.T) {
	for _, c := range []struct {
		a    Attr
		want any
	}{{String("k", "v"), "v"}, {Int("k", -3), int64(-3)}, {Float("k", 1.5), 1.5},
		{Bool("k", true), true}, {Bool("k", false), false}, {Attr{Key: "k"}, nil}} {
		if c.a.Value() != c.want {
			t.Fatalf("%+v: %v", c.a, c.a.Value())
		}
	}
}

func TestBatchAttributesEveryType(t *testing.T) {
	tr, path := openConsole(t, nil)
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "begin", err)
	mustOK(t, "request attrs", r.SetAttributes(allTypes...))
	mustOK(t, "no attrs", r.SetAttributes())
	wantStatus(t, "decode span missing", r.Leg(LegDecode).SetAttributes(Int("k", 1)), StatusState)
	mustOK(t, "mode", r.SetMode(ModeDecodeOnly, ""))
	mustOK(t, "decode sent", r.DecodeSent(0))
	mustOK(t, "decode attrs", r.Leg(LegDecode).SetAttributes(allTypes...))
	_, err = r.End(0)
	mustOK(t, "end", err)
	wantStatus(t, "after end", r.SetAttributes(Int("late", 1)), StatusState)
	r.Close()
	wantStatus(t, "after close", r.SetAttributes(Int("late", 1)), StatusState)

	s, err := tr.Start("generic", KindInternal, nil, 0)
	mustOK(t, "start", err)
	mustOK(t, "span attrs", s.SetAttributes(allTypes...))
	mustOK(t, "span end", s.End(0))
	s.Close()
	wantStatus(t, "span after close", s.SetAttributes(Int("late", 1)), StatusState)

	flush(t, tr)
	spans := readSpans(t, path)
	for _, name := range []string{pfx + "request", pfx + "decode", "generic"} {
		got := byName(spans, name)
		if len(got) != 1 {
			t.Fatalf("%s: %d spans", name, len(got))
		}
		checkAllTypes(t, &got[0])
	}
}

func TestBatchBadEntriesAndLimits(t *testing.T) {
	tr, path := openConsole(t, func(o *Options) {
		o.AttributeCountLimit = 40
		o.AttributeValueLengthLimit = 8
	})
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "begin", err)
	// A bad type (the zero Attr) and an empty key are refused; the other
	// entries are still applied.
	err = r.SetAttributes(Int("a", 1), Attr{Key: "zero"}, String("", "x"), String("c", "three"))
	e := wantStatus(t, "bad entries", err, StatusInvalid)
	if e.Op != "pdt_request_set_attrs" || e.Message == "" {
		t.Fatalf("%+v", e)
	}
	mustOK(t, "long value", r.SetAttributes(String("long", strings.Repeat("x", 100))))
	many := make([]Attr, 100)
	for i := range many {
		many[i] = Int("k"+strconv.Itoa(100+i), int64(i))
	}
	wantStatus(t, "count limit", r.SetAttributes(many...), StatusLimit)
	_, err = r.End(0)
	mustOK(t, "end", err)
	r.Close()
	flush(t, tr)
	root := byName(readSpans(t, path), pfx+"request")[0]
	if v, _ := root.int("a"); v != 1 || root.str("c") != "three" {
		t.Fatalf("good entries lost: %+v", root.Attributes)
	}
	if _, ok := root.attr("zero"); ok {
		t.Fatal("zero Attr recorded")
	}
	if root.str("long") != "xxxxxxxx" {
		t.Fatalf("long = %q", root.str("long"))
	}
	if len(root.Attributes) > 40 {
		t.Fatalf("%d attributes over the limit", len(root.Attributes))
	}
	if _, ok := root.attr("k100"); !ok {
		t.Fatal("first of the batch dropped")
	}
}

func TestBatchLargeBatchGrowsTheBuffer(t *testing.T) {
	tr, path := openConsole(t, func(o *Options) { o.AttributeCountLimit = 128 })
	s, err := tr.Start("big", KindInternal, nil, 0)
	mustOK(t, "start", err)
	many := make([]Attr, 100)
	for i := range many {
		many[i] = String("key"+strconv.Itoa(i), strings.Repeat("v", 50)+strconv.Itoa(i))
	}
	mustOK(t, "big batch", s.SetAttributes(many...))
	mustOK(t, "end", s.End(0))
	s.Close()
	flush(t, tr)
	sp := byName(readSpans(t, path), "big")[0]
	for i := range many {
		if sp.str("key"+strconv.Itoa(i)) != strings.Repeat("v", 50)+strconv.Itoa(i) {
			t.Fatalf("key%d = %q", i, sp.str("key"+strconv.Itoa(i)))
		}
	}
}

func TestBatchedRequest(t *testing.T) {
	tr, path := openConsole(t, nil)
	in := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	in.Header.Set("traceparent", inbound)
	in.Header.Set("tracestate", "vendor=abc")
	in.Header.Set("x-request-id", "req-batch")
	r, err := tr.BeginWith(in, 0, "lmcache", testModel,
		String("gen_ai.operation.name", "chat"), Int("gen_ai.request.max_tokens", 64),
		Bool("gen_ai.request.stream", true))
	mustOK(t, "begin", err)
	if r.ID() != "req-batch" {
		t.Fatalf("id %q", r.ID())
	}
	ph, dh := http.Header{}, http.Header{}
	mustOK(t, "send prefill", r.SendPrefill(ph, 0))
	if ph.Get("x-request-id") != "req-batch" || ph.Get("tracestate") != "vendor=abc" ||
		!strings.HasPrefix(ph.Get("traceparent"), "00-"+inboundT+"-") {
		t.Fatalf("prefill headers %v", ph)
	}
	// A second send of the same leg before PrefillDone: the mark is
	// refused, the headers are still written (in new storage).
	ph2 := http.Header{}
	wantStatus(t, "repeated Ps", r.SendPrefill(ph2, 0), StatusState)
	if ph2.Get("traceparent") == "" || ph.Get("traceparent") == "" {
		t.Fatalf("headers %v %v", ph, ph2)
	}
	mustOK(t, "prefill result", r.PrefillResult(0, "http://127.0.0.1:8100", 200, ""))
	mustOK(t, "send decode", r.SendDecode(dh, 0))
	if dh.Get("traceparent") == ph.Get("traceparent") {
		t.Fatal("decode headers must name the decode span")
	}
	mustOK(t, "tokens", r.Tokens(0, 1))
	mustOK(t, "tokens", r.Tokens(0, 4))
	bd, err := r.Finish(0, &Outcome{Status: 200, DecodeTarget: "127.0.0.1:8200", DecodeStatus: 200,
		Usage: true, InputTokens: 10, OutputTokens: 5, CachedInputTokens: 2})
	mustOK(t, "finish", err)
	if !bd.TrueTTFT.OK || bd.OutputTokens != 5 || bd.Error {
		t.Fatalf("%+v", bd)
	}
	_, err = r.Finish(0, nil)
	wantStatus(t, "second finish", err, StatusState)
	r.Close()
	flush(t, tr)
	spans := readSpans(t, path)
	root := byName(spans, pfx+"request")[0]
	for k, want := range map[string]string{
		pfx + "request_id": "req-batch", pfx + "connector": "lmcache",
		"gen_ai.request.model": testModel, "gen_ai.operation.name": "chat",
		"http.request.method": "POST", "url.path": "/v1/chat/completions",
		pfx + "prefill_target": "http://127.0.0.1:8100", pfx + "decode_target": "127.0.0.1:8200",
	} {
		if root.str(k) != want {
			t.Fatalf("%s = %q, want %q", k, root.str(k), want)
		}
	}
	for k, want := range map[string]int64{
		"gen_ai.request.max_tokens": 64, "gen_ai.usage.input_tokens": 10,
		"gen_ai.usage.output_tokens": 5, "http.response.status_code": 200,
	} {
		if v, _ := root.int(k); v != want {
			t.Fatalf("%s = %d, want %d", k, v, want)
		}
	}
	if len(byName(spans, pfx+"prefill")) != 1 || len(byName(spans, pfx+"decode")) != 1 {
		t.Fatalf("leg spans: %d prefill, %d decode", len(byName(spans, pfx+"prefill")),
			len(byName(spans, pfx+"decode")))
	}
}

func TestBeginWithRefusedSettings(t *testing.T) {
	tr, path := openConsole(t, nil)
	in := httptest.NewRequest("POST", "/x", nil)
	r, err := tr.BeginWith(in, 0, "nixlv2", strings.Repeat("m", 256), Int("k", 1))
	if r == nil {
		t.Fatal("request must be returned when a setting is refused")
	}
	wantStatus(t, "model too long", err, StatusInvalid)
	// The model was refused, the connector and attributes were set.
	_, err = r.Finish(0, &Outcome{Status: 200})
	mustOK(t, "finish", err)
	r.Close()
	in.Header.Set("x-request-id", "bad id")
	r, err = tr.BeginWith(in, 0, "", "")
	wantStatus(t, "refused id", err, StatusInvalid)
	if r == nil || r.ID() == "bad id" || r.ID() == "" {
		t.Fatalf("id %q", r.ID())
	}
	r.Close()
	flush(t, tr)
	root := byName(readSpans(t, path), pfx+"request")[0]
	if root.str(pfx+"connector") != "nixlv2" {
		t.Fatalf("connector %q", root.str(pfx+"connector"))
	}
	if v, _ := root.int("k"); v != 1 {
		t.Fatal("attribute lost")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mustOK(t, "close", tr.Close(ctx))
	_, err = tr.BeginWith(in, 0, "", "")
	wantStatus(t, "closed tracer", err, StatusClosed)
}

func TestFinishPartialFailure(t *testing.T) {
	tr, _ := openConsole(t, nil)
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "begin", err)
	defer r.Close()
	mustOK(t, "mode", r.SetMode(ModeDecodeOnly, "short prompt"))
	mustOK(t, "decode", r.SendDecode(http.Header{}, 0))
	// The decode status is out of range: refused, the request still ends.
	bd, err := r.Finish(0, &Outcome{Status: 502, ErrorType: "upstream_error", DecodeStatus: 1000})
	e := wantStatus(t, "bad decode status", err, StatusInvalid)
	if e.Op != "pdt_request_end" {
		t.Fatalf("%+v", e)
	}
	if !bd.Total.OK || !bd.Error {
		t.Fatalf("breakdown of the ended request: %+v", bd)
	}
	_, err = r.End(0)
	wantStatus(t, "already ended", err, StatusState)
}

func TestSetModel(t *testing.T) {
	tr, path := openConsole(t, nil)
	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "begin", err)
	mustOK(t, "model", r.SetModel("first"))
	mustOK(t, "model", r.SetModel(testModel))
	wantStatus(t, "empty model", r.SetModel(""), StatusInvalid)
	wantStatus(t, "long model", r.SetModel(strings.Repeat("m", 256)), StatusInvalid)
	_, err = r.End(0)
	mustOK(t, "end", err)
	wantStatus(t, "after end", r.SetModel("late"), StatusState)
	r.Close()
	wantStatus(t, "after close", r.SetModel("late"), StatusState)
	flush(t, tr)
	if m := byName(readSpans(t, path), pfx+"request")[0].str("gen_ai.request.model"); m != testModel {
		t.Fatalf("model %q", m)
	}
}

// Lines of the Prometheus text format 0.0.4: comments and samples.
var (
	promComment = regexp.MustCompile(`^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$`)
	promSample  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? ([-+]?[0-9.eE+-]+|NaN|[+-]Inf)$`)
)

// checkPromText validates every line and returns the samples by name and
// label text.
func checkPromText(t *testing.T, text string) map[string]float64 {
	t.Helper()
	if !strings.HasSuffix(text, "\n") {
		t.Fatal("metrics text does not end with a newline")
	}
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			if !promComment.MatchString(line) {
				t.Fatalf("bad comment line %q", line)
			}
			continue
		}
		m := promSample.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(m[len(m)-1], 64)
		if err != nil {
			t.Fatalf("bad value in %q", line)
		}
		out[m[1]+m[2]] = v
	}
	return out
}

func TestMetrics(t *testing.T) {
	tr, _ := openConsole(t, nil)
	in := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	for i, model := range []string{testModel, "other-model", testModel} {
		r, err := tr.BeginWith(in, 0, "nixlv2", model)
		mustOK(t, "begin", err)
		mustOK(t, "prefill", r.SendPrefill(http.Header{}, 0))
		mustOK(t, "prefill done", r.PrefillResult(0, "p:1", 200, ""))
		mustOK(t, "decode", r.SendDecode(http.Header{}, 0))
		mustOK(t, "tokens", r.Tokens(0, uint32(i+1)))
		_, err = r.Finish(0, &Outcome{Status: 200, DecodeStatus: 200})
		mustOK(t, "finish", err)
		r.Close()
	}
	text, err := tr.Metrics()
	mustOK(t, "metrics", err)
	samples := checkPromText(t, text)
	var total float64
	for k, v := range samples {
		if strings.HasPrefix(k, "pdtrace_true_ttft_seconds_count{") {
			total += v
			if !strings.Contains(k, `connector="nixlv2"`) {
				t.Fatalf("labels %s", k)
			}
			if strings.Contains(k, `model="`+testModel+`"`) && v != 2 {
				t.Fatalf("%s = %v", k, v)
			}
		}
	}
	if total != 3 || !strings.Contains(text, "# TYPE pdtrace_true_ttft_seconds histogram") {
		t.Fatalf("true TTFT count %v in\n%s", total, text)
	}
	if MetricsContentType != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatal(MetricsContentType)
	}
}

func TestMetricsRetriesSmallBuffer(t *testing.T) {
	tr, _ := openConsole(t, nil)
	tr.metricsCap.Store(16)
	text, err := tr.Metrics()
	mustOK(t, "metrics", err)
	if len(text) <= 16 || tr.metricsCap.Load() <= 16 {
		t.Fatalf("len %d cap %d", len(text), tr.metricsCap.Load())
	}
	checkPromText(t, text)
}

func TestMetricsConcurrentWithRequests(t *testing.T) {
	tr, err := Open(&Options{Exporter: ExporterNone, IgnoreEnvironment: true})
	mustOK(t, "open", err)
	defer tr.Close(context.Background())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := tr.BeginRemote("", "", 0)
				if err != nil {
					t.Error(err)
					return
				}
				_ = r.SetAttributes(Int("n", 1), String("s", "x"))
				_, _ = r.Finish(0, &Outcome{Status: 200})
				r.Close()
			}
		}()
	}
	for i := 0; i < 20; i++ {
		text, err := tr.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		checkPromText(t, text)
	}
	close(stop)
	wg.Wait()
}

func TestMetricsClosedTracer(t *testing.T) {
	tr, _ := openConsole(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mustOK(t, "close", tr.Close(ctx))
	_, err := tr.Metrics()
	wantStatus(t, "closed", err, StatusClosed)
}

// BenchmarkBatchedRequest is BenchmarkRequestNoExport through the batched
// calls.
func BenchmarkBatchedRequest(b *testing.B) {
	tr, err := Open(&Options{Exporter: ExporterNone, IgnoreEnvironment: true})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close(context.Background())
	in := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	in.Header.Set("traceparent", inbound)
	in.Header.Set("x-request-id", "bench-request")
	ph, dh := http.Header{}, http.Header{}
	out := Outcome{Status: 200, DecodeTarget: "127.0.0.1:8200", DecodeStatus: 200,
		Usage: true, InputTokens: 812, OutputTokens: 64, CachedInputTokens: 256}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := tr.BeginWith(in, 0, "nixlv2", testModel, String("gen_ai.operation.name", "chat"),
			Int("gen_ai.request.max_tokens", 128), Bool("gen_ai.request.stream", true))
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
}
