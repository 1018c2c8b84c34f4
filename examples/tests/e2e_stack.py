"""The end-to-end test stack: simulators, pd_proxy and the load generator
as real processes on loopback, each exporting OTLP JSON lines to its own
file. Every process is killed by stop() and every wait is bounded."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(EXAMPLES, "demo"))
import dashboard  # noqa: E402

SIM = os.path.join(EXAMPLES, "sim", "vllm_sim.py")
PROXY = os.path.join(EXAMPLES, "python", "pd_proxy", "pd_proxy.py")
LOADGEN = os.path.join(EXAMPLES, "loadgen", "loadgen.py")
TIME_SCALE = "0.25"  # simulator delays at a quarter of the 8B model's


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("%s exited with %s" % (url, proc.returncode))
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError("%s not ready after %.0f s" % (url, timeout))


class Stack:
    """Two prefill sims, one decode sim and pd_proxy."""

    def __init__(self, tmp, connector="nixlv2", prefill_args=(),
                 decode_args=(), proxy_args=(), prefill_up=True,
                 decode_up=True, url_suffix="", prefill_in_proxy=True,
                 decode_url=None):
        self.tmp = str(tmp)
        self.procs = []
        self.files = []
        env = dict(os.environ, OTEL_TRACES_EXPORTER="console",
                   OTEL_BSP_SCHEDULE_DELAY="100", PYTHONUNBUFFERED="1")
        for k in ("OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER",
                  "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
            env.pop(k, None)
        self.env = env
        self.prefill_ports = [free_port(), free_port()]
        self.decode_port = free_port()
        self.port = free_port()
        waits = []
        for i, p in enumerate(self.prefill_ports):
            if prefill_up:
                pr = self._start("prefill-%d" % i, [
                    SIM, "--role", "prefill", "--port", str(p),
                    "--time-scale", TIME_SCALE] + list(prefill_args))
                waits.append(("http://127.0.0.1:%d/health" % p, pr))
        if decode_up:
            pr = self._start("decode", [
                SIM, "--role", "decode", "--port", str(self.decode_port),
                "--time-scale", TIME_SCALE] + list(decode_args))
            waits.append(("http://127.0.0.1:%d/health" % self.decode_port,
                          pr))
        # url_suffix: upstreams named by an endpoint URL, as in the
        # benchmarking guide (http://localhost:8100/v1/completions).
        argv = [PROXY, "--port", str(self.port), "--connector", connector,
                "--decode-url", decode_url or "http://127.0.0.1:%d%s" % (
                    self.decode_port, url_suffix)]
        if prefill_in_proxy:
            for p in self.prefill_ports:
                argv += ["--prefill-url",
                         "http://127.0.0.1:%d%s" % (p, url_suffix)]
        pr = self._start("pd_proxy", argv + list(proxy_args))
        waits.append(("http://127.0.0.1:%d/health" % self.port, pr))
        self.proxy = pr
        for url, proc in waits:
            wait_ready(url, proc)
        self.url = "http://127.0.0.1:%d" % self.port

    def _start(self, name, argv):
        path = os.path.join(self.tmp, name + ".jsonl")
        self.files.append(path)
        env = dict(self.env, PDTRACE_CONSOLE_PATH=path)
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen([sys.executable] + argv, env=env, stdout=log,
                             stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        self.procs.append((p, log))
        return p

    def stop(self):
        """SIGTERM (tracers flush and close), then SIGKILL after 10 s."""
        for p, _ in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p, log in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            log.close()
        self.procs = []

    def spans(self):
        return dashboard.load_spans(self.files)

    def log(self, name):
        with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    # -- client side -------------------------------------------------------
    def post(self, path, body, headers=None, timeout=30):
        """POST; returns (status, headers, body bytes, client ttft ms)."""
        req = urllib.request.Request(self.url + path,
                                     data=json.dumps(body).encode(),
                                     method="POST")
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        t0 = time.monotonic_ns()
        try:
            r = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read(), None
        with r:
            first = r.read(1)
            ttft = (time.monotonic_ns() - t0) / 1e6
            rest = r.read()
            return r.status, dict(r.headers), first + rest, ttft

    def get(self, path, timeout=10):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.status, r.read()

    def loadgen(self, seconds, csv_path, extra=()):
        res = subprocess.run(
            [sys.executable, LOADGEN, "--endpoint", self.url, "--seconds",
             str(seconds), "--csv", csv_path, "--progress-every", "100"]
            + list(extra), capture_output=True, text=True,
            timeout=seconds + 120)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout
