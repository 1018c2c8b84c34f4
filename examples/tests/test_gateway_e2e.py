"""End-to-end: the gateway (a real process) in front of a stand-in proxy
that records what it receives, exporting OTLP/HTTP to a loopback receiver.
Asserts the span tree (gateway.request -> EPP spans, the proxy's parent),
their attributes, the headers forwarded to the proxy, both routing modes
and the error answers."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from e2e_stack import free_port, wait_ready
from otlp_receiver import Receiver

HERE = os.path.dirname(os.path.abspath(__file__))
GATEWAY = os.path.join(os.path.dirname(HERE), "gateway", "gateway.py")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
DECODE = ["127.0.0.1:8201", "127.0.0.1:8202"]
PREFILL = ["127.0.0.1:8101", "127.0.0.1:8102"]
SERVER, INTERNAL = 2, 1
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"


class FakeProxy:
    """Stands in for pd_proxy: records path, headers and body of every
    call; answers SSE for stream requests, JSON otherwise, or `status`."""

    def __init__(self):
        self.calls = []
        self.status = 200
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n))
                outer.calls.append({
                    "path": self.path, "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()}})
                if outer.status != 200:
                    data = b'{"error": "boom"}'
                    self.send_response(outer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for i in range(3):
                        self.wfile.write(b'data: {"tok": %d}\n\n' % i)
                        self.wfile.flush()
                        time.sleep(0.01)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.close_connection = True
                    return
                data = json.dumps({"id": "cmpl-1", "choices": [
                    {"message": {"content": "ok"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self._t = threading.Thread(target=self.server.serve_forever,
                                   daemon=True)
        self._t.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self._t.join(5)


class Gw:
    def __init__(self, tmp, receiver, proxy_url, *extra):
        self.port = free_port()
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                   OTEL_EXPORTER_OTLP_COMPRESSION="none",
                   OTEL_BSP_SCHEDULE_DELAY="50", PYTHONUNBUFFERED="1")
        for k in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
                  "OTEL_TRACES_SAMPLER", "OTEL_SERVICE_NAME",
                  "OTEL_RESOURCE_ATTRIBUTES",
                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            env.pop(k, None)
        self.logf = open(os.path.join(str(tmp), "gateway.log"), "wb")
        argv = [sys.executable, GATEWAY, "--port", str(self.port),
                "--proxy-url", proxy_url, "--decode", ",".join(DECODE)]
        self.proc = subprocess.Popen(argv + list(extra), env=env,
                                     stdout=self.logf,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d" % self.port
        wait_ready(self.url + "/health", self.proc)

    def post(self, body, headers=None, path="/v1/chat/completions"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method="POST")
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()


@pytest.fixture
def env(tmp_path):
    made = []
    rec = Receiver()
    proxy = FakeProxy()

    def start(*extra, proxy_url=None):
        g = Gw(tmp_path, rec, proxy_url or proxy.url, *extra)
        made.append(g)
        return g

    yield rec, proxy, start
    for g in made:
        g.stop()
    proxy.stop()
    rec.stop()


def conversation(turns, system_chars=2000, user_chars=100):
    msgs = [{"role": "system", "content": ("sys %d " % 7) * (system_chars // 6)}]
    out = []
    for t in range(turns):
        msgs.append({"role": "user",
                     "content": ("turn %d question " % t) * (user_chars // 16)})
        out.append({"model": MODEL, "messages": list(msgs), "max_tokens": 8})
        msgs.append({"role": "assistant", "content": "answer %d" % t})
    return out


def traces(spans, rid):
    """gateway.request of request id rid, and its EPP children."""
    gws = [s for s in spans if s["name"] == "gateway.request" and
           s["attrs"].get("llm_d.gateway.request_id") == rid]
    assert len(gws) == 1, [s["name"] for s in spans]
    gw = gws[0]
    kids = {s["name"]: s for s in spans
            if s["parent_span_id"] == gw["span_id"]}
    return gw, kids


def has_rids(rids):
    def pred(spans):
        got = {s["attrs"].get("llm_d.gateway.request_id") for s in spans
               if s["name"] == "gateway.request"}
        n = sum(1 for s in spans if s["name"].startswith("llm_d.epp."))
        return set(rids) <= got and n >= 2 * len(rids)
    return pred


def test_prefix_aware_conversation_span_tree_and_headers(env):
    rec, proxy, start = env
    g = start("--prefill", ",".join(PREFILL), "--routing", "prefix-aware",
              "--pd-threshold", "400", "--tenant-header", "x-team")
    turns = conversation(3)
    rids = []
    for i, body in enumerate(turns):
        rid = "conv-%d" % i
        rids.append(rid)
        h = {"x-request-id": rid, "x-conversation-id": "c-42",
             "x-turn-index": str(i), "x-team": "team-blue",
             # a client must not choose the routing
             "x-prefiller-host-port": "10.9.9.9:1"}
        if i == 0:
            h["traceparent"] = "00-%s-%s-01" % (CLIENT_TRACE, CLIENT_PARENT)
        status, hdrs, data = g.post(body, h)
        assert status == 200, data
        assert json.loads(data)["choices"][0]["message"]["content"] == "ok"
        assert hdrs.get("x-request-id") == rid
    spans = rec.wait_for(has_rids(rids))
    assert len(proxy.calls) == 3
    decoders = set()
    for i, (rid, call) in enumerate(zip(rids, proxy.calls)):
        gw, kids = traces(spans, rid)
        a = gw["attrs"]
        assert gw["kind"] == SERVER
        assert gw["service"] == "gateway-api-inference-extension"
        assert a["gen_ai.conversation.id"] == "c-42"
        assert a["llm_d.conversation.turn_index"] == i
        assert a["llm_d.tenant"] == "team-blue"
        assert a["gen_ai.request.model"] == MODEL
        assert a["http.response.status_code"] == 200
        assert a["llm_d.gateway.routing"] == "prefix-aware"
        assert gw["status_code"] == 0
        if i == 0:
            assert gw["trace_id"] == CLIENT_TRACE
            assert gw["parent_span_id"] == CLIENT_PARENT
        else:
            assert gw["parent_span_id"] == ""
        assert set(kids) == {"llm_d.epp.scorer.prefix_cache",
                             "llm_d.epp.profile_handler.pick"}
        sc = kids["llm_d.epp.scorer.prefix_cache"]
        pk = kids["llm_d.epp.profile_handler.pick"]
        for s in (sc, pk):
            assert s["kind"] == INTERNAL
            assert s["service"] == "llm-d-inference-scheduler"
            assert s["trace_id"] == gw["trace_id"]
            assert gw["start"] <= s["start"] <= s["end"] <= gw["end"]
        assert sc["end"] <= pk["start"]
        p = pk["attrs"]
        user_bytes = sum(len(("%s: %s\n" % (m["role"], m["content"]))
                             .encode()) for m in turns[i]["messages"])
        assert p["user_input_bytes"] == user_bytes
        assert p["pd_threshold"] == 400
        total = sc["attrs"]["llm_d.epp.prefix_cache.total_blocks"]
        assert total == user_bytes // 64
        # forwarded: trace context of gateway.request, routing, ids
        h = call["headers"]
        # turn 0 continues the client's trace (its flags, 01); the others
        # start one: sampled, random trace id (W3C Level 2 flag 0x02)
        flags = "01" if i == 0 else "03"
        assert h["traceparent"] == "00-%s-%s-%s" % (gw["trace_id"],
                                                    gw["span_id"], flags)
        assert h["x-request-id"] == rid
        assert h["x-conversation-id"] == "c-42"
        assert h["x-turn-index"] == str(i)
        assert h["x-tenant"] == "team-blue"
        assert h["x-decoder-host-port"] == p["decode_target"]
        assert call["body"] == turns[i]
        decoders.add(p["decode_target"])
        if i == 0:
            assert p["decision"] == "pd"
            assert p["reason"] == "uncached_input_at_or_above_threshold"
            assert p["cache_hit_ratio"] == 0.0
            assert h["x-prefiller-host-port"] == p["prefill_target"]
            assert h["x-prefiller-host-port"] in PREFILL
            assert h["x-pd-decision-reason"] == p["reason"]
        else:
            # the decode server holds all but the new turn: decode-only
            assert p["decision"] == "decode-only"
            assert p["reason"] == "uncached_input_below_threshold"
            assert p["cache_hit_ratio"] > 0.8
            assert p["uncached_input_bytes"] < 400
            assert "x-prefiller-host-port" not in h
            assert "prefill_target" not in p
            assert sc["attrs"]["llm_d.epp.prefix_cache.max_matched_blocks"] \
                > 0
            assert "=0.000" not in sc["attrs"][
                "llm_d.epp.prefix_cache.decode_scores"].split(",")[
                    DECODE.index(p["decode_target"])]
    assert len(decoders) == 1  # the conversation stays on its server


def test_round_robin_scatters_the_conversation(env):
    rec, proxy, start = env
    g = start("--prefill", PREFILL[0], "--routing", "round-robin",
              "--pd-threshold", "400")
    turns = conversation(4)
    rids = ["rr-%d" % i for i in range(4)]
    for rid, body in zip(rids, turns):
        status, _, data = g.post(body, {"x-request-id": rid})
        assert status == 200, data
    spans = rec.wait_for(has_rids(rids))
    picks = [traces(spans, rid)[1]["llm_d.epp.profile_handler.pick"]["attrs"]
             for rid in rids]
    assert [p["decode_target"] for p in picks] == DECODE * 2
    assert [c["headers"]["x-decoder-host-port"] for c in proxy.calls] == \
        DECODE * 2
    # turn 1 lands where nothing is cached: P/D again; turn 2 goes back to
    # the first server, which holds turn 0's prefix only
    assert picks[1]["cache_hit_ratio"] == 0.0 and picks[1]["decision"] == "pd"
    assert 0.0 < picks[2]["cache_hit_ratio"] < 0.9
    assert all("llm_d.tenant" not in traces(spans, r)[0]["attrs"]
               for r in rids)


def test_streaming_passes_through_and_decode_only_without_prefill(env):
    rec, proxy, start = env
    g = start()  # no prefill servers: every request is decode-only
    body = dict(conversation(1)[0], stream=True)
    status, hdrs, data = g.post(body, {"x-request-id": "s-1"})
    assert status == 200
    assert hdrs["Content-Type"].startswith("text/event-stream")
    assert data.count(b"data: ") == 4 and data.endswith(b"[DONE]\n\n")
    spans = rec.wait_for(has_rids(["s-1"]))
    gw, kids = traces(spans, "s-1")
    p = kids["llm_d.epp.profile_handler.pick"]["attrs"]
    assert (p["decision"], p["reason"]) == ("decode-only",
                                            "no_prefill_servers")
    assert gw["attrs"]["gen_ai.request.stream"] is True
    assert "x-prefiller-host-port" not in proxy.calls[0]["headers"]


def test_completions_and_generated_request_id(env):
    rec, proxy, start = env
    g = start("--prefill", PREFILL[0])
    status, hdrs, _ = g.post({"model": MODEL, "prompt": "x" * 300},
                             path="/v1/completions")
    assert status == 200
    rid = hdrs["x-request-id"]
    assert rid.startswith("gw-")
    assert proxy.calls[0]["path"] == "/v1/completions"
    assert proxy.calls[0]["headers"]["x-request-id"] == rid
    spans = rec.wait_for(has_rids([rid]))
    gw, kids = traces(spans, rid)
    assert gw["attrs"]["gen_ai.operation.name"] == "text_completion"
    assert kids["llm_d.epp.profile_handler.pick"]["attrs"][
        "user_input_bytes"] == 300


@pytest.mark.parametrize("body,headers,msg", [
    (b"{not json", {}, "invalid body"),
    ({"model": MODEL}, {}, "messages must be"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
     {"x-turn-index": "-1"}, "x-turn-index must be"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
     {"x-conversation-id": "a b"}, "x-conversation-id must be"),
])
def test_bad_requests_get_400_and_a_span(env, body, headers, msg):
    rec, proxy, start = env
    g = start()
    h = dict(headers, **{"x-request-id": "bad-1"})
    status, _, data = g.post(body, h)
    assert status == 400
    err = json.loads(data)["error"]
    assert msg in err["message"] and err["type"] == "invalid_request"
    assert proxy.calls == []
    spans = rec.wait_for(lambda ss: any(
        s["name"] == "gateway.request" for s in ss))
    gw = [s for s in spans if s["name"] == "gateway.request"][0]
    assert gw["attrs"]["http.response.status_code"] == 400
    assert gw["attrs"]["error.type"] == "invalid_request"
    assert not any(s["name"].startswith("llm_d.epp.") for s in spans)


def test_proxy_errors_mark_the_span(env):
    rec, proxy, start = env
    g = start()
    proxy.status = 503
    body = conversation(1)[0]
    status, _, _ = g.post(body, {"x-request-id": "e-503"})
    assert status == 503
    dead = "http://127.0.0.1:%d" % free_port()
    g2 = start(proxy_url=dead)
    status, _, data = g2.post(body, {"x-request-id": "e-down"})
    assert status == 502
    assert json.loads(data)["error"]["type"] == "proxy_unavailable"
    spans = rec.wait_for(has_rids(["e-503", "e-down"]))
    a, _ = traces(spans, "e-503")
    b, _ = traces(spans, "e-down")
    assert a["status_code"] == 2 and a["attrs"]["error.type"] == "503"
    assert b["status_code"] == 2
    assert b["attrs"]["error.type"] == "proxy_unavailable"
    assert b["attrs"]["http.response.status_code"] == 502


def test_health_and_bad_command_lines(env):
    rec, proxy, start = env
    g = start("--prefill", PREFILL[0])
    g.post(conversation(1)[0])
    with urllib.request.urlopen(g.url + "/health", timeout=5) as r:
        h = json.loads(r.read())
    assert h["status"] == "ok" and h["routing"] == "prefix-aware"
    assert sum(v["cached_blocks"] for v in h["decode"].values()) > 0
    for argv, msg in [
        (["--decode", "nohost"], "is not host:port"),
        (["--decode", "a:1", "--routing", "random"], "invalid choice"),
        (["--decode", "a:1", "--pd-threshold", "-5"], "out of range"),
        (["--decode", "a:1,a:1"], "listed twice"),
    ]:
        r = subprocess.run([sys.executable, GATEWAY, "--proxy-url",
                            "http://127.0.0.1:1"] + argv,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
