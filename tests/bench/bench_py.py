"""The Python rows of run_bench.sh: one traced P/D request with
opentelemetry-sdk (--impl otel) or with the libpdtrace binding
(--impl pdtrace), exported over OTLP/HTTP protobuf to a loopback sink.

The OpenTelemetry version builds what libpdtrace builds: a SERVER request
span under the inbound traceparent, prefill and decode CLIENT spans as its
children, traceparent injection for both legs, the eight breakdown
durations computed from the stage marks and written on the request and
decode spans, and the same attributes with the same types.

Prints one JSON line. Allocation counting (--count-allocs) needs the
malloc_count shim preloaded and PYTHONMALLOC=malloc, so that every Python
object allocation is a malloc call; it then reports malloc calls per
request in the whole process (all threads) and on the caller's thread.
"""

import argparse
import ctypes
import json
import os
import resource
import socket
import sys
import time
import uuid

INBOUND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
P = "llm_d.pd_proxy."


def make_otel(a):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    import opentelemetry.sdk

    comp = {"none": Compression.NoCompression, "gzip": Compression.Gzip}.get(a.compression)
    if comp is None:
        sys.exit("opentelemetry-exporter-otlp-proto-http supports none, gzip and deflate only")
    res = Resource({
        "service.name": "llm-d-pd-proxy",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": "1.45.2",
        "process.pid": os.getpid(),
        "host.name": socket.gethostname(),
    })
    provider = TracerProvider(resource=res)
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=a.endpoint, compression=comp),
        max_queue_size=a.queue, max_export_batch_size=a.batch,
        schedule_delay_millis=a.delay_ms))
    tracer = provider.get_tracer("libpdtrace-bench", "0.1.0")
    prop = TraceContextTextMapPropagator()
    now = time.time_ns
    server, client = SpanKind.SERVER, SpanKind.CLIENT

    def one():
        t_a = now()
        ctx = prop.extract({"traceparent": INBOUND})
        req = tracer.start_span("llm_d.pd_proxy.request", context=ctx, kind=server,
                                start_time=t_a)
        rctx = set_span_in_context(req, ctx)
        rid = str(uuid.uuid4())
        req.set_attributes({
            "http.request.method": "POST",
            "url.path": "/v1/chat/completions",
            "gen_ai.request.model": "llama-3.1-8b",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.max_tokens": 128,
            "gen_ai.request.stream": True,
        })
        t_ps = now()
        pre = tracer.start_span("llm_d.pd_proxy.prefill", context=rctx, kind=client,
                                start_time=t_ps)
        hp = {}
        prop.inject(hp, context=set_span_in_context(pre, rctx))
        hp["x-request-id"] = rid
        t_pe = now()
        pre.set_attributes({"server.address": "10.0.0.1", "server.port": 8000,
                            "http.response.status_code": 200})
        pre.end(end_time=t_pe)
        req.set_attributes({P + "prefill_target": "10.0.0.1:8000",
                            P + "prefill.status_code": 200})
        t_ds = now()
        dec = tracer.start_span("llm_d.pd_proxy.decode", context=rctx, kind=client,
                                start_time=t_ds)
        hd = {}
        prop.inject(hd, context=set_span_in_context(dec, rctx))
        hd["x-request-id"] = rid
        t_f = now()
        t_l = now()
        dec.set_attributes({"server.address": "10.0.0.2", "server.port": 8000,
                            "http.response.status_code": 200})
        req.set_attributes({P + "decode_target": "10.0.0.2:8000",
                            P + "decode.status_code": 200,
                            "http.response.status_code": 200})
        out_tokens = 128
        t_e = now()
        bd = {
            P + "queue_ms": (t_ps - t_a) / 1e6,
            P + "prefill_duration_ms": (t_pe - t_ps) / 1e6,
            P + "kv_transfer_overhead_ms": (t_ds - t_pe) / 1e6,
            P + "decode_ttft_ms": (t_f - t_ds) / 1e6,
            P + "true_ttft_ms": (t_f - t_a) / 1e6,
            P + "decode_duration_ms": (t_e - t_ds) / 1e6,
            P + "total_duration_ms": (t_e - t_a) / 1e6,
            P + "tpot_ms": (t_l - t_f) / 1e6 / (out_tokens - 1),
            P + "request_id": rid,
        }
        req.set_attributes(bd)
        req.set_attributes({
            P + "connector": "nixlv2",
            P + "disaggregation_enabled": True,
            P + "concurrent_pd": False,
            "gen_ai.usage.input_tokens": 1024,
            "gen_ai.usage.output_tokens": out_tokens,
            "gen_ai.usage.cache_read.input_tokens": 512,
        })
        dec.set_attributes(bd)
        dec.set_attribute("gen_ai.usage.output_tokens", out_tokens)
        dec.end(end_time=t_e)
        req.end(end_time=t_e)

    def flush():
        provider.force_flush(30000)

    def close():
        provider.shutdown()

    return one, flush, close, lambda: {"otel_sdk_version": opentelemetry.sdk.version.__version__}


def make_pdtrace(a):
    import pdtrace

    t = pdtrace.Tracer(exporter="otlp", endpoint=a.endpoint, compression=a.compression,
                       max_queue_size=a.queue, max_export_batch_size=a.batch,
                       schedule_delay_ms=a.delay_ms, ignore_environment=True)
    Leg = pdtrace.Leg
    leg_p, leg_d = Leg.PREFILL, Leg.DECODE

    def one():
        r = t.request(INBOUND)
        r.set_connector("nixlv2")
        r.set_str("http.request.method", "POST")
        r.set_str("url.path", "/v1/chat/completions")
        r.set_str("gen_ai.request.model", "llama-3.1-8b")
        r.set_str("gen_ai.operation.name", "chat")
        r.set_int("gen_ai.request.max_tokens", 128)
        r.set_bool("gen_ai.request.stream", True)
        r.headers(leg_p)
        r.prefill_sent()
        r.prefill_done()
        r.set_leg(leg_p, "10.0.0.1:8000", 200)
        r.headers(leg_d)
        r.decode_sent()
        r.first_token()
        r.last_token()
        r.set_leg(leg_d, "10.0.0.2:8000", 200)
        r.set_usage(1024, 128, 512)
        r.set_response(200)
        r.end()
        r.free()

    def flush():
        t.flush(30.0)

    def close():
        t.close(10.0)

    def extra():
        st = t.stats()
        return {"dropped_queue_full": st.dropped_queue_full,
                "spans_exported": st.spans_exported,
                "binding_version": pdtrace.version()}

    return one, flush, close, extra


def run_rate(a, one, flush, close, extra):
    """Offers a.rate requests/s for a.seconds (open loop, 1 ms ticks)."""
    clock = time.monotonic
    t0 = clock()
    c0 = time.process_time_ns()
    sent = late = 0
    while True:
        el = clock() - t0
        if el >= a.seconds:
            break
        due = int(el * a.rate)
        if due > sent + a.rate // 100:
            late += 1
        while sent < due:
            one()
            sent += 1
        time.sleep(0.0005)
    wall = clock() - t0
    flush()
    res = {"impl": "%s-python" % a.impl, "mode": "rate", "rate": a.rate,
           "seconds": wall, "busy_s": clock() - t0, "requests": sent, "achieved_rps": sent / wall,
           "late_ticks": late,
           "cpu_ns_per_req": (time.process_time_ns() - c0) / max(sent, 1),
           "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    res.update(extra())
    close()
    print(json.dumps(res), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["otel", "pdtrace"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--compression", default="gzip")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--warm", type=int, default=1000)
    ap.add_argument("--flush-every", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=1536)
    ap.add_argument("--queue", type=int, default=65536)
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--count-allocs", action="store_true")
    ap.add_argument("--rate", type=int, default=0,
                    help="rate mode: offered requests/s for --seconds")
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()

    one, flush, close, extra = (make_otel if a.impl == "otel" else make_pdtrace)(a)
    counter = None
    if a.count_allocs:
        libc = ctypes.CDLL(None)
        try:
            counter = (libc.bench_malloc_count_all, libc.bench_malloc_count_thread)
        except AttributeError:
            sys.exit("--count-allocs needs LD_PRELOAD=malloc_count.so")
        for f in counter:
            f.restype = ctypes.c_uint64
        if os.environ.get("PYTHONMALLOC") != "malloc":
            sys.exit("--count-allocs needs PYTHONMALLOC=malloc")

    if a.rate > 0:
        run_rate(a, one, flush, close, extra)
        return
    for i in range(a.warm):
        one()
        if (i + 1) % a.flush_every == 0:
            flush()
    flush()
    n = a.n
    lat = [0] * n
    clock = time.perf_counter_ns
    c0 = time.process_time_ns()
    m0 = (counter[0](), counter[1]()) if counter else (0, 0)
    w0 = clock()
    for i in range(n):
        s = clock()
        one()
        lat[i] = clock() - s
        if (i + 1) % a.flush_every == 0:
            flush()
    flush()
    w1 = clock()
    m1 = (counter[0](), counter[1]()) if counter else (0, 0)
    c1 = time.process_time_ns()
    lat.sort()
    res = {
        "impl": "%s-python" % a.impl,
        "n": n,
        "compression": a.compression,
        "caller_mean_ns": sum(lat) / n,
        "caller_p50_ns": lat[n // 2],
        "caller_p99_ns": lat[int(n * 0.99)],
        "cpu_ns_per_req": (c1 - c0) / n,
        "wall_s": (w1 - w0) / 1e9,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "python": sys.version.split()[0],
    }
    if counter:
        res["allocs_per_req"] = (m1[0] - m0[0]) / n
        res["allocs_caller_per_req"] = (m1[1] - m0[1]) / n
        res["allocs_how"] = "malloc calls (PYTHONMALLOC=malloc, LD_PRELOAD counter), all threads"
    res.update(extra())
    close()
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
