"""OTLP/gRPC export, the way a user turns it on: pd_demo (the C example)
with OTEL_EXPORTER_OTLP_PROTOCOL=grpc.

- Through the real Collector's gRPC receiver, for each compression
  (none, gzip, zstd), into the sink, checked like the HTTP path.
- Against a scripted gRPC server (grpcio, in this process) that answers
  each status: the OTLP retry rules, RetryInfo, partial success, the
  deadline, and the spool.
- http/json through the Collector's HTTP receiver, and an unsupported
  protocol failing the open.

Every wait is bounded; every process is stopped at teardown.
"""

import json
import os
import random
import re
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)

from conftest import (COLLECTOR_CONFIG, START_TIMEOUT, free_port, post,
                      stop_process, tail)
from test_collector import (PD_DEMO, check_pd_demo_output, need_pd_demo,
                            random_traceparent)

PD_DEMO_TIMEOUT = 120
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
STATS = re.compile(r"spans: (\d+) started, (\d+) exported, (\d+) dropped, (\d+) failed; (\d+) HTTP requests")


def demo_env(endpoint, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PDTRACE_"))}
    env.update({
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_demo(env, requests=2, seed=7, mode="sequential", tp=None, check_rc=True):
    """Runs pd_demo; returns (returncode, stdout lines, stderr, stats dict)."""
    need_pd_demo()
    args = [PD_DEMO, "--requests", str(requests), "--mode", mode, "--seed", str(seed)]
    if tp is not None:
        args += ["--traceparent", tp]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = proc.communicate(timeout=PD_DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail("pd_demo timed out after %ds\n%s" % (PD_DEMO_TIMEOUT, err[-4000:]))
    if check_rc:
        assert proc.returncode == 0, "pd_demo exited %d\n%s" % (proc.returncode, err[-4000:])
    m = STATS.search(err)
    stats = None
    if m:
        stats = dict(zip(["started", "exported", "dropped", "failed", "requests"], map(int, m.groups())))
    return proc, [l for l in out.splitlines() if l.strip()], err, stats


# --------------------------------------------------------------------------
# The real Collector with its gRPC receiver


GRPC_COLLECTOR_CONFIG = COLLECTOR_CONFIG.replace(
    "      http:\n        endpoint: 127.0.0.1:{port}\n",
    "      http:\n        endpoint: 127.0.0.1:{port}\n"
    "      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n")


class GrpcCollector:
    def __init__(self, binary, sink, tmp_path):
        assert GRPC_COLLECTOR_CONFIG != COLLECTOR_CONFIG, "collector config changed shape"
        self.config_path = str(tmp_path / "otelcol-grpc.yaml")
        self.log_path = str(tmp_path / "otelcol-grpc.log")
        self._log = open(self.log_path, "ab")
        self.proc = None
        for _ in range(3):  # a free port may be taken before the collector binds it
            self.port, self.grpc_port = free_port(), free_port()
            with open(self.config_path, "w") as f:
                f.write(GRPC_COLLECTOR_CONFIG.format(port=self.port, grpc_port=self.grpc_port, sink_url=sink.url))
            self.proc = subprocess.Popen([binary, "--config=file:" + self.config_path],
                                         stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.url = "http://127.0.0.1:%d" % self.port
            self.grpc_url = "http://127.0.0.1:%d" % self.grpc_port
            if self._wait_ready():
                return
            stop_process(self.proc)
        self._log.close()
        raise AssertionError("collector did not become ready:\n" + tail(self.log_path))

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _ = post(self.url + "/v1/traces", b"", timeout=2.0)
                if status == 200:
                    channel = grpc.insecure_channel("127.0.0.1:%d" % self.grpc_port)
                    try:
                        grpc.channel_ready_future(channel).result(timeout=5)
                        return True
                    except grpc.FutureTimeoutError:
                        pass
                    finally:
                        channel.close()
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self):
        stop_process(self.proc, grace=10.0)
        self._log.close()


@pytest.fixture
def grpc_collector(collector_binary, sink, tmp_path):
    c = GrpcCollector(collector_binary, sink, tmp_path)
    yield c
    c.stop()


@pytest.mark.parametrize("mode", ["sequential", "concurrent"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_pd_demo_grpc_through_collector(grpc_collector, sink, compression, mode):
    seed = 300 + 10 * ["none", "gzip", "zstd"].index(compression) + ["sequential", "concurrent"].index(mode)
    tp = random_traceparent(random.Random(seed))
    env = demo_env(grpc_collector.grpc_url, OTEL_EXPORTER_OTLP_COMPRESSION=compression)
    proc, lines, err, stats = run_demo(env, requests=6, seed=seed, mode=mode, tp=tp)
    printed = [json.loads(l) for l in lines]
    check_pd_demo_output(sink, proc.pid, printed, tp, mode)
    assert stats is not None and stats["failed"] == 0 and stats["exported"] == stats["started"], err
    assert stats["requests"] >= 1


def test_pd_demo_http_json_through_collector(grpc_collector, sink):
    seed = 377
    tp = random_traceparent(random.Random(seed))
    env = demo_env(grpc_collector.url, OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
                   OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    proc, lines, err, stats = run_demo(env, requests=4, seed=seed, tp=tp)
    check_pd_demo_output(sink, proc.pid, [json.loads(l) for l in lines], tp, "sequential")
    assert stats["failed"] == 0, err


def test_grpc_wrong_port_is_not_http(grpc_collector):
    """gRPC to the HTTP port fails (the HTTP receiver does not speak gRPC),
    and plain OTLP/HTTP to the gRPC port fails: the protocol is really
    switched, not ignored."""
    env = demo_env(grpc_collector.url, OTEL_BSP_EXPORT_TIMEOUT="1500", OTEL_EXPORTER_OTLP_TIMEOUT="500")
    _, _, err, stats = run_demo(env, requests=1, check_rc=False)
    assert stats is not None and stats["exported"] == 0, err
    env = demo_env(grpc_collector.grpc_url, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_BSP_EXPORT_TIMEOUT="1500", OTEL_EXPORTER_OTLP_TIMEOUT="500")
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = grpc_collector.grpc_url + "/v1/traces"
    _, _, err, stats = run_demo(env, requests=1, check_rc=False)
    assert stats is not None and stats["exported"] == 0, err


@pytest.mark.parametrize("value", ["grpc+proto", "http", "HTTP/PROTOBUFS", "json"])
def test_unsupported_protocol_fails_open(value):
    env = demo_env("http://127.0.0.1:9", OTEL_EXPORTER_OTLP_PROTOCOL=value)
    proc, lines, err, _ = run_demo(env, requests=1, check_rc=False)
    assert proc.returncode != 0, "pd_demo accepted OTEL_EXPORTER_OTLP_PROTOCOL=%r" % value
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in err and "pdt_tracer_open" in err, err
    assert lines == []


# --------------------------------------------------------------------------
# A scripted gRPC server


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def retry_info_status(code, message, delay_s):
    """google.rpc.Status carrying a google.rpc.RetryInfo, encoded by hand."""
    secs = int(delay_s)
    nanos = int(round((delay_s - secs) * 1e9))
    duration = varint(1 << 3) + varint(secs) + varint(2 << 3) + varint(nanos)
    retry_info = field_bytes(1, duration)
    any_ = field_bytes(1, b"type.googleapis.com/google.rpc.RetryInfo") + field_bytes(2, retry_info)
    return varint(1 << 3) + varint(code) + field_bytes(2, message.encode()) + field_bytes(3, any_)


class ScriptedServer:
    """Answers Export calls from a script: each entry is ("ok", rejected),
    ("status", grpc.StatusCode, message), ("retry", StatusCode, delay_s),
    or ("sleep", seconds) before answering OK. The last entry repeats."""

    def __init__(self, script, tls=None):
        self.script = list(script)
        self.calls = []  # (monotonic time, spans, time_remaining, metadata)
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._export,
                request_deserializer=ExportTraceServiceRequest.FromString,
                response_serializer=ExportTraceServiceResponse.SerializeToString),
        })
        self.server.add_generic_rpc_handlers((handler,))
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
            self.url = "http://127.0.0.1:%d" % self.port
        else:
            key, cert = tls
            creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
            self.url = "https://127.0.0.1:%d" % self.port
        self.server.start()

    def _export(self, request, context):
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            i = len(self.calls)
            self.calls.append((time.monotonic(), n, context.time_remaining(),
                               dict(context.invocation_metadata())))
            step = self.script[min(i, len(self.script) - 1)]
        kind = step[0]
        if kind == "sleep":
            time.sleep(step[1])
            return ExportTraceServiceResponse()
        if kind == "ok":
            resp = ExportTraceServiceResponse()
            if step[1]:
                resp.partial_success.rejected_spans = step[1]
                resp.partial_success.error_message = "dropped %d spans" % step[1]
            return resp
        if kind == "retry":
            code = step[1]
            context.set_trailing_metadata((
                ("grpc-status-details-bin", retry_info_status(code.value[0], "slow down", step[2])),))
            context.abort(code, "slow down")
        context.abort(step[1], step[2])

    def spans(self):
        with self.lock:
            return sum(c[1] for c in self.calls)

    def stop(self):
        self.server.stop(grace=1).wait(5)


@pytest.fixture
def scripted():
    servers = []

    def make(script, tls=None):
        s = ScriptedServer(script, tls)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


RETRYABLE = ["CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"]
NOT_RETRYABLE = ["UNKNOWN", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
                 "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "UNIMPLEMENTED", "INTERNAL",
                 "UNAUTHENTICATED"]


@pytest.mark.parametrize("name", RETRYABLE)
def test_retryable_status_is_retried(scripted, name):
    code = getattr(grpc.StatusCode, name)
    srv = scripted([("status", code, "try again"), ("status", code, "try again"), ("ok", 0)])
    _, _, err, stats = run_demo(demo_env(srv.url))
    assert len(srv.calls) == 3, "%s: %d calls\n%s" % (name, len(srv.calls), err)
    assert stats["exported"] == 6 and stats["failed"] == 0, err
    # The backoff separates the attempts (100 ms doubling, jitter >= 50%).
    assert srv.calls[1][0] - srv.calls[0][0] >= 0.045
    assert srv.calls[2][0] - srv.calls[1][0] >= 0.095


@pytest.mark.parametrize("name", NOT_RETRYABLE)
def test_other_status_is_not_retried(scripted, name):
    code = getattr(grpc.StatusCode, name)
    srv = scripted([("status", code, "no %s" % name), ("ok", 0)])
    _, _, err, stats = run_demo(demo_env(srv.url))
    assert len(srv.calls) == 1, "%s retried: %d calls\n%s" % (name, len(srv.calls), err)
    assert stats["exported"] == 0 and stats["failed"] == 6, err


def test_resource_exhausted_with_retry_info_waits(scripted):
    srv = scripted([("retry", grpc.StatusCode.RESOURCE_EXHAUSTED, 0.7), ("ok", 0)])
    _, _, err, stats = run_demo(demo_env(srv.url))
    assert len(srv.calls) == 2, err
    gap = srv.calls[1][0] - srv.calls[0][0]
    assert gap >= 0.65, "retried after %.3fs, RetryInfo said 0.7s" % gap
    assert stats["exported"] == 6 and stats["failed"] == 0, err


def test_retry_info_beyond_deadline_gives_up(scripted):
    srv = scripted([("retry", grpc.StatusCode.UNAVAILABLE, 20.0), ("ok", 0)])
    t0 = time.monotonic()
    _, _, err, stats = run_demo(demo_env(srv.url, OTEL_BSP_EXPORT_TIMEOUT="2000"))
    assert len(srv.calls) == 1, err
    assert stats["failed"] == 6, err
    assert time.monotonic() - t0 < 15, "waited for a retry that could not fit the deadline"


def test_partial_success(scripted):
    srv = scripted([("ok", 2)])
    _, _, err, stats = run_demo(demo_env(srv.url))
    assert len(srv.calls) == 1 and srv.spans() == 6
    assert stats["exported"] == 4 and stats["failed"] == 0, err


def test_deadline_sent_and_slow_server_retried(scripted):
    """grpc-timeout carries the attempt's timeout; an attempt that runs
    past it is cut and retried, within the export deadline."""
    srv = scripted([("sleep", 2.0), ("ok", 0)])
    _, _, err, stats = run_demo(demo_env(srv.url, OTEL_EXPORTER_OTLP_TIMEOUT="700",
                                         OTEL_BSP_EXPORT_TIMEOUT="10000"))
    assert len(srv.calls) == 2, err
    remaining = srv.calls[0][2]
    assert remaining is not None and 0.1 < remaining <= 0.71, "deadline seen by the server: %r" % remaining
    assert srv.calls[1][0] - srv.calls[0][0] < 1.9, "the slow attempt was not cut at its timeout"
    assert stats["exported"] == 6, err
    md = srv.calls[0][3]
    assert "libpdtrace/" in md.get("user-agent", ""), md


def test_headers_reach_the_server(scripted):
    srv = scripted([("ok", 0)])
    _, _, err, stats = run_demo(demo_env(srv.url, OTEL_EXPORTER_OTLP_HEADERS="x-tenant=blue,authorization=Bearer%20s3cret"))
    assert stats["exported"] == 6, err
    md = srv.calls[0][3]
    assert md.get("x-tenant") == "blue" and md.get("authorization") == "Bearer s3cret", md
    assert "s3cret" not in err


def test_failures_go_to_the_spool_and_replay(scripted, tmp_path):
    """An export that fails with a retryable status is spooled, and a
    later run replays it once the server answers."""
    spool = str(tmp_path / "spool")
    down = scripted([("status", grpc.StatusCode.UNAVAILABLE, "down")])
    _, _, err, stats = run_demo(demo_env(down.url, PDTRACE_SPOOL_DIR=spool,
                                         OTEL_BSP_EXPORT_TIMEOUT="800"), check_rc=False)
    assert stats["exported"] == 0, err
    assert len(down.calls) >= 1
    assert any(files for _, _, files in os.walk(spool)), "nothing spooled:\n" + err
    # A later process replays the spool at start, beside its fresh
    # batches; nothing is replayed once its tracer closes (docs/spool.md),
    # and pd_demo closes within milliseconds, so on a loaded machine one
    # run may end before its replay: allow a few runs. Each frame is
    # replayed exactly once.
    up = scripted([("ok", 0)])
    runs = 0
    for runs in range(1, 6):
        _, _, err, stats = run_demo(demo_env(up.url, PDTRACE_SPOOL_DIR=spool))
        want = 6 * runs + 6
        deadline = time.monotonic() + 2
        while up.spans() < want and time.monotonic() < deadline:
            time.sleep(0.05)
        if up.spans() >= want:
            break
    assert up.spans() == 6 * runs + 6, \
        "replayed + new spans after %d runs: %d\n%s" % (runs, up.spans(), err)
    left = [f for _, _, files in os.walk(spool) for f in files
            if not f.startswith(".")]
    assert not left, "frames left in the spool: %s" % left


def self_signed(tmp_path):
    key, cert = str(tmp_path / "key.pem"), str(tmp_path / "cert.pem")
    res = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                          "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                          "-addext", "subjectAltName=IP:127.0.0.1"],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        pytest.skip("openssl cannot make a test certificate: %s" % res.stderr[-300:])
    return key, cert


def test_tls_with_alpn(scripted, tmp_path):
    """https:// is TLS with HTTP/2 chosen by ALPN (a gRPC server accepts
    nothing else), verified against the configured CA; without that CA
    the export fails and is not retried."""
    key, cert = self_signed(tmp_path)
    srv = scripted([("ok", 0)], tls=(key, cert))
    _, _, err, stats = run_demo(demo_env(srv.url, OTEL_EXPORTER_OTLP_CERTIFICATE=cert,
                                         OTEL_EXPORTER_OTLP_COMPRESSION="gzip"))
    assert stats["exported"] == 6 and stats["failed"] == 0, err
    assert srv.spans() == 6
    calls = len(srv.calls)
    _, _, err, stats = run_demo(demo_env(srv.url), check_rc=False)
    assert stats["exported"] == 0 and stats["failed"] == 6, err
    assert len(srv.calls) == calls, "an unverified server got the spans"
