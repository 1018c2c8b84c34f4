#!/usr/bin/env python3
"""The OTLP/gRPC rows of the benchmark: libpdtrace from C (bench_c_rows)
exporting the same workload to one OpenTelemetry Collector (tests/collector)
over OTLP/HTTP and over OTLP/gRPC, for each compression. Reports the
process CPU per traced request (caller and exporter threads together), the
caller's p50 and the export requests made, and writes a Markdown page.

Run by tests/bench/run_bench.sh after the other rows (it touches none of
them), or alone:

  tests/bench/bench_grpc.py --c-rows build/tests/bench/bench_c_rows \\
      --collector "$(tests/collector/build.sh)" [--quick] [--out FILE]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

CONFIG = """\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http}
      grpc:
        endpoint: 127.0.0.1:{grpc}
exporters:
  debug:
    verbosity: basic
    sampling_initial: 1
    sampling_thereafter: 1000
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"""

PROTOCOLS = ["http/protobuf", "grpc"]
COMPRESSIONS = ["none", "gzip", "zstd"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listen(port, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("bench_grpc: the collector exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("bench_grpc: the collector did not listen on %d" % port)


def run_row(c_rows, endpoint, protocol, comp, n, warm, env):
    cmd = [c_rows, "--endpoint", endpoint, "--protocol", protocol, "--compression", comp,
           "--n", str(n), "--warm", str(warm)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), res.returncode, res.stderr[-1000:]))
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--c-rows", required=True)
    ap.add_argument("--collector", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default="")
    a, _ = ap.parse_known_args()
    repeats = a.repeats or (1 if a.quick else 3)
    n, warm = (5000, 1000) if a.quick else (20000, 5000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}

    tmp = tempfile.mkdtemp(prefix="pdtrace-bench-grpc-")
    http_port, grpc_port = free_port(), free_port()
    cfg = os.path.join(tmp, "otelcol.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(http=http_port, grpc=grpc_port))
    log = open(os.path.join(tmp, "otelcol.log"), "wb")
    proc = subprocess.Popen([a.collector, "--config=file:" + cfg], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    rows = {}
    try:
        wait_listen(http_port, proc)
        wait_listen(grpc_port, proc)
        for protocol in PROTOCOLS:
            endpoint = ("http://127.0.0.1:%d/v1/traces" % http_port if protocol != "grpc"
                        else "http://127.0.0.1:%d" % grpc_port)
            for comp in COMPRESSIONS:
                runs = []
                for _ in range(repeats):
                    r = run_row(a.c_rows, endpoint, protocol, comp, n, warm, env)
                    lost = r["spans_ended"] - r["spans_exported"]
                    if lost:
                        raise RuntimeError("%s %s: %d spans not exported" % (protocol, comp, lost))
                    runs.append(r)
                med = lambda k: statistics.median(x[k] for x in runs)
                rows[(protocol, comp)] = {
                    "cpu_ns_per_req": med("cpu_ns_per_req"),
                    "caller_p50_ns": med("caller_p50_ns"),
                    "export_requests": med("export_requests"),
                    "bytes_per_span": med("bytes_sent") / max(runs[0]["spans_ended"], 1),
                }
                x = rows[(protocol, comp)]
                print("bench_grpc: %-13s %-4s cpu/req %.0f ns  caller p50 %.0f ns  %d requests"
                      % (protocol, comp, x["cpu_ns_per_req"], x["caller_p50_ns"], x["export_requests"]),
                      file=sys.stderr)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()

    lines = [
        "# Benchmark: OTLP/gRPC beside OTLP/HTTP",
        "",
        "Written by `tests/bench/bench_grpc.py` (run by `tests/bench/run_bench.sh`).",
        "libpdtrace from C (`bench_c_rows`, the workload of the C row of",
        "[benchmarks.md](benchmarks.md): one P/D request = 3 spans) exports to one",
        "OpenTelemetry Collector (`tests/collector`) on loopback, over each protocol.",
        "CPU is the whole process (caller and exporter threads), per request;",
        "median of %d run(s) of %d requests after %d warm-up requests." % (repeats, n, warm),
        "",
        "| protocol | compression | CPU per request | caller p50 | export requests | bytes per span |",
        "|---|---|---|---|---|---|",
    ]
    for protocol in PROTOCOLS:
        for comp in COMPRESSIONS:
            x = rows[(protocol, comp)]
            lines.append("| %s | %s | %.2f µs | %.2f µs | %d | %.1f |" % (
                protocol, comp, x["cpu_ns_per_req"] / 1000.0, x["caller_p50_ns"] / 1000.0,
                x["export_requests"], x["bytes_per_span"]))
    lines.append("")
    text = "\n".join(lines)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
