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

With the gateway in front (examples/gateway), also: the trace check (the
whole tree gateway -> EPP -> proxy -> prefill/decode -> vLLM in one trace
for every client request), the P/D decisions by reason with their TTFT,
the decode server's KV pull beside the coordinator's overhead, multi-turn
TTFT by turn with the KV cache hit rate, and the cost by tenant;
compare_routing() and compare_kv() print the demo's comparisons.
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


def read_client_csvs(paths: Iterable[str]) -> Dict[str, Dict[str, str]]:
    out: Dict[str, Dict[str, str]] = {}
    for p in paths:
        out.update(read_client_csv(p))
    return out


GATEWAY_SERVICE = "gateway-api-inference-extension"
EPP_SERVICE = "llm-d-inference-scheduler"
A_TURN = "llm_d.conversation.turn_index"
A_TENANT = "llm_d.tenant"


def pct3(values: List[float]) -> Dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "mean": mean(values),
            "n": len(values)}


def compute_spans(spans: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per trace, the vLLM llm_request span that computed the prompt: the
    prefill server's, or the decode server's for a decode-only request."""
    out: Dict[str, Dict[str, Any]] = {}
    for s in spans:
        if s["name"] != "llm_request":
            continue
        if s["service"] == "vllm-prefill" or s["trace_id"] not in out:
            out[s["trace_id"]] = s
    return out


def hit_rate(ss: List[Dict[str, Any]]) -> float:
    """Cached prompt tokens / prompt tokens over vLLM llm_request spans."""
    prompt = sum(s["attrs"].get("gen_ai.usage.prompt_tokens") or 0
                 for s in ss)
    cached = sum(s["attrs"].get("gen_ai.usage.cached_tokens") or 0
                 for s in ss)
    return cached / prompt if prompt else math.nan


def trace_check(spans: List[Dict[str, Any]],
                client: Dict[str, Dict[str, str]]) -> Dict[str, Any]:
    """For every client request: is the whole tree in one trace?
    gateway.request (request id) -> the EPP's scorer and pick spans and
    llm_d.pd_proxy.request -> llm_d.pd_proxy.prefill (P/D) and
    llm_d.pd_proxy.decode -> vLLM llm_request under each leg."""
    by_trace: Dict[str, List[Dict[str, Any]]] = {}
    gw_by_rid: Dict[str, Dict[str, Any]] = {}
    for s in spans:
        by_trace.setdefault(s["trace_id"], []).append(s)
        if s["name"] == "gateway.request":
            rid = s["attrs"].get("llm_d.gateway.request_id")
            if rid:
                gw_by_rid[rid] = s
    missing: Dict[str, int] = {}
    complete = 0
    pd = decode_only = 0
    for rid in client:
        gw = gw_by_rid.get(rid)
        why = None
        if gw is None:
            why = "gateway.request"
        else:
            tr = by_trace.get(gw["trace_id"], [])
            kids = {}
            for s in tr:
                kids.setdefault(s["parent"], []).append(s)

            def child(parent, name, service=None):
                for c in kids.get(parent["span_id"], []):
                    if c["name"] == name and (service is None or
                                              c["service"] == service):
                        return c
                return None

            req = child(gw, P + "request", PROXY_SERVICE)
            if child(gw, "llm_d.epp.scorer.prefix_cache") is None:
                why = "llm_d.epp.scorer.prefix_cache"
            elif child(gw, "llm_d.epp.profile_handler.pick") is None:
                why = "llm_d.epp.profile_handler.pick"
            elif req is None:
                why = P + "request"
            else:
                dec = child(req, P + "decode")
                pre = child(req, P + "prefill")
                is_pd = req["attrs"].get(P + "disaggregation_enabled",
                                         True) is not False
                if dec is None:
                    why = P + "decode"
                elif child(dec, "llm_request", "vllm-decode") is None:
                    why = "vllm-decode llm_request"
                elif is_pd and pre is None:
                    why = P + "prefill"
                elif is_pd and child(pre, "llm_request",
                                     "vllm-prefill") is None:
                    why = "vllm-prefill llm_request"
                elif is_pd:
                    pd += 1
                else:
                    decode_only += 1
        if why is None:
            complete += 1
        else:
            missing[why] = missing.get(why, 0) + 1
    return {"client_requests": len(client), "complete": complete,
            "pd": pd, "decode_only": decode_only, "missing": missing}


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
    out["avg_decode_ttft_ms"] = mean(attr(decodes, P + "decode_ttft_ms"))
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

    # Where the time before the first token went on the KV path: the
    # decode server's own KV pull beside the coordinator's overhead.
    pulls = [x * 1000.0 for x in attr(vdec, "llm_d.kv.pull_time")]
    links = sorted({s["attrs"]["llm_d.kv.link"] for s in vdec
                    if s["attrs"].get("llm_d.kv.link")})
    out["kv"] = {"link": ",".join(links) or "-", "pull_ms": pct3(pulls),
                 "pulled_tokens": mean(attr(vdec, "llm_d.kv.pulled_tokens")),
                 "overhead_ms": pct3(attr(decodes,
                                          P + "kv_transfer_overhead_ms"))}

    # P/D decisions (decode-only vs P/D, by reason) and TTFT by decision.
    dec: Dict[str, Dict[str, Any]] = {}
    for s in roots:
        if client_failed(s):
            continue
        d = "pd" if s["attrs"].get(P + "disaggregation_enabled",
                                   True) is not False else "decode-only"
        key = "%s|%s" % (d, s["attrs"].get(P + "reason", "-"))
        dec.setdefault(key, []).append(s)
    out["decisions"] = {k: dict(pct3(attr(v, P + "true_ttft_ms")),
                                requests=len(v))
                        for k, v in sorted(dec.items())}

    # Gateway and EPP spans.
    gws = [s for s in spans if s["name"] == "gateway.request"]
    picks = [s for s in spans if s["name"] == "llm_d.epp.profile_handler.pick"]
    out["gateway"] = {
        "requests": len(gws),
        "scorer_spans": sum(1 for s in spans if s["name"] ==
                            "llm_d.epp.scorer.prefix_cache"),
        "pick_spans": len(picks),
        "routing": ",".join(sorted({str(s["attrs"].get(
            "llm_d.gateway.routing")) for s in gws})) or "-",
        "epp_decisions": {},
    }
    for s in picks:
        k = "%s|%s" % (s["attrs"].get("decision"), s["attrs"].get("reason"))
        out["gateway"]["epp_decisions"][k] = \
            out["gateway"]["epp_decisions"].get(k, 0) + 1

    # Multi-turn: TTFT by turn and the KV cache hit rate, per request from
    # the proxy's request span and the vLLM span that computed the prompt.
    comp = compute_spans(spans)
    chat = [s for s in roots if not client_failed(s) and
            isinstance(s["attrs"].get(A_TURN), int)]
    if chat:
        first = [s for s in chat if s["attrs"][A_TURN] == 0]
        later = [s for s in chat if s["attrs"][A_TURN] > 0]
        f = mean(attr(first, P + "true_ttft_ms"))
        lt = mean(attr(later, P + "true_ttft_ms"))
        by_turn = {}
        for s in chat:
            by_turn.setdefault(s["attrs"][A_TURN], []).append(s)
        out["turns"] = {
            "requests": len(chat),
            "conversations": len({s["attrs"].get("gen_ai.conversation.id")
                                  for s in chat}),
            "ttft_ms": pct3(attr(chat, P + "true_ttft_ms")),
            "first_turn_avg_ms": f, "later_turn_avg_ms": lt,
            "ratio": f / lt if lt else math.nan,
            "hit_rate": hit_rate([comp[s["trace_id"]] for s in chat
                                  if s["trace_id"] in comp]),
            "by_turn": {str(t): {
                "requests": len(v),
                "ttft_avg_ms": mean(attr(v, P + "true_ttft_ms")),
                "hit_rate": hit_rate([comp[s["trace_id"]] for s in v
                                      if s["trace_id"] in comp])}
                for t, v in sorted(by_turn.items())},
        }

    # Cost attribution by tenant (llm_d.tenant on the request span).
    tenants: Dict[str, Dict[str, float]] = {}
    for s in roots:
        if client_failed(s):
            continue
        a = s["attrs"]
        row = tenants.setdefault(str(a.get(A_TENANT, "(none)")), {
            "requests": 0, "input_tokens": 0, "cached_input_tokens": 0,
            "output_tokens": 0, "prefill_s": 0.0, "decode_s": 0.0})
        row["requests"] += 1
        row["input_tokens"] += a.get("gen_ai.usage.input_tokens") or 0
        row["cached_input_tokens"] += \
            a.get("gen_ai.usage.cache_read.input_tokens") or 0
        row["output_tokens"] += a.get("gen_ai.usage.output_tokens") or 0
        row["prefill_s"] += (a.get(P + "prefill_duration_ms") or 0) / 1e3
        row["decode_s"] += (a.get(P + "decode_duration_ms") or 0) / 1e3
    out["tenants"] = tenants

    if client is not None and gws:
        out["trace_check"] = trace_check(spans, client)

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


def render(a: Dict[str, Any], price_per_1k: float = 0.0) -> str:
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
    L.extend(render_stories(a, price_per_1k))
    w = a.get("non_streamed")
    if w and w["joined"]:
        L.append("Non-streamed requests (%d): true TTFT p50 %.1f ms, from "
                 "decode's stream; the client sees its body after %.1f ms "
                 "(p50 total)" % (w["joined"], w["true_ttft_p50_ms"],
                                  w["client_total_p50_ms"]))
    return "\n".join(L)


def _p3(d: Dict[str, float], fmt: str = "%.1f") -> str:
    if not d["n"]:
        return "-"
    return "/".join(fmt % d[k] for k in ("p50", "p95", "p99"))


def render_stories(a: Dict[str, Any], price_per_1k: float = 0.0
                   ) -> List[str]:
    """The gateway, P/D decision, KV link, multi-turn and tenant parts of
    the report."""
    L: List[str] = []
    g = a.get("gateway")
    if g and g["requests"]:
        L.append("")
        L.append("Gateway: %d gateway.request spans (routing %s), %d EPP "
                 "scorer and %d pick spans" % (
                     g["requests"], g["routing"], g["scorer_spans"],
                     g["pick_spans"]))
    tc = a.get("trace_check")
    if tc:
        L.append("Trace check: %d of %d client requests have the whole "
                 "tree gateway -> EPP -> proxy -> prefill/decode -> vLLM in "
                 "one trace (%d P/D, %d decode-only)%s" % (
                     tc["complete"], tc["client_requests"], tc["pd"],
                     tc["decode_only"],
                     "; first missing span: " + ", ".join(
                         "%s %d" % kv for kv in sorted(
                             tc["missing"].items()))
                     if tc["missing"] else ""))
    d = a.get("decisions")
    if d:
        L.append("")
        L.append("P/D decisions (proxy request spans; true TTFT ms "
                 "p50/p95/p99):")
        for k, row in d.items():
            dec, why = k.split("|", 1)
            L.append("  %-12s %-38s %5d  %s" % (dec, why, row["requests"],
                                                _p3(row)))
    kv = a.get("kv")
    if kv and kv["pull_ms"]["n"]:
        L.append("")
        L.append("KV path (link %s): decode's KV pull p50/p95/p99 %s ms "
                 "(mean %.2f ms, %.0f tokens pulled on average); the "
                 "coordinator's own overhead %s ms (mean %.3f ms)" % (
                     kv["link"], _p3(kv["pull_ms"], "%.2f"),
                     kv["pull_ms"]["mean"], kv["pulled_tokens"],
                     _p3(kv["overhead_ms"], "%.2f"),
                     kv["overhead_ms"]["mean"]))
    t = a.get("turns")
    if t:
        L.append("")
        L.append("Multi-turn chat: %d requests in %d conversations; TTFT "
                 "p50/p95/p99 %s ms; first turn avg %.1f ms, later turns "
                 "avg %.1f ms (%.2fx); KV cache hit rate %.1f%%" % (
                     t["requests"], t["conversations"], _p3(t["ttft_ms"]),
                     t["first_turn_avg_ms"], t["later_turn_avg_ms"],
                     t["ratio"], 100 * t["hit_rate"]))
        L.append("  by turn: " + ", ".join(
            "%s: %.1f ms, hit %.0f%%" % (k, v["ttft_avg_ms"],
                                         100 * v["hit_rate"])
            for k, v in t["by_turn"].items()))
    L.extend(render_tenants(a.get("tenants") or {}, price_per_1k))
    return L


def render_tenants(tenants: Dict[str, Dict[str, float]],
                   price_per_1k: float = 0.0) -> List[str]:
    if not tenants or list(tenants) == ["(none)"]:
        return []
    L = ["", "Cost by tenant (llm_d.tenant):"]
    hdr = "  %-14s %8s %12s %12s %12s %10s %10s" % (
        "tenant", "requests", "input tok", "cached tok", "output tok",
        "prefill s", "decode s")
    if price_per_1k:
        hdr += " %10s" % "cost"
    L.append(hdr)
    for name, r in sorted(tenants.items()):
        line = "  %-14s %8d %12d %12d %12d %10.2f %10.2f" % (
            name, r["requests"], r["input_tokens"],
            r["cached_input_tokens"], r["output_tokens"], r["prefill_s"],
            r["decode_s"])
        if price_per_1k:
            line += " %10.4f" % ((r["input_tokens"] + r["output_tokens"]) /
                                 1000.0 * price_per_1k)
        L.append(line)
    return L


def client_ttfts(client: Dict[str, Dict[str, str]]) -> Dict[str, Any]:
    """The load generator's own chat numbers, from its CSV."""
    rows = [r for r in client.values() if r.get("status") == "200" and
            r.get("client_ttft_ms")]
    t = [float(r["client_ttft_ms"]) for r in rows]
    first = [float(r["client_ttft_ms"]) for r in rows if r["turn"] == "0"]
    later = [float(r["client_ttft_ms"]) for r in rows if r["turn"] != "0"]
    f, lt = mean(first), mean(later)
    return dict(pct3(t), first_turn_avg_ms=f, later_turn_avg_ms=lt,
                ratio=f / lt if lt else math.nan)


def compare_routing(rr: Dict[str, Any], pa: Dict[str, Any]) -> str:
    """The round-robin vs prefix-aware table, from each run's analysis
    (with "turns" from the spans and "client" from the CSV)."""
    L = ["== Multi-turn chat: round-robin vs prefix-aware routing (same "
         "conversations) =="]
    L.append("  %-30s %14s %14s %12s" % ("", "round-robin", "prefix-aware",
                                          "improvement"))

    def row(label, x, y, lower_better=True, unit="ms", scale=1.0):
        if unit == "%":
            imp = (y - x) * 100.0
            L.append("  %-30s %13.1f%% %13.1f%% %+10.1f pt" % (
                label, x * 100, y * 100, imp))
            return
        imp = (x - y) / x * 100.0 if lower_better and x else             (y - x) / x * 100.0 if x else math.nan
        L.append("  %-30s %11.1f %s %11.1f %s %+10.1f%%" % (
            label, x * scale, unit, y * scale, unit, imp))

    a, b = rr["turns"], pa["turns"]
    for q in ("p50", "p95", "p99"):
        row("TTFT %s (spans)" % q, a["ttft_ms"][q], b["ttft_ms"][q])
    row("first-turn avg TTFT", a["first_turn_avg_ms"], b["first_turn_avg_ms"])
    row("later-turn avg TTFT", a["later_turn_avg_ms"], b["later_turn_avg_ms"])
    L.append("  %-30s %13.2fx %13.2fx" % ("first / later ratio", a["ratio"],
                                          b["ratio"]))
    row("KV cache hit rate", a["hit_rate"], b["hit_rate"], unit="%")
    ca, cb = rr.get("client"), pa.get("client")
    if ca and cb:
        L.append("  client's own measurement (loadgen CSV):")
        for q in ("p50", "p95", "p99"):
            row("  client TTFT %s" % q, ca[q], cb[q])
        L.append("  %-30s %13.2fx %13.2fx" % ("  client first / later",
                                              ca["ratio"], cb["ratio"]))
    return "\n".join(L)


def compare_kv(runs: Dict[str, Dict[str, Any]]) -> str:
    """The TCP vs RDMA table from each run's analysis."""
    L = ["== KV link: TCP vs RDMA =="]
    L.append("  %-34s %12s %12s %12s" % ("", "tcp", "rdma", "tcp - rdma"))
    t, r = runs["tcp"], runs["rdma"]
    for label, fa in (
            ("decode KV pull mean, ms", lambda a: a["kv"]["pull_ms"]["mean"]),
            ("decode KV pull p95, ms", lambda a: a["kv"]["pull_ms"]["p95"]),
            ("coordinator overhead mean, ms",
             lambda a: a["kv"]["overhead_ms"]["mean"]),
            ("avg decode TTFT (proxy), ms",
             lambda a: a["avg_decode_ttft_ms"]),
            ("avg true TTFT, ms", lambda a: a["avg_true_ttft_ms"])):
        x, y = fa(t), fa(r)
        L.append("  %-34s %12.2f %12.2f %+12.2f" % (label, x, y, x - y))
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spans", nargs="+", help="OTLP JSON lines files")
    p.add_argument("--csv", action="append", default=[],
                   help="loadgen CSV for the fidelity and trace checks "
                        "(repeatable)")
    p.add_argument("--price-per-1k", type=float, default=0.0,
                   help="price per 1000 tokens for the tenant table")
    p.add_argument("--json", help="write the numbers here as JSON")
    args = p.parse_args(argv)
    a = analyze(load_spans(args.spans),
                read_client_csvs(args.csv) if args.csv else None)
    print(render(a, args.price_per_1k))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(a, f, indent=1, default=str)
    return 0 if a["total_pd_requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
