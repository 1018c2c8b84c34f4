package main

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Lines of the Prometheus text format 0.0.4.
var (
	promComment = regexp.MustCompile(`^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$`)
	promSample  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? ([-+]?[0-9.eE+-]+|NaN|[+-]Inf)$`)
)

func TestMetricsEndpoint(t *testing.T) {
	pre, dec := fakePrefill(t), fakeDecode(t, 5, false)
	e := newEnv(t, dec.srv.URL, "nixlv2")
	for _, model := range []string{"model-a", "model-b", "model-a"} {
		resp, text := post(t, e.srv.URL, "/v1/chat/completions",
			`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`,
			map[string]string{"x-prefiller-host-port": hostPort(pre)})
		if resp.StatusCode != 200 {
			t.Fatalf("%d %q", resp.StatusCode, text)
		}
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	text := string(raw)
	if !strings.Contains(text, "# TYPE pdtrace_true_ttft_seconds histogram") {
		t.Fatalf("no true TTFT histogram in\n%s", text)
	}
	counts := map[string]float64{}
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
		if m[1] == "pdtrace_true_ttft_seconds_count" {
			v, err := strconv.ParseFloat(m[len(m)-1], 64)
			if err != nil || !strings.Contains(m[2], `connector="nixlv2"`) {
				t.Fatalf("%q", line)
			}
			for _, model := range []string{"model-a", "model-b"} {
				if strings.Contains(m[2], `model="`+model+`"`) {
					counts[model] += v
				}
			}
		}
	}
	if counts["model-a"] != 2 || counts["model-b"] != 1 {
		t.Fatalf("true TTFT counts %v in\n%s", counts, text)
	}
	resp, err = c.Post(e.srv.URL+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /metrics: %d", resp.StatusCode)
	}
}
