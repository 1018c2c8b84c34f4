"""End-to-end: simulators + pd_proxy + client traffic, asserting on the
exported spans (OTLP JSON lines read back from the files).

Fidelity bound (documented in examples/README.md): on loopback, the
coordinator's true TTFT and the client-measured TTFT of the same request
differ by the client-side send/receive path only, so the median difference
is within 10 ms and the 99th percentile within 100 ms (2-core machine under
the full load of the 6 workers and 4 Python processes).
"""
import json
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

import dashboard

P = "llm_d.pd_proxy."
FIDELITY_MEDIAN_MS = 10.0
FIDELITY_P99_MS = 100.0


def chat(n_chars=2000, max_tokens=8, stream=False):
    return {"model": "meta-llama/Llama-3.1-8B-Instruct",
            "messages": [{"role": "user",
                          "content": uuid.uuid4().hex + " " +
                          "lorem ipsum " * (n_chars // 12)}],
            "max_tokens": max_tokens, "temperature": 0.7, "stream": stream}


def rid():
    return "t-" + uuid.uuid4().hex


def tree(spans, request_id):
    """The coordinator spans of one request and the sims' spans in its
    trace, with the structural checks every request must pass."""
    roots = [s for s in spans if s["name"] == P + "request" and
             s["attrs"].get(P + "request_id") == request_id]
    assert len(roots) == 1, request_id
    root = roots[0]
    tid = root["trace_id"]
    same = [s for s in spans if s["trace_id"] == tid]
    pre = [s for s in same if s["name"] == P + "prefill"]
    dec = [s for s in same if s["name"] == P + "decode"]
    vllm = [s for s in same if s["name"] == "llm_request"]
    assert root["service"] == "llm-d-pd-proxy"
    assert root["kind"] == 2
    for s in pre + dec:
        assert s["kind"] == 3
        assert s["parent"] == root["span_id"]  # siblings under the root
    for v in vllm:
        assert v["kind"] == 2
        assert v["attrs"]["gen_ai.request.id"] == request_id
    return root, pre, dec, vllm


def check_formulas(a, concurrent=False):
    q, p = a[P + "queue_ms"], a[P + "prefill_duration_ms"]
    d, t = a[P + "decode_ttft_ms"], a[P + "true_ttft_ms"]
    for k, v in a.items():
        if k.startswith(P) and k.endswith("_ms"):
            assert v >= 0, k
    if concurrent:
        assert P + "kv_transfer_overhead_ms" not in a
        assert a[P + "concurrent_pd"] is True
    else:
        kv = a[P + "kv_transfer_overhead_ms"]
        assert t == pytest.approx(q + p + kv + d, abs=2e-3)
    assert a[P + "total_duration_ms"] >= t


@pytest.fixture(scope="module")
def nixl(tmp_path_factory):
    """One nixlv2 stack for the module: direct requests plus a short
    6-worker loadgen run, all read back after the processes stopped."""
    from e2e_stack import Stack
    d = tmp_path_factory.mktemp("nixl")
    s = Stack(d)
    try:
        ids = {"stream": rid(), "plain": rid(), "completion": rid()}
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        out = {}
        out["stream"] = s.post("/v1/chat/completions",
                               chat(max_tokens=6, stream=True),
                               {"x-request-id": ids["stream"],
                                "traceparent": tp, "tracestate": "k=v"})
        out["plain"] = s.post("/v1/chat/completions", chat(max_tokens=5),
                              {"x-request-id": ids["plain"],
                               "x-pdtrace-pattern": "manual"})
        body = {"model": "m", "prompt": "hello " * 300, "max_tokens": 4,
                "stream": True, "stream_options": {"include_usage": True}}
        out["completion"] = s.post("/v1/completions", body,
                                   {"x-request-id": ids["completion"]})
        out["models"] = s.get("/v1/models")
        out["health"] = s.get("/health")
        csv_path = str(d / "loadgen.csv")
        out["loadgen"] = s.loadgen(8, csv_path)
        out["csv"] = csv_path
        with urllib.request.urlopen(s.url + "/metrics", timeout=10) as r:
            out["metrics"] = (r.status, r.headers.get("Content-Type"),
                              r.read().decode("utf-8"))
    finally:
        s.stop()
    out["ids"] = ids
    out["spans"] = s.spans()
    out["proxy_log"] = s.log("pd_proxy")
    return out


def test_streaming_request(nixl):
    status, headers, body, _ = nixl["stream"]
    assert status == 200
    assert headers.get("x-request-id") == nixl["ids"]["stream"]
    assert body.rstrip().endswith(b"data: [DONE]")
    root, pre, dec, vllm = tree(nixl["spans"], nixl["ids"]["stream"])
    # Inbound context: the root continues the caller's trace.
    assert root["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert root["parent"] == "b7ad6b7169203331"
    a = root["attrs"]
    check_formulas(a)
    assert a["gen_ai.request.stream"] is True
    assert a[P + "decode.streaming"] is True
    assert a[P + "connector"] == "nixlv2"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["url.path"] == "/v1/chat/completions"
    assert a["http.response.status_code"] == 200
    assert a["gen_ai.usage.output_tokens"] == 6
    assert a[P + "tpot_ms"] > 0
    # Mirrored on the decode span for the published TraceQL queries.
    assert len(dec) == 1 and len(pre) == 1
    assert dec[0]["attrs"][P + "true_ttft_ms"] == a[P + "true_ttft_ms"]
    # vLLM's llm_request spans nest under our leg spans.
    by_parent = {v["parent"]: v for v in vllm}
    assert by_parent[pre[0]["span_id"]]["service"] == "vllm-prefill"
    assert by_parent[dec[0]["span_id"]]["service"] == "vllm-decode"
    v_dec = by_parent[dec[0]["span_id"]]["attrs"]
    assert v_dec["gen_ai.usage.completion_tokens"] == 6
    assert 0 < v_dec["gen_ai.latency.time_to_first_token"] * 1000 < \
        a[P + "decode_ttft_ms"]


def test_non_streaming_request(nixl):
    status, _, body, _ = nixl["plain"]
    assert status == 200
    doc = json.loads(body)
    assert doc["usage"]["completion_tokens"] == 5
    root, pre, dec, vllm = tree(nixl["spans"], nixl["ids"]["plain"])
    assert root["parent"] == ""  # no inbound context: a new trace
    a = root["attrs"]
    check_formulas(a)
    assert a["gen_ai.request.stream"] is False
    assert a[P + "decode.streaming"] is True
    assert a[P + "assembled"] is True
    assert a[P + "first_token_observed"] is True
    assert a[P + "tpot_ms"] > 0
    assert "gen_ai.usage.cache_read.input_tokens" in a
    assert a[P + "load_pattern"] == "manual"
    assert a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.usage.input_tokens"] > 400
    assert len(vllm) == 2


def test_completions_route_and_usage_chunk(nixl):
    status, _, body, _ = nixl["completion"]
    assert status == 200 and b'"usage"' in body
    root, _, _, _ = tree(nixl["spans"], nixl["ids"]["completion"])
    a = root["attrs"]
    assert a["gen_ai.operation.name"] == "text_completion"
    assert a["gen_ai.usage.output_tokens"] == 4
    assert "gen_ai.usage.cache_read.input_tokens" in a


def test_prefill_leg_protocol(nixl):
    # The prefill sim saw max_tokens 1 (nixlv2 prefill body), the decode
    # sim the client's max_tokens.
    _, pre, dec, vllm = tree(nixl["spans"], nixl["ids"]["plain"])
    by_parent = {v["parent"]: v["attrs"] for v in vllm}
    assert by_parent[pre[0]["span_id"]]["gen_ai.request.max_tokens"] == 1
    assert by_parent[dec[0]["span_id"]]["gen_ai.request.max_tokens"] == 5


def test_models_and_health(nixl):
    status, body = nixl["models"]
    assert status == 200 and json.loads(body)["data"][0]["id"]
    assert nixl["health"][0] == 200


def test_metrics_endpoint(nixl):
    status, ctype, text = nixl["metrics"]
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ttft = fams["pdtrace_true_ttft_seconds"]
    assert ttft.type == "histogram"
    counts = [s for s in ttft.samples
              if s.name == "pdtrace_true_ttft_seconds_count"]
    assert counts and all(s.labels["connector"] == "nixlv2" for s in counts)
    by_model = {s.labels["model"]: s.value for s in counts}
    # The three direct requests (models "meta-llama/..." and "m") and the
    # load generator's, each under the model its body named.
    assert by_model.get("meta-llama/Llama-3.1-8B-Instruct", 0) >= 2
    assert by_model.get("m", 0) >= 1
    assert sum(by_model.values()) >= 3


def test_loadgen_all_patterns_traced(nixl):
    a = dashboard.analyze(nixl["spans"],
                          dashboard.read_client_csv(nixl["csv"]))
    pats = set(a["patterns"])
    for p in ("1-long-short", "2-long-medium", "3-mixed", "4-burst",
              "5-stream", "6-long-short"):
        assert p in pats, pats
    j = a["joins"]
    assert j["prefill_joined"] == j["prefill_spans"] > 0
    assert j["decode_joined"] == j["decode_spans"] > 0
    assert a["failed_requests"] == 0
    assert a["avg_true_ttft_ms"] > a["avg_vllm_decode_ttft_ms"] > 0
    for s in nixl["spans"]:
        if s["name"] == P + "request":
            check_formulas(s["attrs"])


def test_fidelity_against_client_ttft(nixl):
    a = dashboard.analyze(nixl["spans"],
                          dashboard.read_client_csv(nixl["csv"]))
    f = a["fidelity"]
    # Streamed requests only: a non-streamed client sees its body at the
    # end, while true TTFT is the first token of decode's stream.
    assert f["joined"] == f["client_requests"] >= 4
    # The client sees the first token after the coordinator forwards it.
    assert f["median_diff_ms"] >= 0
    assert f["median_abs_diff_ms"] < FIDELITY_MEDIAN_MS, f
    assert f["p99_abs_diff_ms"] < FIDELITY_P99_MS, f


def _only_request(stack, request_id):
    spans = stack.spans()
    return tree(spans, request_id), spans


def test_lmcache_flow(make_stack):
    s = make_stack(connector="lmcache")
    r1, r2 = rid(), rid()
    st, _, _, _ = s.post("/v1/chat/completions", chat(max_tokens=5),
                         {"x-request-id": r1})
    assert st == 200
    st, _, body, _ = s.post("/v1/chat/completions",
                            chat(max_tokens=5, stream=True),
                            {"x-request-id": r2})
    assert st == 200 and b"[DONE]" in body
    s.stop()
    for r in (r1, r2):
        (root, pre, dec, vllm), _ = _only_request(s, r)
        a = root["attrs"]
        assert a[P + "connector"] == "lmcache"
        check_formulas(a)
        by_parent = {v["parent"]: v["attrs"] for v in vllm}
        assert by_parent[pre[0]["span_id"]]["gen_ai.request.max_tokens"] == 1
        assert by_parent[dec[0]["span_id"]]["gen_ai.request.max_tokens"] == 5


def test_sglang_concurrent_flow(make_stack):
    s = make_stack(connector="sglang")
    r1, r2 = rid(), rid()
    assert s.post("/v1/chat/completions", chat(max_tokens=4, stream=True),
                  {"x-request-id": r1})[0] == 200
    assert s.post("/v1/chat/completions", chat(max_tokens=4),
                  {"x-request-id": r2})[0] == 200
    s.stop()
    for r in (r1, r2):
        (root, pre, dec, vllm), _ = _only_request(s, r)
        a = root["attrs"]
        check_formulas(a, concurrent=True)
        assert len(pre) == 1 and len(dec) == 1 and len(vllm) == 2
        # Both legs start together.
        assert abs(pre[0]["start"] - dec[0]["start"]) < 20_000_000


def _failed(stack, path, request_id, stream=False):
    status, headers, body, _ = stack.post(
        path, chat(max_tokens=4, stream=stream),
        {"x-request-id": request_id})
    doc = json.loads(body)
    assert doc["error"]["code"] == status
    return status, doc["error"]["type"]


def test_prefill_down_gives_502(make_stack):
    s = make_stack(prefill_up=False)
    r = rid()
    status, etype = _failed(s, "/v1/chat/completions", r)
    assert status == 502 and etype == "connection_refused"
    s.stop()
    (root, pre, dec, _), _ = _only_request(s, r)
    assert root["status"] == 2 and pre[0]["status"] == 2
    assert root["attrs"]["error.type"] == "connection_refused"
    assert root["attrs"]["http.response.status_code"] == 502
    assert dec == []


def test_decode_down_gives_502(make_stack):
    s = make_stack(decode_up=False)
    r = rid()
    status, etype = _failed(s, "/v1/chat/completions", r, stream=True)
    assert status == 502
    s.stop()
    (root, pre, dec, _), _ = _only_request(s, r)
    assert root["status"] == 2 and dec[0]["status"] == 2
    assert pre[0]["status"] != 2


def test_prefill_5xx_gives_502(make_stack):
    s = make_stack(prefill_args=["--error-rate", "1"])
    r = rid()
    status, etype = _failed(s, "/v1/completions", r)
    assert status == 502 and etype == "upstream_error"
    s.stop()
    (root, pre, _, vllm), _ = _only_request(s, r)
    assert pre[0]["attrs"]["http.response.status_code"] == 500
    assert root["status"] == 2
    assert vllm and vllm[0]["status"] == 2


def test_upstream_timeout_gives_504(make_stack):
    s = make_stack(decode_args=["--stall-s", "5"],
                   proxy_args=["--upstream-timeout", "0.5"])
    r = rid()
    status, etype = _failed(s, "/v1/chat/completions", r)
    assert status == 504 and etype == "timeout"
    s.stop()
    (root, _, dec, _), _ = _only_request(s, r)
    assert root["status"] == 2 and dec[0]["attrs"]["error.type"] == "timeout"


def test_rate_limit_time_is_queue_ms(make_stack):
    import concurrent.futures
    s = make_stack(proxy_args=["--rate-limit", "4"])
    ids = [rid() for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        res = list(ex.map(lambda r: s.post(
            "/v1/chat/completions", chat(n_chars=200, max_tokens=2),
            {"x-request-id": r}), ids))
    assert all(x[0] == 200 for x in res)
    s.stop()
    spans = s.spans()
    queues = sorted(tree(spans, r)[0]["attrs"][P + "queue_ms"] for r in ids)
    # A burst of 4 passes at once; the other 4 wait about 250 ms apiece.
    assert queues[0] < 50
    assert queues[-1] > 700
    for r in ids:
        check_formulas(tree(spans, r)[0]["attrs"])


def test_max_concurrent_queue_and_overload(make_stack):
    import concurrent.futures
    s = make_stack(proxy_args=["--max-concurrent", "1", "--max-queue", "2"])
    ids = [rid() for _ in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        res = list(ex.map(lambda r: s.post(
            "/v1/chat/completions", chat(n_chars=400, max_tokens=8),
            {"x-request-id": r}), ids))
    codes = sorted(x[0] for x in res)
    assert 200 in codes and 503 in codes, codes
    s.stop()
    spans = s.spans()
    for r, x in zip(ids, res):
        root = tree(spans, r)[0]
        if x[0] == 503:
            assert root["attrs"]["error.type"] == "overloaded"
            assert root["status"] == 2


def test_invalid_body_is_400(make_stack):
    s = make_stack()
    import urllib.request
    import urllib.error
    req = urllib.request.Request(s.url + "/v1/chat/completions",
                                 data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 400
    s.stop()
    roots = [x for x in s.spans() if x["name"] == P + "request"]
    assert roots and roots[0]["attrs"]["http.response.status_code"] == 400


def test_non_streamed_loadgen_true_ttft(nixl):
    """The five non-streamed patterns: true TTFT is the first token of the
    streamed decode, well inside the client's whole response time, and
    TPOT is measured."""
    client = dashboard.read_client_csv(nixl["csv"])
    seen = 0
    for s in nixl["spans"]:
        if s["name"] != P + "request":
            continue
        row = client.get(s["attrs"].get(P + "request_id"))
        if row is None or row["stream"] != "0" or row["status"] != "200":
            continue
        a = s["attrs"]
        check_formulas(a)
        assert a[P + "first_token_observed"] is True
        assert a[P + "assembled"] is True
        assert a[P + "tpot_ms"] > 0
        assert a[P + "true_ttft_ms"] < float(row["total_ms"]) - 50
        seen += 1
    assert seen >= 10
