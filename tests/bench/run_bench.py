"""Runs the side-by-side benchmark rows and writes docs/benchmarks.md.

Started by tests/bench/run_bench.sh, which builds the programs and passes
their paths. Every row makes the same traced P/D request (request, prefill
and decode spans, the same attributes, 6 stage marks) and exports it over
OTLP/HTTP protobuf to one loopback counting sink (tests/bench/go/sink);
the throughput ramp goes through the real OpenTelemetry Collector
(tests/collector) into the same sink. Every child process runs under a
timeout and everything listens on 127.0.0.1 only.
"""

import argparse
import json
import os
import platform
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# name, label, kind (c, py, go), compressions it supports
ROWS = [
    ("pdtrace-c", "libpdtrace (C)", ("none", "gzip", "zstd")),
    ("pdtrace-python", "libpdtrace via Python binding", ("none", "gzip", "zstd")),
    ("otel-python", "opentelemetry-sdk (Python)", ("none", "gzip")),
    ("pdtrace-go", "libpdtrace via Go binding", ("none", "gzip", "zstd")),
    ("otel-go", "opentelemetry-go", ("none", "gzip")),
    ("otel-rust", "opentelemetry-rust", ("none", "gzip", "zstd")),
]

# The compression levels opentelemetry-otlp (Rust) uses and cannot change:
# flate2's default (6) and zstd's default (3). libpdtrace's defaults are 1.
RUST_LEVELS = {"gzip": 6, "zstd": 3}

# Calling threads of the C row's scaling table.
THREADS = (1, 2, 4, 8)

# Offered rate of the no-loss throughput check into the counting sink.
SINK_RATE = 150000

# Requests timed per run (default, quick); warm-up is separate.
SIZES = {
    "pdtrace-c": ((100000, 50000), (30000, 30000)),
    "pdtrace-go": ((50000, 30000), (20000, 20000)),
    "pdtrace-python": ((20000, 20000), (8000, 10000)),
    "otel-go": ((20000, 2000), (8000, 1000)),
    "otel-rust": ((20000, 2000), (8000, 1000)),
    "otel-python": ((4000, 500), (1500, 300)),
}

RAMP = [500, 1000, 2000, 5000, 10000, 20000, 30000, 40000, 50000, 60000, 75000, 100000]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def read_line(proc, timeout):
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


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    def __init__(self, binary):
        self.proc = subprocess.Popen([binary, "-max-seconds", "1500"], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        line = read_line(self.proc, 20)
        if not line or not line.strip().isdigit():
            stop(self.proc)
            raise SystemExit("sink did not start")
        self.base = "http://127.0.0.1:%s" % line.strip()
        self.url = self.base + "/v1/traces"

    def stats(self, reset=False):
        req = urllib.request.Request(self.base + ("/reset" if reset else "/stats"),
                                     method="POST" if reset else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def settle(self, expected, timeout=15.0, quiet=1.5):
        """Waits until the sink has `expected` spans or stops changing."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            st = self.stats()
            if st["spans"] >= expected:
                return st
            if st["spans"] != last:
                last, since = st["spans"], time.monotonic()
            elif time.monotonic() - since > quiet:
                return st
            time.sleep(0.1)
        return self.stats()


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Collector:
    def __init__(self, binary, sink, tmp):
        self.port = free_port()
        cfg = open(os.path.join(HERE, "otelcol-bench.yaml")).read()
        cfg = cfg.replace("{port}", str(self.port)).replace("{sink}", sink.base)
        path = os.path.join(tmp, "otelcol.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        self.err = open(os.path.join(tmp, "otelcol.log"), "wb")
        self.proc = subprocess.Popen([binary, "--config=" + path], stdout=self.err,
                                     stderr=self.err, stdin=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d/v1/traces" % self.port
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("collector exited")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("collector did not listen")

    def cpu(self):
        return proc_cpu_s(self.proc.pid)

    def stop(self):
        stop(self.proc)
        self.err.close()


class Runner:
    def __init__(self, a):
        self.a = a
        self.env = dict(os.environ)
        self.env["LD_LIBRARY_PATH"] = a.libdir + (":" + self.env["LD_LIBRARY_PATH"]
                                                  if self.env.get("LD_LIBRARY_PATH") else "")
        for k in list(self.env):
            if k.startswith("OTEL_"):
                del self.env[k]

    def cmd(self, impl, endpoint, comp, n, warm, extra=()):
        a = self.a
        common = ["--endpoint", endpoint, "--compression", comp, "--n", str(n),
                  "--warm", str(warm)]
        if impl == "pdtrace-c":
            return [a.c_rows] + common + list(extra)
        if impl in ("otel-go", "pdtrace-go", "otel-rust"):
            b = {"otel-go": a.otelgo, "pdtrace-go": a.pdgo, "otel-rust": a.otelrust}[impl]
            return [b] + ["-" + x.lstrip("-") if x.startswith("--") else x
                          for x in common + list(extra)]
        return [a.python, os.path.join(HERE, "bench_py.py"), "--impl", impl.split("-")[0]] \
            + common + list(extra)

    def run(self, cmd, env=None, timeout=300):
        res = subprocess.run(cmd, env=env or self.env, capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (os.path.basename(cmd[0]), res.returncode,
                                                       res.stderr[-2000:]))
        return json.loads(res.stdout.strip().splitlines()[-1])


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt_ns(v):
    if v is None:
        return "n/a"
    if v < 1000:
        return "%.0f ns" % v
    if v < 100000:
        return "%.2f µs" % (v / 1000)
    return "%.0f µs" % (v / 1000)


def fmt(v, spec="%.1f"):
    return "n/a" if v is None else spec % v


def machine():
    def sh(c):
        try:
            return subprocess.run(c, shell=True, capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except Exception:
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "cc": sh("${CC:-cc} --version | head -1"),
        "go": sh("go version"),
        "python": sys.version.split()[0],
        "load_start": "%.2f %.2f %.2f" % os.getloadavg(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--sink", required=True)
    ap.add_argument("--c-rows", required=True)
    ap.add_argument("--floor", default="", help="bench_floor")
    ap.add_argument("--otelrust", default="")
    ap.add_argument("--gzip-impl", default="zlib", help="isal or zlib: the build's gzip")
    ap.add_argument("--otelgo", required=True)
    ap.add_argument("--pdgo", default="")
    ap.add_argument("--python", required=True)
    ap.add_argument("--malloc-shim", required=True)
    ap.add_argument("--libdir", required=True)
    ap.add_argument("--collector", default="")
    ap.add_argument("--rows", default=",".join(r[0] for r in ROWS))
    ap.add_argument("--no-ramp", action="store_true")
    a = ap.parse_args()
    quick = a.quick
    repeats = a.repeats or (1 if quick else 3)
    wanted = a.rows.split(",")
    t_start = time.monotonic()
    info = machine()
    r = Runner(a)
    sink = Sink(a.sink)
    results = {}
    notes = {}

    # Which bindings are usable.
    ready = {"pdtrace-c": True, "otel-go": True, "otel-python": True}
    ready["otel-rust"] = bool(a.otelrust) and os.access(a.otelrust, os.X_OK)
    if not ready["otel-rust"]:
        notes["otel-rust"] = "n/a (not built)"
    info["gzip_impl"] = a.gzip_impl
    chk = subprocess.run([a.python, "-c", "import pdtrace; pdtrace.Tracer; pdtrace.Leg.PREFILL"],
                         env=r.env, capture_output=True, text=True, timeout=60)
    ready["pdtrace-python"] = chk.returncode == 0
    if chk.returncode != 0:
        notes["pdtrace-python"] = "n/a (binding not ready)"
    ready["pdtrace-go"] = bool(a.pdgo) and os.access(a.pdgo, os.X_OK)
    if not ready["pdtrace-go"]:
        notes["pdtrace-go"] = "n/a (binding not ready)"

    try:
        if a.floor:
            try:
                results["floor"] = r.run([a.floor, "--requests", "51200" if quick else "102400",
                                          "--repeats", "3" if quick else "5",
                                          "--level-gzip", str(RUST_LEVELS["gzip"]),
                                          "--level-zstd", str(RUST_LEVELS["zstd"])])
                log("floor: %s" % results["floor"])
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log("floor: %s" % e)
                notes["floor"] = "failed: %s" % str(e).splitlines()[0][:120]
        for impl, label, comps in ROWS:
            if impl not in wanted or not ready[impl]:
                continue
            n, warm = SIZES[impl][1 if quick else 0]
            per = {}
            for comp in comps:
                runs = []
                for _ in range(repeats):
                    sink.stats(reset=True)
                    try:
                        res = r.run(r.cmd(impl, sink.url, comp, n, warm))
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        log("%s %s: %s" % (impl, comp, e))
                        notes[impl] = "failed: %s" % str(e).splitlines()[0][:120]
                        continue
                    st = sink.settle(3 * (n + warm), timeout=5)
                    res["sink_spans"] = st["spans"]
                    res["lost_spans"] = 3 * (n + warm) - st["spans"]
                    res["bytes_per_span"] = st["body_bytes"] / max(st["spans"], 1)
                    res["http_requests"] = st["requests"]
                    runs.append(res)
                    log("%-15s %-5s caller p50 %s  cpu/req %s  B/span %.1f  lost %d" % (
                        impl, comp, fmt_ns(res["caller_p50_ns"]), fmt_ns(res["cpu_ns_per_req"]),
                        res["bytes_per_span"], res["lost_spans"]))
                if runs:
                    per[comp] = runs
            # libpdtrace at opentelemetry-rust's levels (equal-level ratios).
            if impl == "pdtrace-c" and per:
                for comp, lvl in RUST_LEVELS.items():
                    runs = []
                    for _ in range(repeats):
                        sink.stats(reset=True)
                        try:
                            res = r.run(r.cmd(impl, sink.url, comp, n, warm,
                                              ["--compression-level", str(lvl)]))
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            log("%s %s level %d: %s" % (impl, comp, lvl, e))
                            continue
                        st = sink.settle(3 * (n + warm), timeout=5)
                        res["lost_spans"] = 3 * (n + warm) - st["spans"]
                        res["bytes_per_span"] = st["body_bytes"] / max(st["spans"], 1)
                        runs.append(res)
                        log("%-15s %s level %d cpu/req %s  B/span %.1f" % (
                            impl, comp, lvl, fmt_ns(res["cpu_ns_per_req"]), res["bytes_per_span"]))
                    if runs:
                        per["%s-l%d" % (comp, lvl)] = runs
            # Calling threads: 1, 2, 4, 8 in every mode (interleaved).
            if impl == "pdtrace-c" and per:
                tn = 20000 if quick else 40000
                for _ in range(repeats):
                    for comp in comps:
                        for th in THREADS:
                            sink.stats(reset=True)
                            try:
                                res = r.run(r.cmd(impl, sink.url, comp, tn, 5000,
                                                  ["--threads", str(th)]))
                            except (RuntimeError, subprocess.TimeoutExpired) as e:
                                log("%s %s threads %d: %s" % (impl, comp, th, e))
                                continue
                            st = sink.settle(3 * (res["n"] + 5000), timeout=5)
                            res["lost_spans"] = 3 * (res["n"] + 5000) - st["spans"]
                            per.setdefault("%s-t%d" % (comp, th), []).append(res)
                            log("%-15s %-5s %d threads: p50 %s p99 %s cpu/req %s lost %d" % (
                                impl, comp, th, fmt_ns(res["caller_p50_ns"]),
                                fmt_ns(res["caller_p99_ns"]), fmt_ns(res["cpu_ns_per_req"]),
                                res["lost_spans"]))
            # Wire size with a new trace id per request (production-like).
            if impl == "pdtrace-c" and per:
                runs = []
                for _ in range(repeats):
                    sink.stats(reset=True)
                    try:
                        res = r.run(r.cmd(impl, sink.url, "zstd", n, warm, ["--fresh-trace"]))
                        st = sink.settle(3 * (n + warm), timeout=5)
                        res["bytes_per_span"] = st["body_bytes"] / max(st["spans"], 1)
                        res["lost_spans"] = 3 * (n + warm) - st["spans"]
                        runs.append(res)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        log("%s fresh trace: %s" % (impl, e))
                if runs:
                    per["zstd-fresh"] = runs
            # Allocation pass for the Python rows: every object is a malloc.
            if impl.endswith("-python") and per:
                env = dict(r.env, PYTHONMALLOC="malloc", LD_PRELOAD=a.malloc_shim)
                an = max(n // 4, 500)
                sink.stats(reset=True)
                try:
                    res = r.run(r.cmd(impl, sink.url, "gzip", an, warm, ["--count-allocs"]),
                                env=env)
                    per["allocs"] = [res]
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    log("%s allocs: %s" % (impl, e))
            results[impl] = per

        # What the client can offer: SINK_RATE req/s straight into the
        # counting sink, C (one thread) and the Go binding (8 goroutines).
        sinkrate = {}
        for impl, extra in (("pdtrace-c", []), ("pdtrace-go", ["--goroutines", "8"])):
            if impl not in results or not results[impl]:
                continue
            sink.stats(reset=True)
            try:
                res = r.run(r.cmd(impl, sink.url, "zstd", 1, 0,
                                  ["--rate", str(SINK_RATE), "--seconds", "2" if quick else "3"]
                                  + extra), timeout=120)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log("sink rate %s: %s" % (impl, e))
                continue
            expected = 3 * res["requests"]
            st = sink.settle(expected, timeout=20)
            res["lost_spans"] = expected - st["spans"]
            res["ok"] = res["lost_spans"] == 0 and res["achieved_rps"] >= 0.97 * SINK_RATE \
                and res.get("dropped_queue_full", 0) == 0
            sinkrate[impl] = res
            log("sink rate %-12s %d req/s offered: achieved %.0f lost %d" % (
                impl, SINK_RATE, res["achieved_rps"], res["lost_spans"]))

        # Throughput ramp into the real Collector.
        ramp = {}
        col = None
        if a.collector and not a.no_ramp:
            tmp = tempfile.mkdtemp(prefix="pdtrace-bench-")
            try:
                col = Collector(a.collector, sink, tmp)
            except Exception as e:  # noqa: BLE001
                log("collector: %s" % e)
                notes["collector"] = "Collector did not start: %s" % e
            step_s = 2.0 if quick else 3.0
            for impl, _, _ in ROWS:
                if impl == "otel-rust":
                    continue  # the closed-loop rows suffice for the CPU target
                if col is None or impl not in results or not results[impl].get("gzip"):
                    continue
                cpu = median_of(results[impl]["gzip"], "cpu_ns_per_req")
                ceiling = 1e9 / cpu if cpu else 1e5
                start = max([s for s in RAMP if s <= ceiling / 4] or [RAMP[0]])
                steps = [s for s in RAMP if s >= start]
                best, trail = None, []
                for rate in steps:
                    if time.monotonic() - t_start > (85 if quick else 420):
                        notes.setdefault("ramp", "ramp cut short by the time budget")
                        break
                    sink.stats(reset=True)
                    c0, w0, m0 = col.cpu(), time.monotonic(), machine_busy()
                    try:
                        res = r.run(r.cmd(impl, col.url, "gzip" if impl.startswith("otel") else "zstd",
                                          1, 0, ["--rate", str(rate), "--seconds", str(step_s)]),
                                    timeout=120)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        log("ramp %s %d: %s" % (impl, rate, e))
                        break
                    expected = 3 * res["requests"]
                    st = sink.settle(expected, timeout=20)
                    wall = time.monotonic() - w0
                    m1 = machine_busy()
                    busy = (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)
                    col_cpu = (col.cpu() - c0) / wall
                    lost = expected - st["spans"]
                    gen_cpu = res["cpu_ns_per_req"] * res["requests"] / 1e9 / res["busy_s"]
                    ok = lost == 0 and res["achieved_rps"] >= 0.97 * rate \
                        and res.get("dropped_queue_full", 0) == 0
                    trail.append({"rate": rate, "achieved": res["achieved_rps"], "lost": lost,
                                  "collector_cores": col_cpu, "client_cores": gen_cpu,
                                  "machine_busy": busy,
                                  "client_dropped": res.get("dropped_queue_full"),
                                  "ok": ok})
                    log("ramp %-15s %6d req/s: achieved %.0f lost %d collector %.2f cores, "
                        "client %.2f cores" % (impl, rate, res["achieved_rps"], lost, col_cpu,
                                               gen_cpu))
                    if not ok:
                        break
                    best = rate
                ramp[impl] = {"best": best, "trail": trail}
    finally:
        if col is not None:
            col.stop()
        sink_cpu = None
        try:
            sink_cpu = sink.stats()["cpu_seconds"]
        except Exception:  # noqa: BLE001
            pass
        stop(sink.proc)

    info["load_end"] = "%.2f %.2f %.2f" % os.getloadavg()
    info["elapsed_s"] = time.monotonic() - t_start
    info["repeats"] = repeats
    info["quick"] = quick
    md = render(info, results, ramp, notes, a, sinkrate)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(md)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({"machine": info, "results": results, "ramp": ramp, "notes": notes,
                   "sink_rate": sinkrate, "sink_cpu_s": sink_cpu}, f, indent=1)
    print(md)


def summarize(results):
    s = {}
    for impl, per in results.items():
        if impl == "floor":
            continue
        g = per.get("gzip") or []
        d = {
            "p50": median_of(g, "caller_p50_ns"),
            "p99": median_of(g, "caller_p99_ns"),
            "rss": median_of(g, "maxrss_kb"),
            "lost": sum(x["lost_spans"] for runs in per.values() for x in runs
                        if "lost_spans" in x),
        }
        keys = ["none", "gzip", "zstd", "zstd-fresh"] + \
            ["%s-l%d" % kv for kv in RUST_LEVELS.items()] + \
            ["%s-t%d" % (c, t) for c in ("none", "gzip", "zstd") for t in THREADS]
        for comp in keys:
            runs = per.get(comp) or []
            d["cpu_" + comp] = median_of(runs, "cpu_ns_per_req")
            d["bps_" + comp] = median_of(runs, "bytes_per_span")
            d["p50_" + comp] = median_of(runs, "caller_p50_ns")
            d["p99_" + comp] = median_of(runs, "caller_p99_ns")
        al = per.get("allocs") or g
        d["allocs"] = median_of(al, "allocs_per_req")
        d["allocs_caller"] = median_of(al, "allocs_caller_per_req")
        d["allocs_how"] = al[0].get("allocs_how") if al else None
        s[impl] = d
    return s


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def render(info, results, ramp, notes, a, sinkrate):
    s = summarize(results)
    L = []
    w = L.append
    w("# Benchmarks: libpdtrace side by side with the OpenTelemetry SDKs\n")
    w("Generated by `tests/bench/run_bench.sh%s` — do not edit by hand; re-run it.\n"
      % (" --quick" if info["quick"] else ""))
    w("Workload: one traced P/D request = `llm_d.pd_proxy.request` (SERVER) with "
      "`prefill` and `decode` (CLIENT) children under an inbound traceparent, "
      "traceparent injection for both legs, 6 stage marks, the breakdown of "
      "docs/spans.md on the request and decode spans: 26 + 3 + 13 attributes in "
      "all (13 set by the caller, the rest derived), exported over OTLP/HTTP "
      "protobuf to one loopback counting sink. The OpenTelemetry rows build the "
      "same spans, attributes and types with the SDK's public API "
      "(BatchSpanProcessor, OTLP/HTTP exporter). Batches: 512 requests (1536 "
      "spans) per export request; every row flushes after every 8192 requests "
      "(outside the per-request timing).\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    for k in ("date", "nproc", "cpu", "memory", "kernel", "cc", "go", "python",
              "load_start", "load_end"):
        w("| %s | %s |" % (k, info[k]))
    w("| gzip in the default build | %s |" % (
        "ISA-L igzip (levels 1-2), zlib above" if info.get("gzip_impl") == "isal" else "zlib"))
    w("| runs per cell | %d (median reported) |" % info["repeats"])
    w("| elapsed | %.0f s |\n" % info["elapsed_s"])
    w("The machine is shared (other builds and tests run at the same time): "
      "wall-clock numbers are noisy; CPU time per request (getrusage) is less so, "
      "and instruction counts (docs/performance.md) are stable.\n")

    w("## Results\n")
    w("| row | caller p50 | caller p99 | CPU/request gzip | CPU/request none | "
      "CPU/request zstd | allocs/request | B/span none | B/span gzip | "
      "B/span zstd, new trace id per request | B/span zstd, one shared trace id | "
      "max req/s into Collector, 0 lost | peak RSS |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    fl = results.get("floor")
    if fl:
        w("| floor: 7 clock reads + one-pass encode (+ compression), one thread | "
          "n/a | n/a | %s | %s | %s | n/a | %s | %s | n/a | %s | n/a | n/a |" % (
              fmt_ns(fl["cpu_ns_per_req_gzip"]), fmt_ns(fl["cpu_ns_per_req_none"]),
              fmt_ns(fl["cpu_ns_per_req_zstd"]), fmt(fl["bytes_per_span_none"]),
              fmt(fl["bytes_per_span_gzip"]), fmt(fl["bytes_per_span_zstd"])))
    for impl, label, _ in ROWS:
        if impl not in s:
            note = notes.get(impl, "n/a")
            w("| %s | %s |%s" % (label, note, " |" * 11))
            continue
        d = s[impl]
        al = "n/a" if d["allocs"] is None else "%.2f" % d["allocs"]
        if d["allocs_caller"] is not None and impl == "pdtrace-c":
            al += " (caller thread %.3f)" % d["allocs_caller"]
        rp = ramp.get(impl)
        if rp is None:
            rps = "not measured"
        elif rp["best"] is None:
            rps = "< %d" % rp["trail"][0]["rate"] if rp["trail"] else "n/a"
        else:
            rps = "%d" % rp["best"]
            if rp["trail"] and rp["trail"][-1]["ok"]:
                rps = "≥ " + rps
        w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, fmt_ns(d["p50"]), fmt_ns(d["p99"]), fmt_ns(d["cpu_gzip"]),
            fmt_ns(d["cpu_none"]), fmt_ns(d["cpu_zstd"]), al, fmt(d["bps_none"]),
            fmt(d["bps_gzip"]), fmt(d["bps_zstd-fresh"]), fmt(d["bps_zstd"]), rps,
            "n/a" if d["rss"] is None else "%.0f MiB" % (d["rss"] / 1024)))
    w("")
    w("- caller p50/p99: time on the calling thread for one whole request "
      "(all calls from begin to free), gzip runs; it includes two clock reads "
      "(about 25 ns each here).")
    w("- CPU/request: process user+system CPU (getrusage / process_time, all "
      "threads including the exporter) over the timed run and its final flush, "
      "divided by the requests.")
    w("- allocs/request: C: interposed malloc/calloc/realloc calls in the whole "
      "process, exporter included (caller-thread figure in brackets); Go: "
      "runtime.MemStats.Mallocs delta, all goroutines (Go heap only; the C side "
      "of the Go binding is the C row's); Python: malloc calls in the whole "
      "process with PYTHONMALLOC=malloc and an LD_PRELOAD counter "
      "(tests/bench/malloc_count.c), a separate gzip run.")
    w("- B/span: request body bytes received by the sink / spans decoded there. "
      "otlptracehttp and the Python OTLP/HTTP exporter do not offer zstd. Every row "
      "but the C row's new-trace-id column sends one inbound trace id for all requests, "
      "which zstd finds again in every span.")
    w("- floor: tests/bench/bench_floor.c, thread CPU per request (median of %s "
      "repeats): the 7 clock reads of a request, the same 3 spans encoded once into "
      "an OTLP request body of 512 requests by a minimal protobuf writer, then the "
      "library's compressor at its default levels. No queue, no exporter thread, no HTTP."
      % (fl or {}).get("repeats", "?"))
    w("- opentelemetry-rust: opentelemetry-otlp 0.33 (http-proto, reqwest blocking "
      "client) with the SDK's BatchSpanProcessor (its own thread); it compresses at "
      "fixed levels, gzip 6 and zstd 3; allocations counted by a counting global "
      "allocator (all threads).")
    w("- Lost spans across all closed-loop runs: %s." % ", ".join(
        "%s %d" % (i, s[i]["lost"]) for i in s))
    w("")

    c = s.get("pdtrace-c", {})
    fl = results.get("floor") or {}

    def verdict(ok):
        return "n/a" if ok is None else ("holds" if ok else "**does not hold**")

    # Calling threads.
    w("## Calling threads (C row)\n")
    w("The same workload from 1, 2, 4 and 8 calling threads (%d cores); the "
      "threads share the requests and meet at a barrier every 8192 requests for "
      "the flush. CPU/request is the whole process's (exporter included) over "
      "all threads' requests; the ratio column is against 1 thread in the same "
      "mode (p50 / CPU).\n" % info["nproc"])
    w("| mode | threads | caller p50 | caller p99 | CPU/request | vs 1 thread: p50, CPU |")
    w("|---|---|---|---|---|---|")
    worst_scale = None
    for comp in ("none", "gzip", "zstd"):
        p1, c1 = c.get("p50_%s-t1" % comp), c.get("cpu_%s-t1" % comp)
        for th in THREADS:
            p, q = c.get("p50_%s-t%d" % (comp, th)), c.get("cpu_%s-t%d" % (comp, th))
            rp_, rc_ = ratio(p, p1), ratio(q, c1)
            for v in (rp_, rc_):
                if v is not None:
                    worst_scale = v if worst_scale is None else max(worst_scale, v)
            w("| %s | %d | %s | %s | %s | %s, %s |" % (
                comp, th, fmt_ns(p), fmt_ns(c.get("p99_%s-t%d" % (comp, th))), fmt_ns(q),
                fmt(rp_, "%.2fx"), fmt(rc_, "%.2fx")))
    w("")

    # Headline ratios.
    w("## Ratios (same run)\n")
    w("| ratio | both gzip | both none | both zstd | libpdtrace zstd vs SDK gzip | caller p50 |")
    w("|---|---|---|---|---|---|")
    pairs = [("otel-python", "pdtrace-c", "otel-python / libpdtrace-C"),
             ("otel-go", "pdtrace-c", "otel-go / libpdtrace-C"),
             ("otel-rust", "pdtrace-c", "otel-rust / libpdtrace-C, default levels"),
             ("otel-python", "pdtrace-python", "otel-python / libpdtrace-Python"),
             ("otel-go", "pdtrace-go", "otel-go / libpdtrace-Go"),
             ("pdtrace-python", "pdtrace-c", "libpdtrace-Python / libpdtrace-C"),
             ("pdtrace-go", "pdtrace-c", "libpdtrace-Go / libpdtrace-C")]
    R = {}
    for x, y, name in pairs:
        if x in s and y in s:
            g = ratio(s[x]["cpu_gzip"], s[y]["cpu_gzip"])
            n = ratio(s[x]["cpu_none"], s[y]["cpu_none"])
            zz = ratio(s[x]["cpu_zstd"], s[y]["cpu_zstd"])
            p = ratio(s[x]["p50"], s[y]["p50"])
            z = ratio(s[x]["cpu_gzip"], s[y]["cpu_zstd"]) if x.startswith("otel") else None
            R[(x, y)] = (g, n, p)
            R[(x, y + "-zstd")] = z
            w("| %s total CPU | %s | %s | %s | %s | %s |" % (
                name, fmt(g, "%.1fx"), fmt(n, "%.1fx"), fmt(zz, "%.1fx"), fmt(z, "%.1fx"),
                fmt(p, "%.1fx")))
        else:
            w("| %s | n/a | n/a | n/a | n/a | n/a |" % name)
    eq = {}
    if "otel-rust" in s and c:
        r_ = s["otel-rust"]
        eq = {"gzip": ratio(r_["cpu_gzip"], c.get("cpu_gzip-l%d" % RUST_LEVELS["gzip"])),
              "none": ratio(r_["cpu_none"], c.get("cpu_none")),
              "zstd": ratio(r_["cpu_zstd"], c.get("cpu_zstd-l%d" % RUST_LEVELS["zstd"]))}
        w("| otel-rust / libpdtrace-C total CPU, equal levels (gzip %d, zstd %d) | %s | %s | %s "
          "| | |" % (RUST_LEVELS["gzip"], RUST_LEVELS["zstd"], fmt(eq["gzip"], "%.1fx"),
                     fmt(eq["none"], "%.1fx"), fmt(eq["zstd"], "%.1fx")))
    floor_r = {}
    if fl and c:
        floor_r = {m: ratio(c.get("cpu_" + m), fl.get("cpu_ns_per_req_" + m))
                   for m in ("gzip", "none", "zstd")}
        w("| libpdtrace-C / floor total CPU | %s | %s | %s | | |" % (
            fmt(floor_r["gzip"], "%.2fx"), fmt(floor_r["none"], "%.2fx"),
            fmt(floor_r["zstd"], "%.2fx")))
    w("")
    if c:
        w("libpdtrace (C) at opentelemetry-rust's levels: gzip %d %s/request (%s B/span), "
          "zstd %d %s/request (%s B/span).\n" % (
              RUST_LEVELS["gzip"], fmt_ns(c.get("cpu_gzip-l%d" % RUST_LEVELS["gzip"])),
              fmt(c.get("bps_gzip-l%d" % RUST_LEVELS["gzip"])), RUST_LEVELS["zstd"],
              fmt_ns(c.get("cpu_zstd-l%d" % RUST_LEVELS["zstd"])),
              fmt(c.get("bps_zstd-l%d" % RUST_LEVELS["zstd"]))))

    # Client throughput into the counting sink.
    if sinkrate:
        w("## What the client can offer (counting sink, no Collector)\n")
        w("Open loop at %d requests/s for a few seconds straight into the counting "
          "sink, zstd; a run passes when every span arrived, none was dropped and "
          "≥ 97%% of the rate was achieved.\n" % SINK_RATE)
        w("| row | offered req/s | achieved req/s | spans lost | dropped by the client | "
          "CPU/request | result |")
        w("|---|---|---|---|---|---|---|")
        for impl, lbl in (("pdtrace-c", "libpdtrace (C), 1 thread"),
                          ("pdtrace-go", "libpdtrace via Go binding, 8 goroutines")):
            x = sinkrate.get(impl)
            if x is None:
                w("| %s | %d | n/a | n/a | n/a | n/a | n/a |" % (lbl, SINK_RATE))
                continue
            w("| %s | %d | %.0f | %d | %s | %s | %s |" % (
                lbl, SINK_RATE, x["achieved_rps"], x["lost_spans"],
                x.get("dropped_queue_full", "n/a"), fmt_ns(x["cpu_ns_per_req"]),
                "pass" if x["ok"] else "**fail**"))
        w("")

    # Targets (issue "Performance, round 3").
    w("## Targets\n")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    fr = [floor_r.get(m) for m in ("none", "gzip", "zstd")]
    w("| total CPU per request within 2× of the floor in every mode | %s | %s |" % (
        ", ".join("%s %s" % (m, fmt(v, "%.2fx")) for m, v in zip(("none", "gzip", "zstd"), fr)),
        verdict(None if None in fr else max(fr) <= 2)))
    cells, ok = [], True
    for th in (1, 4):
        for comp in ("none", "gzip", "zstd"):
            p, q = c.get("p50_%s-t%d" % (comp, th)), c.get("p99_%s-t%d" % (comp, th))
            if p is None or q is None:
                ok = None if ok else ok
                continue
            cells.append("%d thr %s %s/%s" % (th, comp, fmt_ns(p), fmt_ns(q)))
            ok = ok and p <= 800 and q <= 3000
    w("| caller p50 ≤ 800 ns and p99 ≤ 3 µs, every mode, 1 and 4 threads | p50/p99: %s | %s |"
      % ("; ".join(cells), verdict(ok if cells else None)))
    w("| 2, 4, 8 calling threads within 1.5× of 1 thread (caller p50 and total CPU per "
      "request; the half on locks is assessed in docs/performance.md) | worst %s "
      "(table above) | %s |" % (
          fmt(worst_scale, "%.2fx"), verdict(None if worst_scale is None else worst_scale <= 1.5)))
    gz, zs = c.get("cpu_gzip"), c.get("cpu_zstd")
    gr = ratio(gz, zs)
    w("| gzip in the default build through ISA-L where installed; gzip CPU ≤ 2× zstd's | "
      "build uses %s; gzip %s vs zstd %s: %s | %s |" % (
          "ISA-L" if info.get("gzip_impl") == "isal" else "zlib", fmt_ns(gz), fmt_ns(zs),
          fmt(gr, "%.2fx"), verdict(None if gr is None else (gr <= 2 and info.get("gzip_impl") == "isal"))))
    ev = [eq.get(m) for m in ("gzip", "none", "zstd")]
    w("| ≥ 8× less total CPU than opentelemetry-rust at equal levels | gzip %s, none %s, zstd %s "
      "(default levels: see ratios) | %s |" % (
          fmt(ev[0], "%.1fx"), fmt(ev[1], "%.1fx"), fmt(ev[2], "%.1fx"),
          verdict(None if None in ev else min(ev) >= 8)))
    sc, sg = sinkrate.get("pdtrace-c"), sinkrate.get("pdtrace-go")
    w("| C offers ≥ %d req/s to the counting sink with no loss; Go binding the same from 8 "
      "goroutines | C %s req/s (%s lost), Go %s req/s (%s lost) | C %s; Go %s |" % (
          SINK_RATE, fmt(sc and sc["achieved_rps"], "%.0f"), fmt(sc and sc["lost_spans"], "%d"),
          fmt(sg and sg["achieved_rps"], "%.0f"), fmt(sg and sg["lost_spans"], "%d"),
          verdict(None if sc is None else sc["ok"]), verdict(None if sg is None else sg["ok"])))
    ac = c.get("allocs_caller")
    w("| C 0 allocations in steady state (caller thread), earlier round | %s/request "
      "(whole process %s) | %s |" % (fmt(ac, "%.3f"), fmt(c.get("allocs"), "%.2f"),
                                     verdict(None if ac is None else ac == 0)))
    w("")

    if ramp:
        w("## Throughput ramp into the OpenTelemetry Collector\n")
        w("Collector: tests/collector (OTLP/HTTP receiver → batch processor → "
          "otlphttp exporter with its sending queue, no compression) forwarding to the "
          "counting sink; spans are counted at the sink. Each step offers a fixed "
          "request rate (open loop, 1 ms ticks) for %.0f s from a fresh process, "
          "then flushes; a step passes when every span arrived, no span was dropped "
          "by the client and the client achieved ≥ 97%% of the offered rate. "
          "libpdtrace rows send zstd, the OpenTelemetry rows gzip. CPU is in cores "
          "(CPU seconds / wall seconds) of the %d available, shared with the sink "
          "and the rest of the machine.\n" % (2.0 if info["quick"] else 3.0, info["nproc"]))
        w("| row | offered req/s | achieved req/s | spans lost | of which dropped by the client (queue full) | client cores | Collector cores | machine busy | step |")
        w("|---|---|---|---|---|---|---|---|---|")
        for impl, label, _ in ROWS:
            for t in (ramp.get(impl) or {}).get("trail", []):
                w("| %s | %d | %.0f | %d | %s | %.2f | %.2f | %.0f%% | %s |" % (
                    label, t["rate"], t["achieved"], t["lost"],
                    "n/a" if t["client_dropped"] is None else t["client_dropped"],
                    t["client_cores"], t["collector_cores"], 100 * t["machine_busy"],
                    "pass" if t["ok"] else "**fail**"))
        w("")
        w("Bottleneck at the first failing step: " + "; ".join(
            "%s: %s" % (impl, bottleneck(r_, info["nproc"])) for impl, r_ in ramp.items()) + ".\n")
    for k, v in notes.items():
        if k not in ("pdtrace-python", "pdtrace-go") or "failed" in v:
            w("- note (%s): %s" % (k, v))
    w("")
    return "\n".join(L)


def bottleneck(r, nproc):
    tr = r["trail"]
    if not tr:
        return "not measured"
    last = tr[-1]
    if last["ok"]:
        return "none reached (highest step passed)"
    if last.get("machine_busy", 0) >= 0.9:
        return ("the machine (%.0f%% of all cores busy: Collector %.2f, client %.2f cores, "
                "the rest the sink and other load)" % (
                    100 * last["machine_busy"], last["collector_cores"], last["client_cores"]))
    if last["achieved"] < 0.97 * last["rate"]:
        return "the client (could not offer %d req/s: %.2f cores)" % (
            last["rate"], last["client_cores"])
    if last["collector_cores"] > 0.8:
        return "the Collector (%.2f cores)" % last["collector_cores"]
    return ("loss with cores to spare (Collector %.2f, client %.2f cores, machine %.0f%% "
            "busy): the client's exporter waits on the Collector's response latency "
            "with all its export requests in flight" % (
                last["collector_cores"], last["client_cores"], 100 * last.get("machine_busy", 0)))


if __name__ == "__main__":
    main()
