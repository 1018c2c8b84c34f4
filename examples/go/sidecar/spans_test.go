package main

import (
	"bufio"
	"encoding/json"
	"os"
	"strconv"
	"testing"
)

// The OTLP JSON subset the tests read back from the console exporter.
type jsonValue struct {
	StringValue *string  `json:"stringValue"`
	IntValue    *string  `json:"intValue"`
	DoubleValue *float64 `json:"doubleValue"`
	BoolValue   *bool    `json:"boolValue"`
}

type jsonKV struct {
	Key   string    `json:"key"`
	Value jsonValue `json:"value"`
}

type jsonEvent struct {
	Name       string   `json:"name"`
	Attributes []jsonKV `json:"attributes"`
}

type jsonSpan struct {
	TraceID      string      `json:"traceId"`
	SpanID       string      `json:"spanId"`
	ParentSpanID string      `json:"parentSpanId"`
	TraceState   string      `json:"traceState"`
	Name         string      `json:"name"`
	Kind         int         `json:"kind"`
	Start        string      `json:"startTimeUnixNano"`
	End          string      `json:"endTimeUnixNano"`
	Attributes   []jsonKV    `json:"attributes"`
	Events       []jsonEvent `json:"events"`
	Status       struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
}

func (s *jsonSpan) attr(key string) (jsonValue, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return jsonValue{}, false
}

func (s *jsonSpan) str(key string) string {
	v, ok := s.attr(key)
	if !ok || v.StringValue == nil {
		return ""
	}
	return *v.StringValue
}

func (s *jsonSpan) int(key string) (int64, bool) {
	v, ok := s.attr(key)
	if !ok || v.IntValue == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(*v.IntValue, 10, 64)
	return n, err == nil
}

func (s *jsonSpan) float(key string) (float64, bool) {
	v, ok := s.attr(key)
	if !ok || v.DoubleValue == nil {
		return 0, false
	}
	return *v.DoubleValue, true
}

func readSpans(t *testing.T, path string) []jsonSpan {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	var out []jsonSpan
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			ResourceSpans []struct {
				ScopeSpans []struct {
					Spans []jsonSpan `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("bad JSON line: %v", err)
		}
		for _, rs := range line.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				out = append(out, ss.Spans...)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return out
}

func byName(spans []jsonSpan, name string) []jsonSpan {
	var out []jsonSpan
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}
