"""Fixtures for the integration tests: the test collector binary, the
loopback sink and a running collector forwarding to it.

Every process started here is stopped at teardown; every wait is bounded.
All traffic stays on 127.0.0.1.
"""

import os
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import otlp_assert  # noqa: E402

BUILD_SH = os.path.join(ROOT, "tests", "collector", "build.sh")
SINK_PY = os.path.join(HERE, "sink.py")
BUILD_TIMEOUT = int(os.environ.get("PDTRACE_OTELCOL_BUILD_TIMEOUT", "900"))
START_TIMEOUT = 30.0


def stop_process(proc, grace=5.0):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_line(proc, timeout):
    """First stdout line of proc, waiting at most timeout seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            chunk = os.read(fd, 256)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode()
        elif proc.poll() is not None:
            break
    return None


def tail(path, n=60):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def post(url, body, headers=None, timeout=10.0):
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/x-protobuf")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(4 << 20)
    except urllib.error.HTTPError as e:
        return e.code, e.read(4 << 20)


# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def collector_binary():
    """Path of the test collector, built (or reused from cache) by build.sh.
    A failed build fails the tests that need it."""
    try:
        res = subprocess.run(["bash", BUILD_SH], capture_output=True, text=True, timeout=BUILD_TIMEOUT + 60)
    except subprocess.TimeoutExpired:
        pytest.fail("tests/collector/build.sh timed out after %ds" % (BUILD_TIMEOUT + 60))
    if res.returncode != 0:
        pytest.fail("tests/collector/build.sh failed (%d):\n%s" % (res.returncode, res.stderr[-4000:]))
    path = res.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), "build.sh printed %r, not an executable" % path
    return path


class SinkProc:
    def __init__(self, tmp_path, name="sink"):
        self.out = str(tmp_path / (name + "-spans.jsonl"))
        self.requests_log = str(tmp_path / (name + "-requests.jsonl"))
        self.raw_dir = str(tmp_path / (name + "-raw"))
        self.stderr_path = str(tmp_path / (name + ".stderr"))
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, SINK_PY, "--out", self.out, "--requests-log", self.requests_log,
             "--raw-dir", self.raw_dir],
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL)
        line = read_line(self.proc, START_TIMEOUT)
        if not line or not line.strip().isdigit():
            self.stop()
            raise AssertionError("sink did not start: %r\n%s" % (line, tail(self.stderr_path)))
        self.port = int(line)
        self.url = "http://127.0.0.1:%d" % self.port

    def spans(self):
        return otlp_assert.load_spans(self.out)

    def requests(self):
        return otlp_assert.load_spans(self.requests_log)

    def wait_for(self, predicate, timeout=20.0, what="spans"):
        """Polls the sink output until predicate(spans) is true."""
        deadline = time.monotonic() + timeout
        spans = []
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("timed out after %.0fs waiting for %s; sink has %d span(s), %d request(s)\n%s" % (
            timeout, what, len(spans), len(self.requests()), tail(self.stderr_path)))

    def stop(self):
        stop_process(self.proc)
        self._err.close()


@pytest.fixture
def sink(tmp_path):
    s = SinkProc(tmp_path)
    yield s
    s.stop()


COLLECTOR_CONFIG = """\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}

processors:
  batch:
    timeout: 50ms

exporters:
  otlphttp:
    endpoint: {sink_url}
    compression: none
    encoding: proto
    timeout: 5s
    # No queue: the receiver answers only after the sink has the spans, so a
    # program that flushed before exiting has delivered everything.
    sending_queue:
      enabled: false
    retry_on_failure:
      enabled: true
      initial_interval: 50ms
      max_interval: 500ms
      max_elapsed_time: 10s
  debug:
    verbosity: basic

service:
  telemetry:
    logs:
      level: info
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [otlphttp, debug]
"""


class CollectorProc:
    def __init__(self, binary, sink, tmp_path):
        self.config_path = str(tmp_path / "otelcol.yaml")
        self.log_path = str(tmp_path / "otelcol.log")
        self.proc = None
        self._log = open(self.log_path, "ab")
        last = ""
        for _ in range(3):  # the free port may be taken before the collector binds it
            self.port = free_port()
            with open(self.config_path, "w") as f:
                f.write(COLLECTOR_CONFIG.format(port=self.port, sink_url=sink.url))
            self.proc = subprocess.Popen([binary, "--config=file:" + self.config_path],
                                         stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.url = "http://127.0.0.1:%d" % self.port
            if self._wait_ready():
                return
            last = tail(self.log_path)
            stop_process(self.proc)
        self._log.close()
        raise AssertionError("collector did not become ready:\n" + last)

    def _wait_ready(self):
        # The receiver starts after the exporters, so an accepted (empty)
        # export means the whole pipeline is up.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _ = post(self.url + "/v1/traces", b"", timeout=2.0)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def log(self):
        return tail(self.log_path)

    def stop(self):
        stop_process(self.proc, grace=10.0)
        self._log.close()


@pytest.fixture
def collector(collector_binary, sink, tmp_path):
    c = CollectorProc(collector_binary, sink, tmp_path)
    yield c
    c.stop()
