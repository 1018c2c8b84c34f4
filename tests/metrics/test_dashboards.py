"""Checks the Grafana dashboards under docs/dashboards.

- both JSON files load and have their uid and title;
- every TraceQL query names only span names, service names and attributes
  that libpdtrace (or vLLM's llm_request span) emits: the allowed lists
  below follow docs/spans.md and docs/upstreams.md and are cross-checked against the strings in lib/request.c, so a renamed
  attribute breaks this test;
- the TraceQL examples in docs/traceql.md pass the same check;
- every PromQL query (panels and template variables) names only metrics
  and labels that pdt_tracer_metrics() renders (metrics_dump is run and
  its output collected).
"""
import json
import os
import re
import subprocess

import pytest

ROOT = os.environ.get("PDTRACE_SOURCE_ROOT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASH = os.path.join(ROOT, "docs", "dashboards")
TEMPO = os.path.join(DASH, "pd-coordinator-metrics.json")
PROM = os.path.join(DASH, "pd-coordinator-prometheus.json")

PFX = "llm_d.pd_proxy."

# Spans (docs/spans.md) and vLLM's own span (section 3).
OUR_SPANS = {PFX + "request", PFX + "prefill", PFX + "decode"}
VLLM_SPANS = {"llm_request"}
# Service names: our default, and vLLM's in the published dashboards.
SERVICES = {"llm-d-pd-proxy", "vllm-prefill", "vllm-decode"}

# Span attributes libpdtrace sets on its request, prefill and decode spans
# (docs/spans.md), under our prefix.
OUR_PREFIXED = {
    "queue_ms", "prefill_duration_ms", "kv_transfer_overhead_ms",
    "decode_ttft_ms", "true_ttft_ms", "decode_duration_ms",
    "total_duration_ms", "tpot_ms", "connector", "disaggregation_enabled",
    "reason", "request_id", "prefill_target", "decode_target",
    "prefill.status_code", "decode.status_code", "concurrent_pd",
}
# OpenTelemetry-named attributes libpdtrace sets itself.
OUR_OTEL = {
    "gen_ai.request.model", "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
    "http.response.status_code", "server.address", "server.port",
    "error.type",
}
# vLLM's llm_request attributes (docs/upstreams.md).
VLLM_ATTRS = {
    "gen_ai.latency.time_to_first_token", "gen_ai.latency.e2e",
    "gen_ai.latency.time_in_queue", "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens", "gen_ai.request.id",
}
# Attributes the proxies set through pdt_request_set_bool() and
# pdt_request_set_str() (docs/spans.md, "Streaming and the first token");
# the library copies the stream flags onto the decode span.
CALLER_SET = {
    "gen_ai.request.stream", PFX + "decode.streaming",
    PFX + "first_token_observed", PFX + "assembled", PFX + "passthrough_reason",
}
SPAN_ATTRS = {PFX + a for a in OUR_PREFIXED} | OUR_OTEL | VLLM_ATTRS | CALLER_SET
RESOURCE_ATTRS = {"service.name"}
# TraceQL intrinsics and aggregates the dashboards may use.
INTRINSICS = {"name", "status", "duration", "kind", "statusMessage",
              "rootName", "rootServiceName", "traceDuration"}
TRACEQL_FUNCS = {"rate", "count_over_time", "avg_over_time",
                 "quantile_over_time", "min_over_time", "max_over_time",
                 "sum_over_time", "histogram_over_time", "select", "by",
                 "count", "avg", "max", "min", "sum", "error", "ok", "unset",
                 "true", "false", "server", "client", "internal", "nil"}

PROMQL_WORDS = {
    "histogram_quantile", "sum", "rate", "increase", "irate", "avg", "max",
    "min", "count", "by", "without", "le", "label_values", "topk",
    "bottomk", "clamp_min", "clamp_max", "vector", "scalar", "abs", "and",
    "or", "unless", "on", "ignoring", "group_left", "group_right",
}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def panels(dash):
    for p in dash.get("panels", []):
        yield p
        for sub in p.get("panels", []):
            yield sub


def targets(dash):
    for p in panels(dash):
        for t in p.get("targets", []):
            yield p["title"], t


# ---- the allowed lists agree with the library ------------------------------

def request_c_strings():
    src = ""
    for name in ("request.c", "request_attr.c", "breakdown.c"):
        with open(os.path.join(ROOT, "lib", name), encoding="utf-8") as f:
            src += f.read()
    names = set(re.findall(r'PFX\s+"([^"]+)"', src))
    names = {PFX + n for n in names}
    names |= set(re.findall(r'"((?:gen_ai|http|server|error)\.[a-z_.]+)"',
                            src))
    return names


def test_allowed_lists_match_request_c():
    emitted = request_c_strings()
    for name in OUR_SPANS:
        assert name in emitted, name
    for attr in {PFX + a for a in OUR_PREFIXED} | OUR_OTEL:
        assert attr in emitted, f"{attr} is not set by lib/request*.c or lib/breakdown.c"


def test_allowed_lists_match_docs():
    text = ""
    for name in ("spans.md", "upstreams.md"):
        with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as f:
            text += f.read()
    for a in OUR_PREFIXED | OUR_OTEL | VLLM_ATTRS | SERVICES | VLLM_SPANS:
        assert a in text, f"{a} is not documented in docs/spans.md or docs/upstreams.md"


# ---- Tempo dashboard ------------------------------------------------------------

def strip_strings(q):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', q)


def check_traceql(q):
    """Returns a list of problems with one TraceQL query."""
    bad = []
    for m in re.finditer(r'(?<![.\w])name\s*(?:=|!=|=~)\s*"([^"]*)"', q):
        if m.group(1) not in OUR_SPANS | VLLM_SPANS:
            bad.append("span name " + m.group(1))
    for m in re.finditer(r'resource\.service\.name\s*(?:=|!=)\s*"([^"]*)"', q):
        if m.group(1) not in SERVICES:
            bad.append("service " + m.group(1))
    # The vLLM span is only looked for under vLLM's services, ours only
    # under ours.
    if "llm_request" in q and "vllm-" not in q:
        bad.append("llm_request outside the vLLM services")
    body = strip_strings(q)
    for m in re.finditer(r'\b(span|resource)\.([A-Za-z0-9_.]+[A-Za-z0-9_])',
                         body):
        scope, attr = m.groups()
        allowed = SPAN_ATTRS if scope == "span" else RESOURCE_ATTRS
        if attr not in allowed:
            bad.append(f"{scope}.{attr}")
    rest = re.sub(r'\b(span|resource)\.[A-Za-z0-9_.]+', " ", body)
    for word in re.findall(r'(?<![.\w])([A-Za-z_][A-Za-z0-9_]*)', rest):
        if word not in INTRINSICS | TRACEQL_FUNCS:
            bad.append("unknown word " + word)
    return bad


def test_tempo_dashboard_loads():
    d = load(TEMPO)
    assert d["uid"] == "pd-coordinator-metrics"
    assert d["title"] == "P/D Coordinator Metrics"
    titles = {p["title"] for p in panels(d)}
    # The panels of the published dashboard description.
    for want in ["True TTFT", "Total Request Duration", "Prefill vs Decode Duration",
                 "KV Transfer Overhead", "TTFT Comparison: Coordinator vs Decode vLLM",
                 "P/D Request Count", "P/D Connector Distribution", "Avg True TTFT",
                 "Avg Total Duration", "Recent P/D Traces"]:
        assert want in titles, want
    kinds = {p["title"]: p["type"] for p in panels(d)}
    assert kinds["KV Transfer Overhead"] == "gauge"
    assert kinds["P/D Connector Distribution"] == "piechart"
    assert kinds["Recent P/D Traces"] == "table"


def test_tempo_queries_use_emitted_names():
    d = load(TEMPO)
    n = 0
    for title, t in targets(d):
        assert t["datasource"]["type"] == "tempo", title
        assert t["queryType"] == "traceql", title
        problems = check_traceql(t["query"])
        assert not problems, (title, t["query"], problems)
        n += 1
    assert n >= 10


def test_traceql_checker_rejects_unknown_names():
    assert check_traceql('{name="llm_d.pd_proxy.prefil"}')
    assert check_traceql('{resource.service.name="pd-proxy"}')
    assert check_traceql('{span.llm_d.pd_proxy.ttft_ms > 1}')
    assert check_traceql('{span.coordinator_overhead_ms > 1}')
    assert check_traceql('{name="llm_request"}')
    assert not check_traceql(
        '{resource.service.name="llm-d-pd-proxy" && '
        'name="llm_d.pd_proxy.decode"} | '
        'quantile_over_time(span.llm_d.pd_proxy.true_ttft_ms, 0.5)')


def test_docs_traceql_queries_use_emitted_names():
    with open(os.path.join(ROOT, "docs", "traceql.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"```traceql\n(.*?)```", text, flags=re.S)
    n = 0
    for b in blocks:
        for q in [x for x in b.split("\n\n") if x.strip()]:
            q = " ".join(line for line in q.splitlines()
                         if not line.lstrip().startswith("//"))
            problems = check_traceql(q)
            assert not problems, (q, problems)
            n += 1
    assert n >= 10


# ---- Prometheus dashboard --------------------------------------------------------

def rendered():
    path = os.environ.get("PDTRACE_METRICS_DUMP")
    if not path:
        import glob
        found = sorted(glob.glob(os.path.join(
            ROOT, "build*", "tests", "metrics", "metrics_dump")))
        if not found:
            pytest.skip("metrics_dump is not built")
        path = found[0]
    text = subprocess.run([path, "2"], check=True, capture_output=True,
                          timeout=120).stdout.decode()
    metrics, labels = set(), set()
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s', line)
        assert m, line
        metrics.add(m.group(1))
        if m.group(3):
            labels |= set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3)))
    return metrics, labels


def check_promql(q, metrics, labels):
    bad = []
    body = strip_strings(q)
    body = re.sub(r"\[[^\]]*\]", " ", body)           # ranges
    body = re.sub(r"\$\w+", " ", body)                 # variables
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", body):
        for lab in re.findall(r"[A-Za-z_]\w*", group):
            if lab not in labels:
                bad.append("label " + lab)
    body = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", body)
    for sel in re.findall(r"\{([^}]*)\}", body):
        for lab in re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", sel):
            if lab not in labels:
                bad.append("label " + lab)
    body = re.sub(r"\{[^}]*\}", " ", body)
    m = re.match(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)",
                 body)
    if m:
        if m.group(1) not in metrics:
            bad.append("metric " + m.group(1))
        if m.group(2) not in labels:
            bad.append("label " + m.group(2))
        return bad
    for word in re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)", body):
        if word in PROMQL_WORDS:
            continue
        if word not in metrics:
            bad.append("metric " + word)
    return bad


def test_prometheus_dashboard_loads():
    d = load(PROM)
    assert d["uid"] == "pd-coordinator-prometheus"
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["datasource", "connector", "model", "mode"]


def test_prometheus_queries_use_rendered_metrics():
    metrics, labels = rendered()
    assert "pdtrace_true_ttft_seconds_bucket" in metrics
    d = load(PROM)
    exprs = [(title, t["expr"]) for title, t in targets(d)]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            exprs.append((v["name"], v["query"]["query"]))
    assert len(exprs) >= 20
    used = set()
    for title, q in exprs:
        problems = check_promql(q, metrics, labels)
        assert not problems, (title, q, problems)
        used |= set(re.findall(r"\bpdtrace_\w+", q))
    # The headline metrics are all on the dashboard.
    for base in ["pdtrace_true_ttft_seconds", "pdtrace_request_duration_seconds",
                 "pdtrace_prefill_seconds", "pdtrace_decode_seconds",
                 "pdtrace_kv_transfer_overhead_seconds",
                 "pdtrace_time_per_output_token_seconds"]:
        assert any(u.startswith(base) for u in used), base
    for name in ["pdtrace_requests_total", "pdtrace_spans_exported_total",
                 "pdtrace_spans_dropped_total", "pdtrace_label_overflow_total"]:
        assert name in used, name


def test_promql_checker_rejects_unknown_names():
    metrics = {"pdtrace_requests_total"}
    labels = {"connector", "outcome"}
    assert check_promql("rate(pdtrace_request_total[5m])", metrics, labels)
    assert check_promql('sum by (pod) (pdtrace_requests_total)', metrics,
                        labels)
    assert check_promql('pdtrace_requests_total{tenant="a"}', metrics, labels)
    assert not check_promql(
        'sum by (outcome) (rate(pdtrace_requests_total{connector=~"$c"}'
        '[$__rate_interval]))', metrics, labels)
