package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// simPython is the interpreter for the simulator: $PDTRACE_SIM_PYTHON, else
// python3 on the PATH.
func simPython() string {
	if p := os.Getenv("PDTRACE_SIM_PYTHON"); p != "" {
		return p
	}
	return "python3"
}

// startSim runs examples/sim/vllm_sim.py in one role; the test is skipped
// when the simulator or its Python packages are missing or it does not
// come up.
func startSim(t *testing.T, sim, role string) string {
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, simPython(), sim, "--role", role, "--port", strconv.Itoa(port), "--time-scale", "0.2", "--seed", "1")
	cmd.Env = append(os.Environ(), "OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Skipf("cannot start the simulator: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := &http.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Skipf("the %s simulator exited: %s", role, stderr.String())
		default:
		}
		if resp, err := c.Get("http://" + addr + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-exited // stderr is complete once the process is reaped
	t.Skipf("the %s simulator did not come up: %s", role, stderr.String())
	return ""
}

// TestAgainstSimulator runs the nixlv2 flow against the Python vLLM
// simulator, when it is in the tree.
func TestAgainstSimulator(t *testing.T) {
	sim, _ := filepath.Abs("../../sim/vllm_sim.py")
	if _, err := os.Stat(sim); err != nil {
		t.Skip("examples/sim/vllm_sim.py is absent")
	}
	if _, err := exec.LookPath(simPython()); err != nil {
		t.Skip("no Python for the simulator (set PDTRACE_SIM_PYTHON)")
	}
	pre := startSim(t, sim, "prefill")
	dec := startSim(t, sim, "decode")
	e := newEnv(t, "http://"+dec, "nixlv2")

	for _, stream := range []bool{true, false} {
		body := `{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"` +
			strings.Repeat("tell me a long story ", 40) + `"}],"max_tokens":12,"temperature":0.7,"stream":` +
			strconv.FormatBool(stream) + `}`
		resp, text := post(t, e.srv.URL, "/v1/chat/completions", body,
			map[string]string{"x-prefiller-host-port": pre, "traceparent": inTrace})
		if resp.StatusCode != 200 {
			t.Fatalf("stream=%v: %d %q", stream, resp.StatusCode, text)
		}
	}
	spans := e.spans(t, 6)
	roots := byName(spans, pfx+"request")
	if len(roots) != 2 || len(byName(spans, pfx+"prefill")) != 2 || len(byName(spans, pfx+"decode")) != 2 {
		t.Fatalf("spans: %d", len(spans))
	}
	for _, root := range roots {
		if root.Status.Code == 2 || root.ParentSpanID != inSpanID {
			t.Fatalf("root %+v", root)
		}
		m := checkBreakdown(t, root, true)
		if m["prefill_duration_ms"] <= 0 || m["decode_ttft_ms"] <= 0 {
			t.Fatalf("breakdown %v", m)
		}
		if v, ok := root.int("gen_ai.usage.output_tokens"); !ok || v <= 0 {
			t.Fatalf("output tokens %d", v)
		}
	}
}

// TestAssembledEqualsSimulator checks that the body assembled from a
// streamed decode equals, field by field except created and the ids, what
// the simulator answers to the same request without streaming. Two
// decode simulators with the same seed draw the same words for the same
// sequence of requests: one serves the sidecar, the other the direct
// request.
func TestAssembledEqualsSimulator(t *testing.T) {
	sim, _ := filepath.Abs("../../sim/vllm_sim.py")
	if _, err := os.Stat(sim); err != nil {
		t.Skip("examples/sim/vllm_sim.py is absent")
	}
	if _, err := exec.LookPath(simPython()); err != nil {
		t.Skip("no Python for the simulator (set PDTRACE_SIM_PYTHON)")
	}
	viaSidecar := startSim(t, sim, "decode")
	direct := startSim(t, sim, "decode")
	e := newEnv(t, "http://"+viaSidecar+"/v1/completions", "nixlv2")

	cases := []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"say something"}],"max_tokens":6}`},
		{"/v1/completions", `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"once upon a time","max_tokens":5,"temperature":0.7}`},
		{"/v1/completions", `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"one","max_tokens":1}`},
	}
	for _, c := range cases {
		resp, got := post(t, e.srv.URL, c.path, c.body, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s via the sidecar: %d %q", c.path, resp.StatusCode, got)
		}
		resp, want := post(t, "http://"+direct, c.path, c.body, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s direct: %d %q", c.path, resp.StatusCode, want)
		}
		var g, w map[string]any
		if err := json.Unmarshal([]byte(got), &g); err != nil {
			t.Fatalf("assembled body %q: %v", got, err)
		}
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Fatal(err)
		}
		for _, m := range []map[string]any{g, w} {
			if _, ok := m["created"].(float64); !ok {
				t.Fatalf("created missing or not a number in %v", m)
			}
			if id, _ := m["id"].(string); id == "" {
				t.Fatalf("id missing in %v", m)
			}
			delete(m, "created")
			delete(m, "id")
		}
		if len(g) != len(w) {
			t.Fatalf("%s: fields %v, simulator %v", c.path, keys(g), keys(w))
		}
		for k, wv := range w {
			if !reflect.DeepEqual(g[k], wv) {
				t.Fatalf("%s: field %q = %v, simulator %v", c.path, k, g[k], wv)
			}
		}
	}
	spans := e.spans(t, 6)
	for _, root := range byName(spans, pfx+"request") {
		if b, ok := boolAttr(root, pfx+"assembled"); !ok || !b {
			t.Fatal("assembled")
		}
		if _, ok := root.float(pfx + "true_ttft_ms"); !ok {
			t.Fatal("true_ttft_ms must be observed")
		}
		if v, ok := root.int("gen_ai.usage.input_tokens"); !ok || v <= 0 {
			t.Fatalf("input tokens %d", v)
		}
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
