#!/usr/bin/env python3
"""run_demo: the whole P/D tracing demo on loopback, in one command.

Starts 2 prefill simulators, 1 decode simulator and pd_proxy (each
exporting its spans as OTLP JSON lines into the work directory, or through
the OpenTelemetry Collector with --collector), drives the 6-pattern load
generator for --seconds, stops everything (tracers flush on shutdown),
then prints what the P/D coordinator dashboard shows, computed from the
exported spans (dashboard.py), with the fidelity check against the
client-measured TTFT of the load generator's CSV.

With --otlp-endpoint URL, or OTEL_EXPORTER_OTLP_ENDPOINT set (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, used as is), every process exports
OTLP/HTTP to a loopback tee (otlp_tee.py) that forwards each export
unchanged to that backend (a Collector, Jaeger, Tempo) and keeps a local
copy, from which the report is computed as usual; the report ends with how
many exports reached the backend. OTEL_EXPORTER_OTLP_HEADERS go along.

Usually started through run_demo.sh, which builds and installs what is
missing first.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.dirname(HERE)
ROOT = os.path.dirname(EXAMPLES)
sys.path.insert(0, HERE)
import dashboard  # noqa: E402

SIM = os.path.join(EXAMPLES, "sim", "vllm_sim.py")
PROXY = os.path.join(EXAMPLES, "python", "pd_proxy", "pd_proxy.py")
LOADGEN = os.path.join(EXAMPLES, "loadgen", "loadgen.py")
SINK = os.path.join(HERE, "otlp_json_sink.py")
TEE = os.path.join(HERE, "otlp_tee.py")


def traces_url(endpoint: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT semantics: v1/traces appended."""
    return endpoint.rstrip("/") + "/v1/traces"

COLLECTOR_CONFIG = """\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    timeout: 200ms
exporters:
  otlphttp:
    endpoint: {sink_url}
    encoding: json
    compression: none
    timeout: 5s
    sending_queue:
      enabled: false
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlphttp]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Every process the demo starts; stopped (TERM, then KILL) on exit."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv, env=None):
        log = open(os.path.join(self.workdir, name + ".log"), "wb")
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=e)
        self.procs.append((name, p, log))
        return p

    def stop(self, names=None, grace=10.0):
        for name, p, _ in self.procs:
            if (names is None or name in names) and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, p, log in self.procs:
            if names is not None and name not in names:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            log.close()
        self.procs = [x for x in self.procs
                      if names is not None and x[0] not in names]


def wait_http(url: str, timeout: float, proc=None, data=None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s: process exited (%s)" % (url,
                                                             proc.returncode))
        try:
            req = urllib.request.Request(url, data=data)
            if data is not None:
                req.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError("%s not ready after %.0f s: %s" % (url, timeout, last))


def collector_binary() -> str:
    build = os.path.join(ROOT, "tests", "collector", "build.sh")
    res = subprocess.run(["bash", build], capture_output=True, text=True,
                         timeout=1200)
    if res.returncode != 0:
        raise RuntimeError("tests/collector/build.sh failed:\n" +
                           res.stderr[-3000:])
    return res.stdout.strip().splitlines()[-1]


def wait_forwarded(port: int, timeout: float) -> dict:
    """The tee's counters once its queue is empty (or at the timeout)."""
    deadline = time.monotonic() + timeout
    stats = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/stats" % port,
                                        timeout=2) as r:
                stats = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            break
        if stats.get("queued") == 0 and stats["received"] == \
                stats["forwarded"] + stats["failed"]:
            break
        time.sleep(0.2)
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="load duration (default 60)")
    ap.add_argument("--connector", default="nixlv2",
                    choices=("nixlv2", "lmcache", "shared-storage",
                             "sglang"))
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--collector", action="store_true",
                    help="export OTLP/HTTP through the OpenTelemetry "
                         "Collector (tests/collector) instead of files")
    ap.add_argument("--otlp-endpoint", metavar="URL",
                    help="also send every span to this OTLP/HTTP endpoint "
                         "(base URL, v1/traces appended; default: "
                         "$OTEL_EXPORTER_OTLP_ENDPOINT)")
    ap.add_argument("--workdir", help="keep logs, spans and CSV here "
                    "(default: a new temporary directory)")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="simulator delay multiplier (default 1: the "
                         "Llama-3.1-8B timing model)")
    ap.add_argument("--rate-limit", type=float, default=0.0)
    ap.add_argument("--max-concurrent", type=int, default=0)
    ap.add_argument("--json", help="also write the dashboard numbers here")
    args = ap.parse_args(argv)

    workdir = args.workdir or tempfile.mkdtemp(prefix="pdtrace-demo-")
    os.makedirs(workdir, exist_ok=True)
    py = sys.executable
    procs = Procs(workdir)
    span_files = []
    base_env = {"OTEL_BSP_SCHEDULE_DELAY": "500",
                "PYTHONUNBUFFERED": "1"}
    forward = None
    if args.otlp_endpoint:
        forward = traces_url(args.otlp_endpoint)
    elif os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        forward = os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        forward = traces_url(os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    if forward and args.collector:
        ap.error("--collector and an OTLP endpoint exclude each other")
    # The report tells the processes apart by their service names.
    for k in ("OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER",
              "OTEL_TRACES_SAMPLER_ARG", "OTEL_SERVICE_NAME",
              "OTEL_TRACES_EXPORTER"):
        os.environ.pop(k, None)

    def export_env(name):
        if args.collector:
            return dict(base_env, OTEL_TRACES_EXPORTER="otlp",
                        OTEL_EXPORTER_OTLP_ENDPOINT=collector_url)
        if forward:
            return dict(base_env, OTEL_TRACES_EXPORTER="otlp",
                        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=tee_url,
                        OTEL_EXPORTER_OTLP_TRACES_COMPRESSION="none")
        path = os.path.join(workdir, name + ".spans.jsonl")
        span_files.append(path)
        return dict(base_env, OTEL_TRACES_EXPORTER="console",
                    PDTRACE_CONSOLE_PATH=path)

    print("run_demo: work directory %s" % workdir, flush=True)
    tee_url = ""
    tee_port = 0
    try:
        collector_url = ""
        if forward:
            tee_file = os.path.join(workdir, "tee.spans.jsonl")
            span_files.append(tee_file)
            tee_port = free_port()
            argv = [py, TEE, "--port", str(tee_port), "--forward", forward,
                    "--out", tee_file]
            ca = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE") or \
                os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE")
            if ca:
                argv += ["--cafile", ca]
            tee = procs.start("tee", argv)
            wait_http("http://127.0.0.1:%d/health" % tee_port, 20, tee)
            tee_url = "http://127.0.0.1:%d/v1/traces" % tee_port
            print("run_demo: sending spans to %s (and keeping a copy)"
                  % forward, flush=True)
        if args.collector:
            print("run_demo: building the collector (tests/collector) ...",
                  flush=True)
            binary = collector_binary()
            sink_file = os.path.join(workdir, "collector.spans.jsonl")
            span_files.append(sink_file)
            sink_port = free_port()
            sink = procs.start("sink", [py, SINK, "--port", str(sink_port),
                                        "--out", sink_file])
            wait_http("http://127.0.0.1:%d/health" % sink_port, 20, sink)
            cport = free_port()
            cfg = os.path.join(workdir, "otelcol.yaml")
            with open(cfg, "w") as f:
                f.write(COLLECTOR_CONFIG.format(
                    port=cport,
                    sink_url="http://127.0.0.1:%d" % sink_port))
            col = procs.start("collector", [binary, "--config=file:" + cfg])
            collector_url = "http://127.0.0.1:%d" % cport
            wait_http(collector_url + "/v1/traces", 60, col, data=b"{}")

        ports = {"prefill-1": free_port(), "prefill-2": free_port(),
                 "decode": free_port(), "proxy": free_port()}
        scale = ["--time-scale", str(args.time_scale)]
        for name in ("prefill-1", "prefill-2"):
            procs.start(name, [py, SIM, "--role", "prefill", "--port",
                               str(ports[name])] + scale, export_env(name))
        procs.start("decode", [py, SIM, "--role", "decode", "--port",
                               str(ports["decode"])] + scale,
                    export_env("decode"))
        purl = ["http://127.0.0.1:%d" % ports[n]
                for n in ("prefill-1", "prefill-2")]
        durl = "http://127.0.0.1:%d" % ports["decode"]
        proxy = procs.start("pd_proxy", [
            py, PROXY, "--port", str(ports["proxy"]),
            "--prefill-url", purl[0], "--prefill-url", purl[1],
            "--decode-url", durl, "--connector", args.connector,
            "--rate-limit", str(args.rate_limit),
            "--max-concurrent", str(args.max_concurrent)],
            export_env("pd_proxy"))
        for n in ("prefill-1", "prefill-2", "decode", "proxy"):
            wait_http("http://127.0.0.1:%d/health" % ports[n], 30)
        endpoint = "http://127.0.0.1:%d" % ports["proxy"]
        print("run_demo: prefill %s, decode %s, pd_proxy %s (%s); load for "
              "%.0f s" % (", ".join(purl), durl, endpoint, args.connector,
                          args.seconds), flush=True)
        csv_path = os.path.join(workdir, "loadgen.csv")
        lg = subprocess.run(
            [py, LOADGEN, "--endpoint", endpoint, "--workers",
             str(args.workers), "--seconds", str(args.seconds), "--csv",
             csv_path, "--progress-every", "10"],
            timeout=args.seconds + 300)
        if lg.returncode != 0:
            print("run_demo: loadgen failed (%d)" % lg.returncode)
            return 1
        if proxy.poll() is not None:
            print("run_demo: pd_proxy died; see %s/pd_proxy.log" % workdir)
            return 1
        # Stop the traced processes first: their tracers flush on shutdown.
        procs.stop(["pd_proxy", "prefill-1", "prefill-2", "decode"])
        if args.collector:
            time.sleep(1.0)  # the collector's batch timeout
            procs.stop(["collector"])
            procs.stop(["sink"])
        tee_stats = None
        if forward:
            tee_stats = wait_forwarded(tee_port, 20.0)
            procs.stop(["tee"])
        print()
        a = dashboard.analyze(dashboard.load_spans(span_files),
                              dashboard.read_client_csv(csv_path))
        print(dashboard.render(a))
        if tee_stats is not None:
            a["forwarded"] = tee_stats
            print("\nOTLP backend %s: %d of %d exports forwarded (%d spans)%s"
                  % (forward, tee_stats["forwarded"], tee_stats["received"],
                     tee_stats["spans"],
                     "; %d failed, last error: %s" % (
                         tee_stats["failed"], tee_stats["last_error"])
                     if tee_stats["failed"] else ""))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(a, f, indent=1, default=str)
        print("\nrun_demo: spans in %s" % ", ".join(span_files))
        return 0 if a["total_pd_requests"] else 1
    finally:
        procs.stop()


if __name__ == "__main__":
    sys.exit(main())
