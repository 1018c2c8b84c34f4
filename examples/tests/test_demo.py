"""The demo (run_demo.py) end to end, short: its report from the spans,
with the spans also sent to an OTLP/HTTP endpoint (the gateway's and the
endpoint picker's included), with sglang, and without the gateway."""
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest

from e2e_stack import EXAMPLES

sys.path.insert(0, os.path.join(EXAMPLES, "demo"))
import otlp_tee  # noqa: E402

RUN_DEMO = os.path.join(EXAMPLES, "demo", "run_demo.py")


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP endpoint that keeps what it is sent."""

    def __init__(self):
        self.got = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.got.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), H)


def run_demo(tmp_path, args, env_extra=None):
    env = dict(os.environ)
    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT",
              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
              "OTEL_EXPORTER_OTLP_HEADERS"):
        env.pop(k, None)
    env.update(env_extra or {})
    out = tmp_path / "demo.json"
    res = subprocess.run(
        [sys.executable, RUN_DEMO, "--seconds", "6", "--time-scale", "0.25",
         "--workdir", str(tmp_path / "work"), "--json", str(out)] + args,
        capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    with open(out) as f:
        return json.load(f), res.stdout


def check_report(a):
    assert a["total_pd_requests"] > 20
    assert a["failed_requests"] == 0
    assert a["first_token_observed"] == a["total_pd_requests"]
    j = a["joins"]
    assert j["decode_joined"] == j["decode_spans"] == a["total_pd_requests"]
    f = a["fidelity"]
    assert f["joined"] == f["client_requests"] >= 3
    assert f["median_abs_diff_ms"] < 10.0, f
    w = a["non_streamed"]
    assert w["joined"] > 15
    # True TTFT of the non-streamed patterns is the first token, not the
    # whole response.
    assert w["true_ttft_p50_ms"] < w["client_total_p50_ms"] / 2, w


def test_demo_sends_spans_to_the_users_endpoint(tmp_path):
    recv = Receiver()
    th = threading.Thread(target=recv.serve_forever, daemon=True)
    th.start()
    try:
        a, stdout = run_demo(tmp_path, [], {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:%d"
            % recv.server_port,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-demo-key=s%3Dcret"})
    finally:
        recv.shutdown()
        recv.server_close()
    check_report(a)
    fw = a["forwarded"]
    assert fw["received"] == fw["forwarded"] == len(recv.got) > 0
    assert fw["failed"] == 0
    assert "OTLP backend http://127.0.0.1:%d/v1/traces" % \
        recv.server_port in stdout
    names = {}
    for path, headers, body in recv.got:
        assert path == "/v1/traces"
        assert headers["Content-Type"] == "application/x-protobuf"
        assert headers["x-demo-key"] == "s=cret"
        for rs in otlp_tee.decode_request(body)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    names[s["name"]] = names.get(s["name"], 0) + 1
    assert fw["spans"] == sum(names.values())
    assert names["llm_d.pd_proxy.request"] == a["total_pd_requests"]
    # One vLLM span under each leg: two for P/D, one for decode-only.
    assert names["llm_request"] == names["llm_d.pd_proxy.decode"] + \
        names.get("llm_d.pd_proxy.prefill", 0)
    assert names["llm_d.pd_proxy.decode"] == a["total_pd_requests"]
    # The gateway's and the endpoint picker's spans reach the backend too.
    for n in ("gateway.request", "llm_d.epp.scorer.prefix_cache",
              "llm_d.epp.profile_handler.pick"):
        assert names[n] == a["total_pd_requests"], n
    tc = a["trace_check"]
    assert tc["complete"] == tc["client_requests"] == a["total_pd_requests"]


def test_demo_with_sglang_reports_no_failures(tmp_path):
    a, _ = run_demo(tmp_path, ["--connector", "sglang"])
    check_report(a)
    assert a["failed_legs"] == 0


def test_demo_without_gateway_is_all_pd(tmp_path):
    a, out = run_demo(tmp_path, ["--no-gateway"])
    check_report(a)
    assert a["gateway"]["requests"] == 0
    assert list(a["decisions"]) == ["pd|-"]
    assert "Gateway:" not in out


@pytest.mark.parametrize("value,want", [
    (b"\x08\x96\x01", [(1, 0, 150)]),
    (b"\x12\x03abc", [(2, 2, b"abc")]),
    (b"\x39" + (7).to_bytes(8, "little"), [(7, 1, 7)]),
])
def test_tee_wire_fields(value, want):
    assert list(otlp_tee.fields(value)) == want


@pytest.mark.parametrize("bad", [b"\x08", b"\x12\x05ab", b"\x0b"])
def test_tee_rejects_truncated_protobuf(bad):
    with pytest.raises(ValueError):
        list(otlp_tee.fields(bad))
