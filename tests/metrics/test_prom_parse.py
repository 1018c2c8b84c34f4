"""Parses pdt_tracer_metrics() text with prometheus_client's own parser.

metrics_dump (tests/metrics/metrics_dump.c) traces a fixed mix of requests
whose timestamps are all offsets from one arrival time, so every sum below
is known exactly. The binary comes from PDTRACE_METRICS_DUMP, else from
build*/tests/metrics/metrics_dump under the source root.
"""
import glob
import math
import os
import subprocess

import pytest

prom_parser = pytest.importorskip("prometheus_client.parser")

ROOT = os.environ.get("PDTRACE_SOURCE_ROOT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The documented bucket list (docs/metrics.md), in seconds.
BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15,
          0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 7.5, 10, 20, 30, 60]

HISTOGRAMS = [
    "pdtrace_true_ttft_seconds", "pdtrace_queue_seconds",
    "pdtrace_prefill_seconds", "pdtrace_kv_transfer_overhead_seconds",
    "pdtrace_decode_ttft_seconds", "pdtrace_decode_seconds",
    "pdtrace_request_duration_seconds",
    "pdtrace_time_per_output_token_seconds",
]
COUNTERS = [
    "pdtrace_requests", "pdtrace_spans_exported", "pdtrace_spans_dropped",
    "pdtrace_spans_rejected", "pdtrace_spans_not_sampled",
    "pdtrace_spans_spooled", "pdtrace_spans_replayed",
    "pdtrace_spool_dropped", "pdtrace_spool_corrupt",
    "pdtrace_export_requests", "pdtrace_export_retries",
    "pdtrace_export_failures", "pdtrace_export_bytes",
    "pdtrace_label_overflow",
]
GAUGES = ["pdtrace_queue_depth", "pdtrace_label_sets", "pdtrace_build_info"]

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen3-8B"
SEQ_NIXL = {"connector": "nixlv2", "model": LLAMA, "mode": "sequential"}
SEQ_LMC = {"connector": "lmcache", "model": QWEN, "mode": "sequential"}
CONC = {"connector": "sglang", "model": QWEN, "mode": "concurrent"}
DEC = {"connector": "nixlv2", "model": LLAMA, "mode": "decode_only"}

# Per request, in seconds (see metrics_dump.c).
EXPECT = {
    "SEQ": {"pdtrace_queue_seconds": 0.002, "pdtrace_prefill_seconds": 0.120,
            "pdtrace_kv_transfer_overhead_seconds": 0.003,
            "pdtrace_decode_ttft_seconds": 0.025,
            "pdtrace_true_ttft_seconds": 0.150,
            "pdtrace_decode_seconds": 0.126,
            "pdtrace_request_duration_seconds": 0.251,
            "pdtrace_time_per_output_token_seconds": 0.010},
    "CONC": {"pdtrace_queue_seconds": 0.001, "pdtrace_prefill_seconds": 0.079,
             "pdtrace_decode_ttft_seconds": 0.089,
             "pdtrace_true_ttft_seconds": 0.090,
             "pdtrace_decode_seconds": 0.299,
             "pdtrace_request_duration_seconds": 0.300,
             "pdtrace_time_per_output_token_seconds": 0.004},
    "DEC": {"pdtrace_decode_ttft_seconds": 0.039,
            "pdtrace_true_ttft_seconds": 0.040,
            "pdtrace_decode_seconds": 0.499,
            "pdtrace_request_duration_seconds": 0.500},
}


def dump_binary():
    path = os.environ.get("PDTRACE_METRICS_DUMP")
    if path:
        return path
    found = sorted(glob.glob(os.path.join(
        ROOT, "build*", "tests", "metrics", "metrics_dump")))
    if not found:
        pytest.skip("metrics_dump is not built")
    return found[0]


def run_dump(*args):
    out = subprocess.run([dump_binary(), *map(str, args)], check=True,
                         capture_output=True, timeout=120)
    return out.stdout.decode("utf-8")


def families(text):
    return {f.name: f for f in prom_parser.text_string_to_metric_families(text)}


def samples(fams, name, suffix="", **labels):
    fam_name = name[:-len("_total")] if name.endswith("_total") else name
    out = []
    for s in fams[fam_name].samples:
        if s.name == name + suffix and all(
                s.labels.get(k) == v for k, v in labels.items()):
            out.append(s)
    return out


def value(fams, name, suffix="", **labels):
    found = samples(fams, name, suffix, **labels)
    assert len(found) == 1, (name, suffix, labels, found)
    return found[0].value


@pytest.fixture(scope="module")
def text():
    return run_dump(10)


@pytest.fixture(scope="module")
def fams(text):
    return families(text)


def test_format_basics(text):
    assert text.endswith("\n")
    for name in HISTOGRAMS + GAUGES:
        assert f"# TYPE {name} " in text
    for name in COUNTERS:
        assert f"# TYPE {name}_total counter\n" in text
    # Every HELP has its TYPE right after it.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            assert lines[i + 1].startswith("# TYPE " + line.split()[2] + " ")


def test_types(fams):
    for name in HISTOGRAMS:
        assert fams[name].type == "histogram", name
    for name in COUNTERS:
        assert fams[name].type == "counter", name
    for name in GAUGES:
        assert fams[name].type == "gauge", name


def test_histogram_shape(fams):
    for name in HISTOGRAMS:
        series = {}
        for s in fams[name].samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items()
                               if k != "le"))
            series.setdefault(key, []).append(s)
        assert series, name
        for key, ss in series.items():
            buckets = [s for s in ss if s.name == name + "_bucket"]
            les = [float(s.labels["le"]) for s in buckets]
            assert les == BOUNDS + [math.inf], (name, key)
            values = [s.value for s in buckets]
            assert values == sorted(values), (name, key)
            count = [s.value for s in ss if s.name == name + "_count"]
            assert count == [values[-1]], (name, key)
            assert len([s for s in ss if s.name == name + "_sum"]) == 1


@pytest.mark.parametrize("labels,kind", [
    (SEQ_NIXL, "SEQ"), (SEQ_LMC, "SEQ"), (CONC, "CONC"), (DEC, "DEC")])
def test_exact_sums(fams, labels, kind):
    for name in HISTOGRAMS:
        want = EXPECT[kind].get(name)
        found = samples(fams, name, "_count", **labels)
        if want is None:
            assert found == [], (name, labels)
            continue
        assert value(fams, name, "_count", **labels) == 10
        assert value(fams, name, "_sum", **labels) == pytest.approx(
            10 * want, abs=1e-12), (name, labels)


def test_bucket_placement(fams):
    # 150 ms true TTFT: above 0.1, within 0.15 (le is inclusive).
    assert value(fams, "pdtrace_true_ttft_seconds", "_bucket",
                 le="0.1", **SEQ_NIXL) == 0
    assert value(fams, "pdtrace_true_ttft_seconds", "_bucket",
                 le="0.15", **SEQ_NIXL) == 10
    # 3 ms KV transfer: le 0.005, not 0.0025.
    assert value(fams, "pdtrace_kv_transfer_overhead_seconds", "_bucket",
                 le="0.0025", **SEQ_LMC) == 0
    assert value(fams, "pdtrace_kv_transfer_overhead_seconds", "_bucket",
                 le="0.005", **SEQ_LMC) == 10


def test_requests_and_spans(fams):
    assert value(fams, "pdtrace_requests_total", outcome="ok",
                 **SEQ_LMC) == 8
    assert value(fams, "pdtrace_requests_total", outcome="error",
                 **SEQ_LMC) == 2
    assert value(fams, "pdtrace_requests_total", outcome="ok", **DEC) == 10
    # 10 rounds of 3 + 3 + 3 + 2 spans, all exported by the console
    # exporter before the dump.
    assert value(fams, "pdtrace_spans_exported_total") == 110
    reasons = {s.labels["reason"]
               for s in samples(fams, "pdtrace_spans_dropped_total")}
    assert reasons == {"queue_full", "export_failed", "shutdown", "disabled"}
    assert value(fams, "pdtrace_label_sets") == 4
    assert value(fams, "pdtrace_label_overflow_total") == 0
    info = samples(fams, "pdtrace_build_info")
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels["version"].count(".") == 2


def test_tenant_and_token_counters(fams):
    # The concurrent requests name tenant team-a; the others none ("").
    assert value(fams, "pdtrace_requests_total", outcome="ok",
                 tenant="team-a", **CONC) == 10
    assert value(fams, "pdtrace_output_tokens_total", tenant="team-a",
                 **CONC) == 10 * 51
    assert value(fams, "pdtrace_input_tokens_total", tenant="",
                 **SEQ_NIXL) == 10 * 2000
    assert value(fams, "pdtrace_output_tokens_total", tenant="",
                 **SEQ_NIXL) == 10 * 11
    assert value(fams, "pdtrace_cached_input_tokens_total", tenant="",
                 **SEQ_NIXL) == 0
    tenants = {s.labels["tenant"]
               for s in samples(fams, "pdtrace_requests_total")}
    assert tenants == {"", "team-a"}


def test_label_overflow_and_escaping():
    # 4 label sets from the mix plus 70 new connectors: 60 fit.
    fams = families(run_dump(1, 70))
    assert value(fams, "pdtrace_label_sets") == 64
    assert value(fams, "pdtrace_label_overflow_total") == 10
    other = {"connector": "other", "model": "other", "mode": "sequential"}
    assert value(fams, "pdtrace_requests_total", outcome="ok", **other) == 10
    assert value(fams, "pdtrace_true_ttft_seconds", "_count", **other) == 10
    connectors = {s.labels["connector"]
                  for s in samples(fams, "pdtrace_requests_total")}
    assert len(connectors) == 3 + 60 + 1
    # The model label went through escaping and back unchanged.
    models = {s.labels["model"]
              for s in samples(fams, "pdtrace_requests_total")}
    assert 'm"odel\\x' in models
