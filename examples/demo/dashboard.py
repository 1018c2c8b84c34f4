#!/usr/bin/env python3
"""dashboard: what the P/D coordinator dashboard shows, read back from the
exported spans (OTLP JSON lines, one ExportTraceServiceRequest a line, as
written by libpdtrace's console exporter or a Collector's otlphttp exporter
with JSON encoding).

    python dashboard.py SPANS.jsonl [SPANS.jsonl ...] [--csv loadgen.csv]
                        [--json summary.json]

Panels, as in the llm-d P/D coordinator dashboard, which reads the
summary attributes from {resource.service.name="llm-d-pd-proxy" &&
name="llm_d.pd_proxy.decode"}:
  Avg True TTFT (coordinator)    mean llm_d.pd_proxy.true_ttft_ms
  Avg vLLM TTFT (decode)         mean gen_ai.latency.time_to_first_token of
                                 vllm-decode's llm_request spans
  Avg KV transfer overhead       mean llm_d.pd_proxy.kv_transfer_overhead_ms
  Total P/D requests             llm_d.pd_proxy.request spans
  Coordinator vs vLLM TTFT gap   the difference of the first two
then p50/p95/p99 of true TTFT and of each stage per traffic pattern
(llm_d.pd_proxy.load_pattern), how many traces join the simulators'
llm_request spans, and, given the load generator's CSV, the fidelity check:
coordinator true TTFT against client-measured TTFT joined by request id.
"""
import argparse
import csv
import json
import math
import sys
from typing import Any, Dict, Iterable, List, Optional

P = "llm_d.pd_proxy."
PROXY_SERVICE = "llm-d-pd-proxy"
STAGES = (("true_ttft", P + "true_ttft_ms"), ("queue", P + "queue_ms"),
          ("prefill", P + "prefill_duration_ms"),
          ("kv_transfer", P + "kv_transfer_overhead_ms"),
          ("decode_ttft", P + "decode_ttft_ms"),
          ("total", P + "total_duration_ms"))


def _value(v: Dict[str, Any]) -> Any:
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        return int(v["intValue"])
    return None


def load_spans(paths: Iterable[str]) -> List[Dict[str, Any]]:
    """Flattened spans: name, service, ids, kind, status code, attrs."""
    out = []
    for path in paths:
        try:
            f = open(path, encoding="utf-8")
        except FileNotFoundError:
            continue
        with f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                for rs in doc.get("resourceSpans", []):
                    res = {a["key"]: _value(a["value"]) for a in
                           rs.get("resource", {}).get("attributes", [])}
                    svc = res.get("service.name", "")
                    for ss in rs.get("scopeSpans", []):
                        for s in ss.get("spans", []):
                            out.append({
                                "name": s.get("name", ""),
                                "service": svc,
                                "trace_id": s.get("traceId", ""),
                                "span_id": s.get("spanId", ""),
                                "parent": s.get("parentSpanId", ""),
                                "kind": s.get("kind"),
                                "status": (s.get("status") or {}).get(
                                    "code", 0),
                                "start": int(s.get("startTimeUnixNano", 0)),
                                "end": int(s.get("endTimeUnixNano", 0)),
                                "attrs": {a["key"]: _value(a["value"]) for a
                                          in s.get("attributes", [])},
                            })
    return out


def client_failed(span: Dict[str, Any]) -> bool:
    a = span["attrs"]
    code = a.get("http.response.status_code")
    if isinstance(code, int):
        return code >= 400 or "error.type" in a
    return span["status"] == 2


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100; NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(1, math.ceil(q / 100.0 * len(s)))
    return s[k - 1]


def mean(values: List[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def read_client_csv(path: str) -> Dict[str, Dict[str, str]]:
    with open(path, newline="") as f:
        return {row["request_id"]: row for row in csv.DictReader(f)}


def analyze(spans: List[Dict[str, Any]],
            client: Optional[Dict[str, Dict[str, str]]] = None
            ) -> Dict[str, Any]:
    proxy = [s for s in spans if s["service"] == PROXY_SERVICE]
    roots = [s for s in proxy if s["name"] == P + "request"]
    decodes = [s for s in proxy if s["name"] == P + "decode"]
    prefills = [s for s in proxy if s["name"] == P + "prefill"]
    vllm = [s for s in spans if s["name"] == "llm_request"]
    vdec = [s for s in vllm if s["service"] == "vllm-decode"]
    vpre = [s for s in vllm if s["service"] == "vllm-prefill"]

    def attr(ss, key):
        return [s["attrs"][key] for s in ss
                if isinstance(s["attrs"].get(key), (int, float))]

    out: Dict[str, Any] = {}
    ttft = attr(decodes, P + "true_ttft_ms")
    v_ttft = [x * 1000.0 for x in attr(vdec, "gen_ai.latency.time_to_first_"
                                       "token")]
    out["avg_true_ttft_ms"] = mean(ttft)
    out["avg_vllm_decode_ttft_ms"] = mean(v_ttft)
    out["avg_vllm_prefill_ttft_ms"] = mean(
        [x * 1000.0 for x in attr(vpre, "gen_ai.latency.time_to_first_"
                                  "token")])
    out["avg_kv_transfer_overhead_ms"] = mean(
        attr(decodes, P + "kv_transfer_overhead_ms"))
    out["total_pd_requests"] = len(roots)
    # A request failed when its client did not get a complete answer: an
    # error status or an error type on the request span. Upstream legs
    # that failed while the client was still served are counted apart.
    out["failed_requests"] = sum(1 for s in roots if client_failed(s))
    out["failed_legs"] = sum(1 for s in prefills + decodes
                             if s["status"] == 2)
    out["first_token_observed"] = sum(
        1 for s in roots
        if s["attrs"].get(P + "first_token_observed") is True)
    out["ttft_gap_ms"] = out["avg_true_ttft_ms"] - \
        out["avg_vllm_decode_ttft_ms"]

    # Per pattern, from the request spans.
    patterns: Dict[str, List[Dict[str, Any]]] = {}
    for s in roots:
        if client_failed(s):
            continue
        patterns.setdefault(str(s["attrs"].get(P + "load_pattern", "-")),
                            []).append(s)
    out["patterns"] = {}
    for name in sorted(patterns):
        ss = patterns[name]
        row = {"requests": len(ss)}
        for stage, key in STAGES:
            v = attr(ss, key)
            row[stage] = {"p50": percentile(v, 50), "p95": percentile(v, 95),
                          "p99": percentile(v, 99), "n": len(v)}
        out["patterns"][name] = row

    # Trace joins: our leg spans are the parents of vLLM's llm_request.
    by_parent = {s["parent"]: s for s in vllm}
    pre_joined = sum(1 for s in prefills if s["span_id"] in by_parent)
    dec_joined = sum(1 for s in decodes if s["span_id"] in by_parent)
    out["joins"] = {"prefill_spans": len(prefills),
                    "prefill_joined": pre_joined,
                    "decode_spans": len(decodes), "decode_joined": dec_joined}

    # Fidelity: coordinator true TTFT vs client TTFT, by request id, for
    # the streamed requests (a client that asked for a whole body sees
    # nothing before the end; its true TTFT is what decode's stream showed
    # the coordinator, compared with the client's total time instead).
    if client is not None:
        diffs = []
        whole = []
        for s in roots:
            rid = s["attrs"].get(P + "request_id")
            t = s["attrs"].get(P + "true_ttft_ms")
            row = client.get(rid) if rid else None
            if row is None or t is None or not row.get("client_ttft_ms"):
                continue
            if row.get("stream", "1") == "0":
                whole.append((t, float(row["total_ms"])))
                continue
            diffs.append(float(row["client_ttft_ms"]) - t)
        absd = [abs(d) for d in diffs]
        streamed = sum(1 for r in client.values()
                       if r.get("stream", "1") != "0")
        out["non_streamed"] = {
            "joined": len(whole),
            "true_ttft_p50_ms": percentile([w[0] for w in whole], 50),
            "client_total_p50_ms": percentile([w[1] for w in whole], 50),
        }
        out["fidelity"] = {
            "joined": len(diffs), "client_requests": streamed,
            "median_diff_ms": percentile(diffs, 50),
            "median_abs_diff_ms": percentile(absd, 50),
            "p99_abs_diff_ms": percentile(absd, 99),
            "max_abs_diff_ms": max(absd) if absd else math.nan,
        }
    return out


def render(a: Dict[str, Any]) -> str:
    L = []
    L.append("== P/D coordinator dashboard (read back from the exported "
             "spans) ==")
    L.append("  Avg True TTFT (coordinator)   %10.2f ms" %
             a["avg_true_ttft_ms"])
    L.append("  Avg vLLM TTFT (decode)        %10.2f ms" %
             a["avg_vllm_decode_ttft_ms"])
    L.append("  Avg KV transfer overhead      %10.3f ms" %
             a["avg_kv_transfer_overhead_ms"])
    L.append("  Total P/D requests            %10d   (%d failed, %d "
             "failed upstream legs)" % (a["total_pd_requests"],
                                        a["failed_requests"],
                                        a["failed_legs"]))
    L.append("  First token observed          %10d   of %d requests" %
             (a["first_token_observed"], a["total_pd_requests"]))
    gap = a["ttft_gap_ms"]
    ratio = (a["avg_true_ttft_ms"] / a["avg_vllm_decode_ttft_ms"]
             if a["avg_vllm_decode_ttft_ms"] else math.nan)
    L.append("  Coordinator vs vLLM TTFT gap  %10.2f ms   (true TTFT is "
             "%.1fx what the decode vLLM reports)" % (gap, ratio))
    L.append("")
    L.append("True TTFT and stages by traffic pattern, ms (p50 / p95 / p99):")
    hdr = "  %-14s %5s" % ("pattern", "n")
    for stage, _ in STAGES:
        hdr += "  %-23s" % stage
    L.append(hdr)
    for name, row in a["patterns"].items():
        line = "  %-14s %5d" % (name, row["requests"])
        for stage, _ in STAGES:
            st = row[stage]
            if st["n"]:
                cell = "%.1f/%.1f/%.1f" % (st["p50"], st["p95"], st["p99"])
            else:
                cell = "-"
            line += "  %-23s" % cell
        L.append(line)
    j = a["joins"]
    L.append("")
    L.append("Trace joins: %d/%d prefill and %d/%d decode spans are parents "
             "of a vLLM llm_request span" % (j["prefill_joined"],
                                             j["prefill_spans"],
                                             j["decode_joined"],
                                             j["decode_spans"]))
    f = a.get("fidelity")
    if f:
        L.append("Fidelity (client TTFT - coordinator true TTFT, joined by "
                 "request id, %d of %d streamed client requests):" %
                 (f["joined"], f["client_requests"]))
        L.append("  median %.3f ms, median |diff| %.3f ms, p99 |diff| %.3f "
                 "ms, max |diff| %.3f ms" % (
                     f["median_diff_ms"], f["median_abs_diff_ms"],
                     f["p99_abs_diff_ms"], f["max_abs_diff_ms"]))
    w = a.get("non_streamed")
    if w and w["joined"]:
        L.append("Non-streamed requests (%d): true TTFT p50 %.1f ms, from "
                 "decode's stream; the client sees its body after %.1f ms "
                 "(p50 total)" % (w["joined"], w["true_ttft_p50_ms"],
                                  w["client_total_p50_ms"]))
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spans", nargs="+", help="OTLP JSON lines files")
    p.add_argument("--csv", help="loadgen CSV for the fidelity check")
    p.add_argument("--json", help="write the numbers here as JSON")
    args = p.parse_args(argv)
    a = analyze(load_spans(args.spans),
                read_client_csv(args.csv) if args.csv else None)
    print(render(a))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(a, f, indent=1, default=str)
    return 0 if a["total_pd_requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
