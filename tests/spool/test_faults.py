"""Process-level fault tests of the persistent spool.

Each test runs tests/spool/spool_driver (a small C program using the public
API) against loopback servers: tests/integration/sink.py, which decodes
every request with opentelemetry-proto and records each span, and
tests/transport/scripted_server.py, which hangs or answers 503 on demand.
Spans are compared by span id. Every process is stopped at teardown and
every wait is bounded.

Run:  PDTRACE_SPOOL_DRIVER=build-spool/tests/spool/spool_driver \
      .venv/bin/python -m pytest -q tests/spool/test_faults.py
(meson registers it as the `spool-faults` test of the `integration` suite).
"""

import glob
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SINK = os.path.join(ROOT, "tests", "integration", "sink.py")
SCRIPTED = os.path.join(ROOT, "tests", "transport", "scripted_server.py")
DRIVER = os.environ.get("PDTRACE_SPOOL_DRIVER") or os.path.join(
    ROOT, "build-spool", "tests", "spool", "spool_driver")

pytestmark = pytest.mark.skipif(not os.access(DRIVER, os.X_OK),
                                reason="spool_driver not built")

HEADER = struct.Struct("<4sHHIQQII")  # see lib/spool.h


# ---- helpers -----------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_line(proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline and b"\n" not in buf:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            chunk = os.read(fd, 256)
            if not chunk:
                break
            buf += chunk
    assert b"\n" in buf, "server did not print its port"
    return buf.split(b"\n")[0].decode()


def stop(proc, sig=signal.SIGTERM):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Sink:
    """sink.py on a fixed port; can be killed and restarted on that port."""

    def __init__(self, tmp, port=None):
        self.port = port or free_port()
        self.out = os.path.join(tmp, "spans-%d.jsonl" % self.port)
        self.parts = []
        self.proc = None

    def start(self):
        out = "%s.%d" % (self.out, len(self.parts))
        self.parts.append(out)
        deadline = time.monotonic() + 10
        while True:
            self.proc = subprocess.Popen(
                [sys.executable, SINK, "--out", out, "--port", str(self.port)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                first_line(self.proc, 10)
                return
            except AssertionError:
                stop(self.proc)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the port may still be in TIME_WAIT use

    def kill(self):
        stop(self.proc, signal.SIGKILL)

    def stop(self):
        stop(self.proc)

    def span_ids(self):
        ids = []
        for part in self.parts:
            if os.path.exists(part):
                with open(part) as f:
                    for line in f:
                        if line.strip():
                            ids.append(json.loads(line)["span_id"])
        return ids

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d/v1/traces" % self.port


def scripted(tmp, responses):
    script = os.path.join(tmp, "script.json")
    log = os.path.join(tmp, "requests.jsonl")
    with open(script, "w") as f:
        json.dump({"responses": responses}, f)
    proc = subprocess.Popen([sys.executable, SCRIPTED, script, log],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    port = int(first_line(proc))
    return proc, "http://127.0.0.1:%d/v1/traces" % port, log


def driver_args(endpoint, spool=None, ids=None, **kw):
    args = [DRIVER, "--endpoint", endpoint]
    if spool:
        args += ["--spool", spool]
    if ids:
        args += ["--ids", ids]
    for k, v in kw.items():
        if v is True:
            args.append("--" + k.replace("_", "-"))
        else:
            args += ["--" + k.replace("_", "-"), str(v)]
    return args


def start_driver(*a, **kw):
    return subprocess.Popen(driver_args(*a, **kw), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=90):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("driver timed out: " + err[-2000:])
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def run_driver(*a, timeout=90, **kw):
    return finish(start_driver(*a, **kw), timeout)


def read_ids(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.strip() for l in f if l.strip()]


def spool_span_ids(spool):
    """Span ids of every frame in a spool directory (waiting or claimed)."""
    ids = []
    names = [n for n in os.listdir(spool)
             if n.endswith(".pdspool") or ".claimed-" in n]
    for name in sorted(names):
        with open(os.path.join(spool, name), "rb") as f:
            data = f.read()
        magic, ver, flags, nspans, raw_len, comp_len, _, _ = \
            HEADER.unpack_from(data)
        assert magic == b"PDSP" and ver == 1 and flags == 1
        assert len(data) == HEADER.size + comp_len
        body = zstandard.ZstdDecompressor().decompress(
            data[HEADER.size:], max_output_size=raw_len)
        assert len(body) == raw_len
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        got = [s.span_id.hex() for rs in req.resource_spans
               for ss in rs.scope_spans for s in ss.spans]
        assert len(got) == nspans
        ids += got
    return ids


def spool_files(spool):
    return sorted(os.listdir(spool)) if os.path.isdir(spool) else []


def report(name, **numbers):
    print("\n[spool-fault] %s: %s" % (
        name, ", ".join("%s=%s" % kv for kv in numbers.items())))


@pytest.fixture
def tmp():
    with tempfile.TemporaryDirectory(prefix="pdt-spool-") as d:
        yield d


# ---- tests ---------------------------------------------------------------

def test_collector_down_at_start_then_up(tmp):
    """Nothing listens at first; every span arrives once the sink is up."""
    sink = Sink(tmp)
    spool = os.path.join(tmp, "spool")
    ids = os.path.join(tmp, "ids")
    drv = start_driver(sink.endpoint, spool, ids, spans=1500, rate=750,
                       batch=50, delay=100, export_timeout=1000, timeout=500,
                       drain_ms=40000)
    try:
        time.sleep(2.5)
        sink.start()
        (st,) = finish(drv)
    finally:
        stop(drv)
        sink.stop()
    sent = read_ids(ids)
    got = sink.span_ids()
    report("down-then-up", sent=len(sent), received=len(got),
           unique=len(set(got)), spooled=st["spans_spooled"],
           replayed=st["spans_replayed"], exported=st["spans_exported"],
           dropped=st["dropped_queue_full"] + st["dropped_export_failed"] +
           st["dropped_shutdown"] + st["close_dropped"])
    assert len(sent) == 1500
    assert set(got) == set(sent)
    assert st["spans_spooled"] > 0
    assert st["spans_replayed"] == st["spans_spooled"]
    assert st["dropped_queue_full"] == 0
    assert st["dropped_export_failed"] == 0
    assert st["close_dropped"] == 0
    assert st["spool_left"] == 0
    assert spool_files(spool) == []


@pytest.mark.parametrize("with_spool", [True, False])
def test_collector_killed_under_load(tmp, with_spool):
    """The sink dies for 3 s under a steady 400 spans/s: with the spool
    nothing is lost; without it, the loss equals the dropped counters."""
    sink = Sink(tmp)
    sink.start()
    spool = os.path.join(tmp, "spool") if with_spool else None
    ids = os.path.join(tmp, "ids")
    drv = start_driver(sink.endpoint, spool, ids, spans=3200, rate=400,
                       batch=100, queue=1024, delay=100, export_timeout=1500,
                       timeout=500, drain_ms=40000 if with_spool else 0,
                       close_timeout=10000)
    try:
        time.sleep(2)
        sink.kill()
        time.sleep(3)
        sink.start()
        (st,) = finish(drv)
        time.sleep(0.3)
    finally:
        stop(drv)
        sink.stop()
    sent = read_ids(ids)
    got = sink.span_ids()
    unique = set(got)
    dropped = (st["dropped_queue_full"] + st["dropped_export_failed"] +
               st["dropped_shutdown"] + st["close_dropped"])
    lost = len(set(sent) - unique)
    report("killed-under-load spool=%s" % with_spool, sent=len(sent),
           received=len(got), unique=len(unique), lost=lost, dropped=dropped,
           spooled=st["spans_spooled"], replayed=st["spans_replayed"],
           duplicates=len(got) - len(unique))
    assert len(sent) == 3200
    assert unique <= set(sent)
    if with_spool:
        assert lost == 0
        assert dropped == 0
        assert st["spans_spooled"] > 0
        assert st["spans_replayed"] == st["spans_spooled"]
    else:
        assert lost > 0
        assert lost == dropped
        assert st["spans_spooled"] == 0


def test_sigkill_then_new_process_replays(tmp):
    """A process is SIGKILLed while spooling (collector down); a new process
    on the same directory delivers every span that reached the spool."""
    port = free_port()
    spool = os.path.join(tmp, "spool")
    ids = os.path.join(tmp, "ids")
    endpoint = "http://127.0.0.1:%d/v1/traces" % port
    drv = start_driver(endpoint, spool, ids, spans=100000, rate=2000,
                       batch=100, delay=50, export_timeout=300, timeout=200)
    try:
        time.sleep(3)
        drv.send_signal(signal.SIGKILL)
        drv.wait(timeout=10)
    finally:
        stop(drv)
    ended = read_ids(ids)
    in_spool = spool_span_ids(spool)
    leftovers = [n for n in spool_files(spool) if n.startswith(".tmp-")]
    assert len(in_spool) > 0
    assert set(in_spool) <= set(ended)
    sink = Sink(tmp, port)
    sink.start()
    try:
        (st,) = run_driver(endpoint, spool, None, spans=0, drain_ms=30000,
                           export_timeout=2000, timeout=1000)
        time.sleep(0.3)
    finally:
        sink.stop()
    got = sink.span_ids()
    report("sigkill-restart", ended_before_kill=len(ended),
           in_spool=len(in_spool), tmp_leftovers=len(leftovers),
           received=len(got), unique=len(set(got)),
           replayed=st["spans_replayed"], corrupt=st["spool_corrupt"])
    assert set(in_spool) <= set(got)
    assert st["spans_replayed"] >= len(set(in_spool))
    assert spool_files(spool) == []


@pytest.mark.parametrize("with_spool", [True, False])
def test_hung_collector_close_is_bounded(tmp, with_spool):
    """The collector accepts and never answers: close returns within its
    timeout; the spans go to the spool (or are counted as dropped)."""
    proc, endpoint, _ = scripted(tmp, [{"hang": True}])
    spool = os.path.join(tmp, "spool") if with_spool else None
    ids = os.path.join(tmp, "ids")
    try:
        (st,) = run_driver(endpoint, spool, ids, spans=300, batch=100,
                           delay=50, export_timeout=30000, timeout=30000,
                           close_timeout=2000)
    finally:
        stop(proc)
    sent = read_ids(ids)
    report("hung spool=%s" % with_spool, sent=len(sent),
           close_ms=st["close_ms"], close_rc=st["close_rc"],
           close_dropped=st["close_dropped"],
           in_spool=len(spool_span_ids(spool)) if spool else 0)
    assert st["close_ms"] <= 2000 + 150
    if not with_spool:
        assert st["close_dropped"] + st["dropped_export_failed"] == 300
        return
    assert st["close_dropped"] == 0
    assert st["close_rc"] == 0
    assert sorted(spool_span_ids(spool)) == sorted(sent)
    # The next process delivers them.
    sink = Sink(tmp)
    sink.start()
    try:
        (st2,) = run_driver(sink.endpoint, spool, None, spans=0,
                            drain_ms=20000)
        time.sleep(0.3)
    finally:
        sink.stop()
    assert set(sink.span_ids()) == set(sent)
    assert st2["spans_replayed"] == 300


def test_retry_after_storm_is_bounded(tmp):
    """Every answer is 503 with Retry-After: 1. Requests stay about a
    second apart, and the spans end up in the spool."""
    proc, endpoint, log = scripted(
        tmp, [{"status": 503, "headers": {"Retry-After": "1"}}])
    spool = os.path.join(tmp, "spool")
    ids = os.path.join(tmp, "ids")
    t0 = time.time()
    try:
        (st,) = run_driver(endpoint, spool, ids, spans=600, rate=100,
                           batch=50, delay=100, export_timeout=3000,
                           timeout=1000, close_timeout=2000)
    finally:
        stop(proc)
    elapsed = time.time() - t0
    with open(log) as f:
        times = sorted(json.loads(l)["t"] for l in f if l.strip())
    gaps = [b - a for a, b in zip(times, times[1:])]
    sent = read_ids(ids)
    spooled = spool_span_ids(spool)
    report("503-storm", seconds=round(elapsed, 1), requests=len(times),
           min_gap_s=round(min(gaps), 3) if gaps else None,
           sent=len(sent), in_spool=len(spooled),
           spooled_counter=st["spans_spooled"])
    assert len(times) >= 2
    assert min(gaps) >= 0.9
    assert len(times) <= elapsed + 2
    assert sorted(spooled) == sorted(sent)
    assert st["dropped_export_failed"] == 0 and st["close_dropped"] == 0


@pytest.mark.skipif(
    os.environ.get("PDTRACE_UNDER_ASAN") is not None,
    reason="AddressSanitizer's allocator can deadlock a thread started in a "
           "child forked from a multi-threaded process; the plain build "
           "runs this test")
@pytest.mark.parametrize("down_first", [False, True])
def test_fork_parent_and_child_no_duplicates(tmp, down_first):
    """A tracer used across fork: parent and child both export, sharing one
    spool; nothing is lost and nothing is delivered twice."""
    sink = Sink(tmp)
    if not down_first:
        sink.start()
    spool = os.path.join(tmp, "spool")
    ids = os.path.join(tmp, "ids")
    drv = start_driver(sink.endpoint, spool, ids, spans=500, rate=500,
                       batch=50, delay=100, export_timeout=800, timeout=400,
                       drain_ms=40000, fork=True)
    try:
        if down_first:
            time.sleep(2)
            sink.start()
        lines = finish(drv)
        time.sleep(0.3)
    finally:
        stop(drv)
        sink.stop()
    sent = read_ids(ids)
    got = sink.span_ids()
    report("fork down_first=%s" % down_first, processes=len(lines),
           sent=len(sent), received=len(got), unique=len(set(got)),
           spooled=sum(l["spans_spooled"] for l in lines),
           replayed=sum(l["spans_replayed"] for l in lines))
    assert len(lines) == 2
    assert len(set(l["pid"] for l in lines)) == 2
    assert len(sent) == 1000 and len(set(sent)) == 1000
    assert set(got) == set(sent)
    assert len(got) == len(set(got)), "a span was delivered twice"
    assert spool_files(spool) == []
