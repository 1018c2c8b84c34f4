"""pd_proxy behaviour: the benchmarking guide's command line, true TTFT for
non-streamed requests (streamed decode, assembled body), pass-through,
token counts, sglang statuses, decode-only, hostile clients and the load
generator's command line. Every process is stopped by the fixtures and
every wait is bounded."""
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

import dashboard
from e2e_stack import EXAMPLES, LOADGEN, PROXY, free_port

sys.path.insert(0, os.path.join(EXAMPLES, "python", "pd_proxy"))
sys.path.insert(0, os.path.join(EXAMPLES, "loadgen"))
import loadgen  # noqa: E402
import pd_proxy  # noqa: E402

P = "llm_d.pd_proxy."
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def rid():
    return "t-" + uuid.uuid4().hex


def chat_body(max_tokens=6, stream=False, n_chars=400, **kw):
    b = {"model": MODEL, "max_tokens": max_tokens, "stream": stream,
         "messages": [{"role": "user", "content": uuid.uuid4().hex + " " +
                       "lorem ipsum " * (n_chars // 12)}]}
    b.update(kw)
    return b


def completion_body(max_tokens=6, stream=False, **kw):
    b = {"model": MODEL, "max_tokens": max_tokens, "stream": stream,
         "prompt": uuid.uuid4().hex + " tell me about prefill " * 20}
    b.update(kw)
    return b


def root_of(spans, request_id):
    roots = [s for s in spans if s["name"] == P + "request" and
             s["attrs"].get(P + "request_id") == request_id]
    assert len(roots) == 1, request_id
    tid = roots[0]["trace_id"]
    legs = {s["name"]: s for s in spans if s["trace_id"] == tid and
            s["name"] in (P + "prefill", P + "decode")}
    return roots[0], legs.get(P + "prefill"), legs.get(P + "decode")


def direct(port, path, body, timeout=30):
    """POST straight to a simulator; returns the parsed JSON answer."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, json.dumps(body),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200
        return json.loads(r.read())
    finally:
        c.close()


def without_ids(doc):
    d = dict(doc)
    d.pop("id", None)
    d.pop("created", None)
    return d


# -- the guide's command line --------------------------------------------------

GUIDE_ARGV = ["--port", "8000",
              "--prefill-url", "http://localhost:8100/v1/completions",
              "--decode-url", "http://localhost:8200/v1/completions"]


def test_guide_command_line_parses_to_server_bases():
    args = pd_proxy.parse_args(GUIDE_ARGV)
    proxy = pd_proxy.Proxy(args)
    assert proxy.prefill_bases == ["http://localhost:8100"]
    assert proxy.decode_bases == ["http://localhost:8200"]
    text = pd_proxy.describe(args)
    assert "http://localhost:8200/v1/chat/completions" in text
    for url, base in (("http://h:1/v1/chat/completions", "http://h:1"),
                      ("http://h:1/v1/", "http://h:1"),
                      ("http://h:1", "http://h:1"),
                      ("https://h/api/v1/completions", "https://h/api")):
        assert pd_proxy.upstream_base(url) == base
    for bad in ("localhost:8100", "ftp://h/v1", "http://h:1/v1?x=1",
                "http://h:99999999"):
        with pytest.raises(ValueError):
            pd_proxy.upstream_base(bad)


def test_guide_command_line_against_simulators(make_stack):
    """The guide's URL forms (endpoint URLs) with both routes, streamed
    and not; one access-log line per request."""
    s = make_stack(url_suffix="/v1/completions")
    ids = [rid() for _ in range(4)]
    for i, (path, body) in enumerate((
            ("/v1/completions", completion_body()),
            ("/v1/chat/completions", chat_body()),
            ("/v1/completions", completion_body(stream=True)),
            ("/v1/chat/completions", chat_body(stream=True)))):
        st, _, data, _ = s.post(path, body, {"x-request-id": ids[i]})
        assert st == 200, data
    s.stop()
    log = s.log("pd_proxy")
    lines = [ln for ln in log.splitlines() if ln.startswith("pd_proxy: POST")]
    assert len(lines) == 4, log
    for ln, request_id in zip(lines, ids):
        assert " 200 ttft_ms=" in ln and "total_ms=" in ln
        assert request_id in ln
        ttft = float(ln.split("ttft_ms=")[1].split()[0])
        total = float(ln.split("total_ms=")[1].split()[0])
        assert 0 < ttft <= total
    spans = s.spans()
    for request_id in ids:
        root, pre, dec = root_of(spans, request_id)
        assert pre is not None and dec is not None
        assert root["attrs"]["http.response.status_code"] == 200


def test_no_access_log_flag(make_stack):
    s = make_stack(proxy_args=["--no-access-log"])
    assert s.post("/v1/chat/completions", chat_body())[0] == 200
    s.stop()
    assert "pd_proxy: POST" not in s.log("pd_proxy")


def test_upstream_404_is_said_at_once(make_stack):
    s = make_stack(url_suffix="/wrong/v1/completions")
    st, _, data, _ = s.post("/v1/chat/completions", chat_body())
    assert st == 404
    err = json.loads(data)["error"]
    url = "http://127.0.0.1:%d/wrong/v1/chat/completions" % \
        s.prefill_ports[0]
    assert err["type"] == "upstream_not_found" and url in err["message"]
    deadline = time.monotonic() + 5
    while url not in s.log("pd_proxy") and time.monotonic() < deadline:
        time.sleep(0.05)
    log = s.log("pd_proxy")
    assert "prefill upstream answered 404 Not Found for POST " + url in log
    assert "--prefill-url" in log


# -- true TTFT and the assembled body --------------------------------------


@pytest.mark.parametrize("path,make", [
    ("/v1/chat/completions", chat_body),
    ("/v1/completions", completion_body)])
def test_assembled_body_equals_simulator_answer(make_stack, path, make):
    """Decode-only (no prefiller): the proxy streams from decode and
    assembles; the simulator answers the same request unstreamed; the two
    bodies match field by field but for created and the id."""
    s = make_stack(prefill_in_proxy=False, prefill_up=False)
    body = make(max_tokens=7)
    request_id = rid()
    st, headers, data, _ = s.post(path, body, {"x-request-id": request_id})
    assert st == 200
    assert headers.get("content-type", "").startswith("application/json")
    got = json.loads(data)
    want = direct(s.decode_port, path, body)
    assert without_ids(got) == without_ids(want)
    assert got["id"].startswith("chatcmpl-" if "chat" in path else "cmpl-")
    s.stop()
    root, pre, dec = root_of(s.spans(), request_id)
    a = root["attrs"]
    assert pre is None
    assert a[P + "disaggregation_enabled"] is False
    assert a[P + "reason"] == "no prefiller"
    assert a["gen_ai.request.stream"] is False
    assert a[P + "decode.streaming"] is True
    assert a[P + "assembled"] is True
    assert a[P + "first_token_observed"] is True
    assert dec["attrs"][P + "first_token_observed"] is True
    assert dec["attrs"][P + "assembled"] is True
    assert a[P + "tpot_ms"] > 0
    assert a[P + "true_ttft_ms"] < a[P + "total_duration_ms"]
    assert a["gen_ai.usage.output_tokens"] == 7
    assert a["gen_ai.usage.input_tokens"] == want["usage"]["prompt_tokens"]
    assert a["gen_ai.usage.cache_read.input_tokens"] == \
        want["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_non_streamed_true_ttft_is_the_first_token(make_stack):
    """A long answer: true TTFT = queue + prefill + KV + decode first token,
    far below the total the client waits for its body."""
    s = make_stack()
    request_id = rid()
    t0 = time.monotonic()
    st, _, data, _ = s.post("/v1/chat/completions",
                            chat_body(max_tokens=60, n_chars=8000),
                            {"x-request-id": request_id})
    client_total = (time.monotonic() - t0) * 1000
    assert st == 200
    assert json.loads(data)["usage"]["completion_tokens"] == 60
    s.stop()
    root, pre, dec = root_of(s.spans(), request_id)
    a = root["attrs"]
    parts = a[P + "queue_ms"] + a[P + "prefill_duration_ms"] + \
        a[P + "kv_transfer_overhead_ms"] + a[P + "decode_ttft_ms"]
    assert a[P + "true_ttft_ms"] == pytest.approx(parts, abs=2e-3)
    # 59 more tokens at >= 11 ms x 0.25 each come after the first one.
    assert a[P + "total_duration_ms"] - a[P + "true_ttft_ms"] > 100
    assert a[P + "true_ttft_ms"] < client_total / 2
    assert a[P + "tpot_ms"] > 0
    assert a["gen_ai.usage.input_tokens"] > 1500


@pytest.mark.parametrize("extra,reason,proxy_args", [
    ({"n": 2}, "n>1", []),
    ({"logprobs": True, "top_logprobs": 2}, "logprobs", []),
    ({}, "disabled", ["--no-assemble"])])
def test_passthrough_is_flagged(make_stack, extra, reason, proxy_args):
    s = make_stack(proxy_args=proxy_args)
    request_id = rid()
    st, _, data, _ = s.post("/v1/chat/completions",
                            chat_body(max_tokens=5, **extra),
                            {"x-request-id": request_id})
    assert st == 200
    assert json.loads(data)["usage"]["completion_tokens"] == 5
    s.stop()
    root, _, dec = root_of(s.spans(), request_id)
    for a in (root["attrs"], dec["attrs"]):
        assert a[P + "assembled"] is False
        assert a[P + "passthrough_reason"] == reason
        assert a[P + "first_token_observed"] is False
        # Not observed: absent, never 0.
        for k in ("true_ttft_ms", "decode_ttft_ms", "tpot_ms"):
            assert P + k not in a, k
    a = root["attrs"]
    assert a[P + "decode.streaming"] is False
    assert a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.usage.input_tokens"] > 50


def test_streamed_request_counts_tokens_without_usage_chunk(make_stack):
    """The proxy asks decode for usage; a client that did not ask for it
    does not get the usage chunk, and the spans get the counts."""
    s = make_stack()
    request_id = rid()
    st, _, data, _ = s.post("/v1/chat/completions",
                            chat_body(max_tokens=4, stream=True),
                            {"x-request-id": request_id})
    assert st == 200
    assert b'"usage"' not in data
    assert data.rstrip().endswith(b"data: [DONE]")
    asked = rid()
    st, _, data, _ = s.post("/v1/chat/completions", chat_body(
        max_tokens=4, stream=True, stream_options={"include_usage": True}),
        {"x-request-id": asked})
    assert st == 200 and b'"usage"' in data
    s.stop()
    spans = s.spans()
    for r in (request_id, asked):
        a = root_of(spans, r)[0]["attrs"]
        assert a["gen_ai.usage.input_tokens"] > 50
        assert a["gen_ai.usage.output_tokens"] == 4
        assert "gen_ai.usage.cache_read.input_tokens" in a
        assert a[P + "first_token_observed"] is True


# -- sglang and statuses ------------------------------------------------------

def test_sglang_streamed_prefill_read_as_stream(make_stack):
    s = make_stack(connector="sglang")
    ids = {}
    for stream in (True, False):
        ids[stream] = rid()
        st, _, data, _ = s.post("/v1/chat/completions",
                                chat_body(max_tokens=5, stream=stream),
                                {"x-request-id": ids[stream]})
        assert st == 200, data
    s.stop()
    spans = s.spans()
    for stream, request_id in ids.items():
        root, pre, dec = root_of(spans, request_id)
        for span in (root, pre, dec):
            assert span["status"] != 2, (span["name"], span["attrs"])
        assert "error.type" not in root["attrs"]
        assert root["attrs"][P + "concurrent_pd"] is True
        assert root["attrs"]["gen_ai.usage.input_tokens"] > 50
    a = dashboard.analyze(spans)
    assert a["failed_requests"] == 0 and a["failed_legs"] == 0


def test_sglang_failed_prefill_leaves_decode_span_alone(make_stack):
    s = make_stack(connector="sglang", prefill_args=["--error-rate", "1"])
    request_id = rid()
    st, _, _, _ = s.post("/v1/chat/completions",
                         chat_body(max_tokens=4, stream=True),
                         {"x-request-id": request_id})
    assert st == 200  # decode answered completely
    s.stop()
    spans = s.spans()
    root, pre, dec = root_of(spans, request_id)
    assert pre["status"] == 2
    assert pre["attrs"]["http.response.status_code"] == 500
    assert dec["status"] != 2, dec["attrs"]
    assert "error.type" not in dec["attrs"]
    assert root["attrs"]["http.response.status_code"] == 200
    assert "error.type" not in root["attrs"]
    assert dashboard.analyze(spans)["failed_requests"] == 0


# -- decode-only and the routing-sidecar header -----------------------------

def test_sidecar_mode_prefiller_header(make_stack):
    s = make_stack(prefill_in_proxy=False)
    with_header, without = rid(), rid()
    hp = "127.0.0.1:%d" % s.prefill_ports[1]
    assert s.post("/v1/chat/completions", chat_body(),
                  {"x-request-id": with_header,
                   "x-prefiller-host-port": hp})[0] == 200
    assert s.post("/v1/chat/completions", chat_body(),
                  {"x-request-id": without})[0] == 200
    st, _, data, _ = s.post("/v1/chat/completions", chat_body(),
                            {"x-prefiller-host-port": "http://x/admin?y"})
    assert st == 400 and b"host:port" in data
    s.stop()
    spans = s.spans()
    root, pre, dec = root_of(spans, with_header)
    assert pre is not None and pre["attrs"]["server.port"] == \
        s.prefill_ports[1]
    assert root["attrs"][P + "disaggregation_enabled"] is True
    root, pre, dec = root_of(spans, without)
    assert pre is None and dec is not None
    assert root["attrs"][P + "disaggregation_enabled"] is False
    assert P + "queue_ms" not in root["attrs"]
    assert root["attrs"][P + "true_ttft_ms"] > 0


def test_allowed_prefillers(make_stack):
    s = make_stack(prefill_in_proxy=False, proxy_args=[
        "--allowed-prefillers", "127.0.0.1:%d" % free_port()])
    st, _, data, _ = s.post("/v1/chat/completions", chat_body(), {
        "x-prefiller-host-port": "127.0.0.1:%d" % s.prefill_ports[0]})
    assert st == 403
    assert json.loads(data)["error"]["type"] == "prefiller_not_allowed"


# -- hostile clients -----------------------------------------------------------

def error_of(data):
    return json.loads(data)["error"]["type"]


def test_non_boolean_stream_is_400(make_stack):
    s = make_stack()
    request_id = rid()
    st, _, data, _ = s.post("/v1/chat/completions",
                            chat_body(stream="false"),
                            {"x-request-id": request_id})
    assert st == 400 and error_of(data) == "invalid_request"
    s.stop()
    a = root_of(s.spans(), request_id)[0]["attrs"]
    assert a["http.response.status_code"] == 400
    assert a["error.type"] == "invalid_request"


class _ListServer(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"[1, 2, 3]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_prefill_json_not_object_is_502(make_stack):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ListServer)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        s = make_stack(prefill_in_proxy=False)
        request_id = rid()
        st, headers, data, _ = s.post(
            "/v1/chat/completions", chat_body(),
            {"x-request-id": request_id,
             "x-prefiller-host-port": "127.0.0.1:%d" % srv.server_port})
        assert st == 502
        assert headers.get("content-type") == "application/json"
        assert error_of(data) == "invalid_response"
        s.stop()
        root, pre, dec = root_of(s.spans(), request_id)
        assert root["attrs"]["error.type"] == "invalid_response"
        assert pre["attrs"]["error.type"] == "invalid_response"
        assert dec is None
    finally:
        srv.shutdown()
        srv.server_close()


def test_body_too_large_is_413(make_stack):
    s = make_stack(proxy_args=["--max-body-bytes", "2000"])
    request_id = rid()
    st, _, data, _ = s.post("/v1/chat/completions",
                            chat_body(n_chars=5000),
                            {"x-request-id": request_id})
    assert st == 413 and error_of(data) == "body_too_large"
    # Chunked, so no Content-Length announces the size.
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    chunked = rid()
    try:
        c.putrequest("POST", "/v1/chat/completions")
        c.putheader("Content-Type", "application/json")
        c.putheader("Transfer-Encoding", "chunked")
        c.putheader("x-request-id", chunked)
        c.endheaders()
        payload = json.dumps(chat_body(n_chars=5000)).encode()
        for i in range(0, len(payload), 500):
            part = payload[i:i + 500]
            c.send(b"%x\r\n%s\r\n" % (len(part), part))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        assert r.status == 413 and error_of(r.read()) == "body_too_large"
    finally:
        c.close()
    s.stop()
    spans = s.spans()
    for r in (request_id, chunked):
        a = root_of(spans, r)[0]["attrs"]
        assert a["http.response.status_code"] == 413
        assert a["error.type"] == "body_too_large"


def test_slow_body_is_408_in_bounded_time(make_stack):
    s = make_stack(proxy_args=["--body-timeout", "0.5"])
    request_id = rid()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    try:
        sock.sendall(("POST /v1/chat/completions HTTP/1.1\r\n"
                      "Host: x\r\nContent-Type: application/json\r\n"
                      "x-request-id: %s\r\nContent-Length: 100\r\n\r\n"
                      '{"model":' % request_id).encode())
        t0 = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            got = sock.recv(4096)
            if not got:
                break
            data += got
        took = time.monotonic() - t0
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"body_timeout" in data
    assert took < 5
    s.stop()
    a = root_of(s.spans(), request_id)[0]["attrs"]
    assert a["http.response.status_code"] == 408
    assert a["error.type"] == "body_timeout"


def test_duplicated_traceparent_starts_a_new_trace(make_stack):
    s = make_stack()
    tp1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tp2 = "00-11111111111111111111111111111111-2222222222222222-01"
    request_id, single = rid(), rid()
    for r, lines in ((request_id, (tp1, tp2)), (single, (tp1,))):
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        try:
            body = json.dumps(chat_body()).encode()
            c.putrequest("POST", "/v1/chat/completions")
            c.putheader("Content-Type", "application/json")
            c.putheader("Content-Length", str(len(body)))
            c.putheader("x-request-id", r)
            for tp in lines:
                c.putheader("traceparent", tp)
            c.endheaders(body)
            resp = c.getresponse()
            resp.read()
            assert resp.status == 200
        finally:
            c.close()
    s.stop()
    spans = s.spans()
    dup = root_of(spans, request_id)[0]
    assert dup["trace_id"] not in (tp1[3:35], tp2[3:35])
    assert dup["parent"] == ""
    one = root_of(spans, single)[0]
    assert one["trace_id"] == tp1[3:35]


# -- the load generator's command line ------------------------------------

def test_loadgen_positional_form():
    a = loadgen.parse_args(["6", "5"])
    assert (a.workers, a.minutes) == (6, 5.0)
    a = loadgen.parse_args(["--workers", "3", "--minutes", "2"])
    assert (a.workers, a.minutes) == (3, 2.0)
    a = loadgen.parse_args([])
    assert (a.workers, a.minutes) == (6, 5.0)
    for bad in (["6", "5", "--workers", "4"], ["0", "1"], ["x"]):
        with pytest.raises(SystemExit):
            loadgen.parse_args(bad)


def test_loadgen_seed_form_and_failures_by_status(make_stack):
    """`loadgen.py WORKERS MINUTES` against the guide-form stack; the
    decode simulator fails a third of its requests."""
    s = make_stack(url_suffix="/v1/completions",
                   decode_args=["--error-rate", "0.3", "--seed", "7"])
    res = subprocess.run(
        [sys.executable, LOADGEN, "6", "0.1", "--endpoint", s.url,
         "--progress-every", "100"], capture_output=True, text=True,
        timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "failures by status code:" in out, out
    line = [ln for ln in out.splitlines() if ln.strip().startswith("502:")]
    assert line and "upstream_error" in line[0], out
    n = int(line[0].split(":")[1].split()[0])
    assert n > 0
    total = int(out.split("requests ")[1].split(",")[0])
    assert n < total
