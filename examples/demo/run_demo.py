#!/usr/bin/env python3
"""run_demo: the whole P/D tracing demo on loopback, in one command.

Starts --prefill N prefill and --decode M decode simulators (KV link
profile --kv-link tcp|rdma), pd_proxy as a routing sidecar and, in front
of it, the gateway with its endpoint picker (--routing round-robin|
prefix-aware, selective P/D with --pd-threshold), each exporting its spans
as OTLP JSON lines into the work directory (or through the OpenTelemetry
Collector with --collector). For --seconds it drives the 6-pattern load
generator and, at the same time, multi-turn chat conversations of several
tenants, stops everything (tracers flush on shutdown), then prints what
the dashboards show, computed from the exported spans (dashboard.py): the
P/D coordinator panels, the trace check (the whole tree gateway -> EPP ->
proxy -> prefill/decode -> vLLM in one trace, for every client request),
the P/D decisions, the KV pull beside the coordinator's overhead, TTFT by
turn with the KV cache hit rate, the cost by tenant, and the fidelity
check against the client-measured TTFT of the load generator's CSV.

--compare-routing runs the same chat conversations twice, round-robin then
prefix-aware, and prints the comparison; --compare-kv-links runs the
default load over TCP then RDMA and prints the difference. --no-gateway
sends the load straight to pd_proxy (which then picks prefill and decode
round-robin itself), as earlier versions of the demo did.

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
GATEWAY = os.path.join(EXAMPLES, "gateway", "gateway.py")


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


def start_stack(args, procs, export_env, routing, kv_link, tag=""):
    """Simulators, pd_proxy and (unless --no-gateway) the gateway; returns
    the URL the load goes to."""
    py = sys.executable
    scale = ["--time-scale", str(args.time_scale)]
    sim = scale + ["--kv-link", kv_link, "--connector", args.connector]
    prefill = []
    decode = []
    for i in range(args.prefill):
        name = "%sprefill-%d" % (tag, i + 1)
        port = free_port()
        procs.start(name, [py, SIM, "--role", "prefill", "--port",
                           str(port)] + sim, export_env(name))
        prefill.append("127.0.0.1:%d" % port)
    for i in range(args.decode):
        name = "%sdecode-%d" % (tag, i + 1)
        port = free_port()
        procs.start(name, [py, SIM, "--role", "decode", "--port",
                           str(port)] + sim, export_env(name))
        decode.append("127.0.0.1:%d" % port)
    pport = free_port()
    argv = [py, PROXY, "--port", str(pport), "--connector", args.connector,
            "--rate-limit", str(args.rate_limit),
            "--max-concurrent", str(args.max_concurrent),
            "--tenants", ",".join(TENANTS), "--no-access-log"]
    if args.no_gateway:
        for hp in prefill:
            argv += ["--prefill-url", "http://" + hp]
        for hp in decode:
            argv += ["--decode-url", "http://" + hp]
    else:
        # Routing sidecar: the gateway names prefill and decode per request.
        argv += ["--allowed-prefillers", ",".join(prefill),
                 "--allowed-decoders", ",".join(decode)]
    procs.start(tag + "pd_proxy", argv, export_env(tag + "pd_proxy"))
    for hp in prefill + decode + ["127.0.0.1:%d" % pport]:
        wait_http("http://%s/health" % hp, 30)
    url = "http://127.0.0.1:%d" % pport
    if not args.no_gateway:
        gport = free_port()
        gw = procs.start(tag + "gateway", [
            py, GATEWAY, "--port", str(gport), "--proxy-url", url,
            "--decode", ",".join(decode), "--prefill", ",".join(prefill),
            "--routing", routing, "--pd-threshold", str(args.pd_threshold)],
            export_env(tag + "gateway"))
        url = "http://127.0.0.1:%d" % gport
        wait_http(url + "/health", 30, gw)
    print("run_demo: %dP%dD, connector %s, KV link %s, %s; load at %s" % (
        args.prefill, args.decode, args.connector, kv_link,
        "direct to pd_proxy" if args.no_gateway else
        "gateway routing " + routing, url), flush=True)
    return url


TENANTS = ("team-search", "team-chat", "batch-eval")


def run_loads(args, url, workdir, tag, patterns=True, chat=True,
              seconds=None, chat_all_turns=False):
    """The load generators, at the same time; returns their CSV paths."""
    py = sys.executable
    seconds = args.seconds if seconds is None else seconds
    jobs = []
    csvs = []
    if patterns:
        path = os.path.join(workdir, tag + "loadgen.csv")
        csvs.append(path)
        jobs.append(subprocess.Popen(
            [py, LOADGEN, "--endpoint", url, "--workers", str(args.workers),
             "--seconds", str(seconds), "--csv", path,
             "--progress-every", "10", "--tenants", ",".join(TENANTS)]))
    if chat:
        path = os.path.join(workdir, tag + "chat.csv")
        csvs.append(path)
        argv = [py, LOADGEN, "--mode", "chat", "--endpoint", url,
                "--conversations", str(args.conversations), "--turns",
                str(args.turns), "--seconds", str(seconds), "--csv", path,
                "--seed", str(args.seed), "--concurrency",
                str(args.chat_concurrency), "--tenants", ",".join(TENANTS),
                "--progress-every", "10"]
        if chat_all_turns:
            argv.append("--all-turns")
        jobs.append(subprocess.Popen(argv))
    ok = True
    for j in jobs:
        try:
            ok = j.wait(timeout=seconds + 300) == 0 and ok
        except subprocess.TimeoutExpired:
            j.kill()
            j.wait(5)
            ok = False
    return csvs if ok else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=None,
                    help="load duration (default 60; 30 per run with "
                         "--compare-kv-links)")
    ap.add_argument("--connector", default="nixlv2",
                    choices=("nixlv2", "lmcache", "shared-storage",
                             "sglang"))
    ap.add_argument("--prefill", type=int, default=2, metavar="N",
                    help="prefill simulators (default 2)")
    ap.add_argument("--decode", type=int, default=1, metavar="M",
                    help="decode simulators (default 1)")
    ap.add_argument("--routing", choices=("round-robin", "prefix-aware"),
                    default="prefix-aware",
                    help="the gateway's routing (default prefix-aware)")
    ap.add_argument("--kv-link", choices=("tcp", "rdma"), default="tcp",
                    help="the simulators' KV transfer profile (default tcp: "
                         "5-20 ms; rdma: 2-8 ms)")
    ap.add_argument("--pd-threshold", type=int, default=512,
                    help="the gateway sends a request decode-only when "
                         "fewer prompt bytes than this are uncached on the "
                         "decode server (default 512; 0: always P/D)")
    ap.add_argument("--no-gateway", action="store_true",
                    help="load straight to pd_proxy, without the gateway")
    ap.add_argument("--compare-routing", action="store_true",
                    help="run the same chat conversations with round-robin "
                         "and with prefix-aware routing and compare")
    ap.add_argument("--compare-kv-links", action="store_true",
                    help="run the load over TCP and over RDMA and compare")
    ap.add_argument("--conversations", type=int, default=None,
                    help="chat conversations (default 12; 24 with "
                         "--compare-routing)")
    ap.add_argument("--turns", type=int, default=None,
                    help="turns per conversation (default 5; 8 with "
                         "--compare-routing)")
    ap.add_argument("--chat-concurrency", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7,
                    help="seed of the chat conversations' text")
    ap.add_argument("--price-per-1k", type=float, default=0.0,
                    help="price per 1000 tokens for the tenant table")
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
    if args.prefill < 1 or args.decode < 1 or args.prefill > 8 or \
            args.decode > 8:
        ap.error("--prefill and --decode must be between 1 and 8")
    if (args.turns is not None and args.turns < 1) or args.chat_concurrency < 1 or args.workers < 1 or \
            (args.conversations is not None and args.conversations < 1):
        ap.error("--turns, --conversations, --chat-concurrency and "
                 "--workers must be at least 1")
    if args.pd_threshold < 0 or args.price_per_1k < 0 or \
            args.time_scale <= 0:
        ap.error("--pd-threshold and --price-per-1k must not be negative, "
                 "--time-scale must be positive")
    if args.compare_routing and args.compare_kv_links:
        ap.error("--compare-routing and --compare-kv-links are separate "
                 "runs: give one of them")
    if args.compare_routing and args.no_gateway:
        ap.error("--compare-routing needs the gateway (routing is its job)")
    if args.seconds is None:
        args.seconds = 30.0 if args.compare_kv_links else 60.0
    if args.seconds <= 0:
        ap.error("--seconds must be positive")
    if args.conversations is None:
        args.conversations = 24 if args.compare_routing else 12
    if args.turns is None:
        args.turns = 8 if args.compare_routing else 5

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
    if (forward or args.collector) and (args.compare_routing or
                                        args.compare_kv_links):
        ap.error("--compare-routing and --compare-kv-links read each run's "
                 "span files: not with --collector or an OTLP endpoint")
    # The report tells the processes apart by their service names.
    for k in ("OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER",
              "OTEL_TRACES_SAMPLER_ARG", "OTEL_SERVICE_NAME",
              "OTEL_TRACES_EXPORTER"):
        os.environ.pop(k, None)
    run_files = {}

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
        tag = name.split(".", 1)[0] + "." if "." in name else ""
        run_files.setdefault(tag, []).append(path)
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

        def one_run(tag, routing, kv_link, **load):
            names_before = {n for n, _, _ in procs.procs}
            url = start_stack(args, procs, export_env, routing, kv_link,
                              tag)
            csvs = run_loads(args, url, workdir, tag, **load)
            mine = [n for n, _, _ in procs.procs if n not in names_before]
            dead = [n for n, p, _ in procs.procs if n in mine and
                    p.poll() is not None]
            # Stop the traced processes: their tracers flush on shutdown.
            procs.stop(mine)
            if csvs is None or dead:
                print("run_demo: %s failed%s; logs in %s" % (
                    "load" if csvs is None else "a process",
                    " (%s died)" % ", ".join(dead) if dead else "",
                    workdir))
                return None
            files = span_files if not tag else run_files.get(tag, [])
            client = dashboard.read_client_csvs(csvs)
            a = dashboard.analyze(dashboard.load_spans(files), client)
            chat_csv = [c for c in csvs if c.endswith("chat.csv")]
            if chat_csv:
                a["client"] = dashboard.client_ttfts(
                    dashboard.read_client_csvs(chat_csv))
            return a

        if args.compare_routing:
            runs = {}
            for routing in ("round-robin", "prefix-aware"):
                a = one_run(routing + ".", routing, args.kv_link,
                            patterns=False, chat=True,
                            seconds=args.seconds, chat_all_turns=True)
                if a is None or "turns" not in a:
                    return 1
                runs[routing] = a
                print(dashboard.render(a))
                print(flush=True)
            print(dashboard.compare_routing(runs["round-robin"],
                                            runs["prefix-aware"]))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(runs, f, indent=1, default=str)
            print("\nrun_demo: spans and CSVs in %s" % workdir)
            return 0
        if args.compare_kv_links:
            runs = {}
            for link in ("tcp", "rdma"):
                a = one_run(link + ".", args.routing, link)
                if a is None:
                    return 1
                runs[link] = a
                print(dashboard.render(a, args.price_per_1k))
                print(flush=True)
            print(dashboard.compare_kv(runs))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(runs, f, indent=1, default=str)
            print("\nrun_demo: spans and CSVs in %s" % workdir)
            return 0

        a = one_run("", args.routing, args.kv_link)
        if a is None:
            return 1
        if args.collector:
            time.sleep(1.0)  # the collector's batch timeout
            procs.stop(["collector"])
            procs.stop(["sink"])
        tee_stats = None
        if forward:
            tee_stats = wait_forwarded(tee_port, 20.0)
            procs.stop(["tee"])
        if args.collector or forward:
            # Spans arrived through the collector or the tee: read again.
            client = a.get("client")
            csvs = [os.path.join(workdir, n) for n in ("loadgen.csv",
                                                       "chat.csv")]
            a = dashboard.analyze(dashboard.load_spans(span_files),
                                  dashboard.read_client_csvs(csvs))
            if client:
                a["client"] = client
        print()
        print(dashboard.render(a, args.price_per_1k))
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
