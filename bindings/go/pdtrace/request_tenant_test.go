package pdtrace

import (
	"strings"
	"testing"
)

func TestSetTenant(t *testing.T) {
	tr, path := openConsole(t, func(o *Options) { o.MetricsTenants = "team-a, team-b" })
	run := func(tenant string) {
		r, err := tr.BeginRemote("", "", 0)
		mustOK(t, "begin", err)
		mustOK(t, "connector", r.SetConnector("nixlv2"))
		mustOK(t, "model", r.SetModel("m"))
		if tenant != "" {
			mustOK(t, "tenant", r.SetTenant(tenant))
		}
		mustOK(t, "usage", r.SetUsage(100, 7, -1))
		_, err = r.End(0)
		mustOK(t, "end", err)
		wantStatus(t, "after end", r.SetTenant("late"), StatusState)
		r.Close()
		wantStatus(t, "after close", r.SetTenant("late"), StatusState)
	}
	run("team-a")
	run("team-a")
	run("zeta") // not in the set: "other"
	run("")

	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "begin", err)
	wantStatus(t, "empty tenant", r.SetTenant(""), StatusInvalid)
	wantStatus(t, "long tenant", r.SetTenant(strings.Repeat("t", 256)), StatusInvalid)
	if err := r.SetTenant("a\x00b"); err == nil {
		t.Fatal("a tenant with a NUL was accepted")
	}
	r.Close()

	text, err := tr.Metrics()
	mustOK(t, "metrics", err)
	samples := checkPromText(t, text)
	lbl := `{connector="nixlv2",model="m",mode="sequential",tenant=`
	for k, want := range map[string]float64{
		"pdtrace_requests_total" + lbl + `"team-a",outcome="ok"}`: 2,
		"pdtrace_output_tokens_total" + lbl + `"team-a"}`:         14,
		"pdtrace_input_tokens_total" + lbl + `"team-a"}`:          200,
		"pdtrace_requests_total" + lbl + `"other",outcome="ok"}`:  1,
		"pdtrace_requests_total" + lbl + `"",outcome="ok"}`:       1,
	} {
		if got, ok := samples[k]; !ok || got != want {
			t.Fatalf("%s = %v (present %v), want %v\n%s", k, got, ok, want, text)
		}
	}
	if strings.Contains(text, "zeta") {
		t.Fatal("a tenant outside the set has its own series")
	}
	flush(t, tr)
	tenants := map[string]int{}
	for _, s := range byName(readSpans(t, path), pfx+"request") {
		tenants[s.str("llm_d.tenant")]++
	}
	if tenants["team-a"] != 2 || tenants["zeta"] != 1 {
		t.Fatalf("llm_d.tenant on the request spans: %v", tenants)
	}
}

func TestMetricsTenantsOptionChecked(t *testing.T) {
	_, err := Open(&Options{Exporter: ExporterNone, IgnoreEnvironment: true,
		MetricsTenants: "a,other"})
	wantStatus(t, "other in the set", err, StatusInvalid)
	_, err = Open(&Options{Exporter: ExporterNone, IgnoreEnvironment: true,
		MetricsTenants: "a\x00b"})
	if err == nil {
		t.Fatal("a tenant list with a NUL was accepted")
	}
}
