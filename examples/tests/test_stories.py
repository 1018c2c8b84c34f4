"""The demo's stories end to end: the proxy behind the gateway (decoder,
decision reason, conversation, turn and tenant headers; the tenant and
turn counters on /metrics), the simulator's KV link profiles, the
one-command demo with the gateway in front (the trace check, P/D
decisions, KV pull, turns and tenants) and both routing modes compared on
the same conversations."""
import json
import os
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from e2e_stack import EXAMPLES, SIM, free_port, wait_ready

sys.path.insert(0, os.path.join(EXAMPLES, "demo"))
import dashboard  # noqa: E402

RUN_DEMO = os.path.join(EXAMPLES, "demo", "run_demo.py")
P = "llm_d.pd_proxy."
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def chat_body(text="hello there " * 40, stream=False):
    return {"model": MODEL, "max_tokens": 4, "stream": stream,
            "messages": [{"role": "user", "content": text}]}


def root_of(spans, request_id):
    root = [s for s in spans if s["name"] == P + "request" and
            s["attrs"].get(P + "request_id") == request_id]
    assert len(root) == 1, request_id
    root = root[0]
    kids = {s["name"]: s for s in spans if s["parent"] == root["span_id"]}
    return root, kids.get(P + "prefill"), kids.get(P + "decode")


def metric_samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_proxy_honours_gateway_headers(make_stack):
    s = make_stack(prefill_in_proxy=False, proxy_args=[
        "--tenants", "team-a,team-b"])
    dec = "127.0.0.1:%d" % s.decode_port
    pre = "127.0.0.1:%d" % s.prefill_ports[0]
    base = {"x-decoder-host-port": dec, "x-conversation-id": "conv-1",
            "x-tenant": "team-a"}
    assert s.post("/v1/chat/completions", chat_body(), dict(
        base, **{"x-request-id": "pd-1", "x-prefiller-host-port": pre,
                 "x-pd-decision-reason": "uncached_input_at_or_above_"
                 "threshold", "x-turn-index": "0"}))[0] == 200
    assert s.post("/v1/chat/completions", chat_body(stream=True), dict(
        base, **{"x-request-id": "do-1", "x-turn-index": "3",
                 "x-tenant": "someone-else",
                 "x-pd-decision-reason": "uncached_input_below_"
                 "threshold"}))[0] == 200
    # Bad headers: a clear 4xx, never a crash.
    for hdrs, status, etype in (
            ({"x-turn-index": "-1"}, 400, "invalid_request"),
            ({"x-turn-index": "two"}, 400, "invalid_request"),
            ({"x-pd-decision-reason": "a b"}, 400, "invalid_request"),
            ({"x-decoder-host-port": "http://x/y"}, 400, "invalid_request"),
            ({"x-decoder-host-port": "%s,%s" % (dec, dec)}, 400,
             "invalid_request"),
            ({"x-tenant": "a\tb"}, 400, "invalid_request")):
        st, _, data, _ = s.post("/v1/chat/completions", chat_body(), hdrs)
        assert st == status, (hdrs, data)
        assert json.loads(data)["error"]["type"] == etype
    st, metrics = s.get("/metrics")
    assert st == 200
    m = metric_samples(metrics.decode())
    assert m[("pd_proxy_tenant_requests_total",
              (("decision", "pd"), ("tenant", "team-a")))] == 1
    assert m[("pd_proxy_tenant_requests_total",
              (("decision", "decode-only"), ("tenant", "other")))] == 1
    assert m[("pd_proxy_tenant_tokens_total",
              (("tenant", "team-a"), ("type", "output")))] == 4
    assert m[("pd_proxy_tenant_tokens_total",
              (("tenant", "team-a"), ("type", "input")))] > 0
    assert not any("someone-else" in str(k) for k in m)
    assert m[("pd_proxy_turn_true_ttft_seconds_count",
              (("turn", "first"),))] == 1
    assert m[("pd_proxy_turn_true_ttft_seconds_count",
              (("turn", "later"),))] == 1
    s.stop()
    spans = s.spans()
    root, p, d = root_of(spans, "pd-1")
    a = root["attrs"]
    assert p is not None and d is not None
    assert a["gen_ai.conversation.id"] == "conv-1"
    assert a["llm_d.conversation.turn_index"] == 0
    assert a["llm_d.tenant"] == "team-a"
    assert a[P + "disaggregation_enabled"] is True
    assert a[P + "reason"] == "uncached_input_at_or_above_threshold"
    assert d["attrs"]["server.port"] == s.decode_port
    assert d["attrs"]["gen_ai.request.stream"] is False
    assert d["attrs"][P + "decode.streaming"] is True
    root, p, d = root_of(spans, "do-1")
    a = root["attrs"]
    assert p is None
    assert a[P + "disaggregation_enabled"] is False
    assert a[P + "reason"] == "uncached_input_below_threshold"
    assert a["llm_d.conversation.turn_index"] == 3
    assert a["llm_d.tenant"] == "someone-else"  # the span keeps the name
    assert d["attrs"]["gen_ai.request.stream"] is True


def test_allowed_decoders(make_stack):
    s = make_stack(prefill_in_proxy=False, proxy_args=[
        "--allowed-decoders", "127.0.0.1:%d" % free_port()])
    st, _, data, _ = s.post("/v1/chat/completions", chat_body(), {
        "x-decoder-host-port": "127.0.0.1:%d" % s.decode_port})
    assert st == 403
    assert json.loads(data)["error"]["type"] == "decoder_not_allowed"


def test_sim_kv_link_profiles(tmp_path):
    """The decode simulator's KV pull follows the link profile, in the
    ranges of the seed for a ~1000-token prompt, and is on its span."""
    procs = []
    files = {}
    try:
        ports = {}
        for link in ("tcp", "rdma"):
            ports[link] = free_port()
            files[link] = str(tmp_path / (link + ".jsonl"))
            env = dict(os.environ, OTEL_TRACES_EXPORTER="console",
                       PDTRACE_CONSOLE_PATH=files[link],
                       OTEL_BSP_SCHEDULE_DELAY="100")
            env.pop("OTEL_SDK_DISABLED", None)
            procs.append(subprocess.Popen(
                [sys.executable, SIM, "--role", "decode", "--port",
                 str(ports[link]), "--kv-link", link, "--tpot-ms", "1"],
                env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
            wait_ready("http://127.0.0.1:%d/health" % ports[link],
                       procs[-1])
        for link, port in ports.items():
            body = {"model": MODEL, "prompt": "x" * 4000, "max_tokens": 2,
                    "kv_transfer_params": {"do_remote_prefill": True}}
            req = urllib.request.Request(
                "http://127.0.0.1:%d/v1/completions" % port,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=20) as r:
                assert r.status == 200
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    pull = {}
    for link, path in files.items():
        spans = dashboard.load_spans([path])
        assert len(spans) == 1
        a = spans[0]["attrs"]
        assert a["llm_d.kv.link"] == link
        assert a["llm_d.kv.pulled_tokens"] == 1000
        pull[link] = a["llm_d.kv.pull_time"] * 1000.0
    assert 5 <= pull["tcp"] <= 20
    assert 2 <= pull["rdma"] <= 8
    assert pull["tcp"] > pull["rdma"]


def run_demo(tmp_path, args, timeout=300):
    env = dict(os.environ)
    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT",
              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(k, None)
    out = tmp_path / "demo.json"
    res = subprocess.run(
        [sys.executable, RUN_DEMO, "--workdir", str(tmp_path / "work"),
         "--json", str(out)] + args,
        capture_output=True, text=True, env=env, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    with open(out) as f:
        return json.load(f), res.stdout


def test_demo_gateway_path(tmp_path):
    """2P2D behind the gateway: every client request's whole tree is in
    one trace, both P/D decisions occur, and the report has the KV pull,
    the turns and the tenants."""
    a, out = run_demo(tmp_path, ["--seconds", "8", "--time-scale", "0.25",
                                 "--decode", "2", "--price-per-1k", "0.5"])
    tc = a["trace_check"]
    assert tc["client_requests"] > 20
    assert tc["complete"] == tc["client_requests"], tc
    assert tc["pd"] > 0 and tc["decode_only"] > 0
    assert "Trace check: %d of %d" % (tc["complete"],
                                      tc["client_requests"]) in out
    kinds = {k.split("|")[0] for k in a["decisions"]}
    assert kinds == {"pd", "decode-only"}
    assert a["gateway"]["requests"] == tc["client_requests"]
    assert a["gateway"]["routing"] == "prefix-aware"
    assert a["kv"]["link"] == "tcp" and a["kv"]["pull_ms"]["n"] > 0
    assert a["kv"]["pull_ms"]["mean"] > a["kv"]["overhead_ms"]["mean"]
    t = a["turns"]
    assert t["conversations"] > 1 and "0" in t["by_turn"]
    assert t["by_turn"]["0"]["hit_rate"] < t["hit_rate"]
    assert set(a["tenants"]) == {"team-search", "team-chat", "batch-eval"}
    assert sum(r["requests"] for r in a["tenants"].values()) == \
        a["total_pd_requests"]
    assert "Cost by tenant" in out and "cost" in out


def test_compare_routing(tmp_path):
    """The same conversations, round-robin then prefix-aware: prefix-aware
    has the higher KV cache hit rate and the lower TTFT p95, from the spans
    and from the client's own measurement."""
    runs, out = run_demo(tmp_path, [
        "--compare-routing", "--prefill", "3", "--time-scale", "0.5",
        "--conversations", "12",
        "--turns", "8", "--seconds", "30"], timeout=400)
    rr, pa = runs["round-robin"], runs["prefix-aware"]
    for a in (rr, pa):
        assert a["trace_check"]["complete"] == \
            a["trace_check"]["client_requests"] == 96
    assert pa["turns"]["hit_rate"] > rr["turns"]["hit_rate"]
    assert pa["turns"]["ttft_ms"]["p95"] < rr["turns"]["ttft_ms"]["p95"]
    assert pa["client"]["p95"] < rr["client"]["p95"]
    assert pa["turns"]["later_turn_avg_ms"] < rr["turns"]["later_turn_avg_ms"]
    assert "round-robin vs prefix-aware" in out
