"""Integration tests against a real OpenTelemetry Collector.

Path of the spans: program --OTLP/HTTP--> collector (otlp receiver) -->
otlphttp exporter --> sink.py --> JSON lines --> otlp_assert checks.

Run (from the repository root):
  tests/integration/setup.sh            # venv with requirements.txt
  .venv/bin/python -m pytest tests/integration -v

The first run builds the collector with tests/collector/build.sh (Go needed;
cached afterwards).

Environment:
  PDTRACE_PD_DEMO   path of the pd_demo example
                    (default build/examples/c/pd_demo)
"""

import gzip
import json
import os
import random
import re
import socket
import subprocess
import time

import pytest
import zstandard

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

import otlp_assert as oa
from conftest import ROOT, post
from sink import decompress, request_to_span_dicts

PD_DEMO = os.environ.get("PDTRACE_PD_DEMO", os.path.join(ROOT, "build", "examples", "c", "pd_demo"))
PD_DEMO_TIMEOUT = 120
COMPRESSIONS = ["none", "gzip", "zstd"]
MODES = ["sequential", "concurrent", "decode-only"]


def library_version():
    path = os.path.join(ROOT, "include", "pdtrace", "version.h")
    try:
        with open(path) as f:
            m = re.search(r'PDT_VERSION_STRING\s+"([^"]+)"', f.read())
            return m.group(1) if m else None
    except OSError:
        return None


def random_traceparent(rng):
    return "00-%032x-%016x-01" % (rng.getrandbits(128) | 1, rng.getrandbits(64) | 1)


def compress(body, encoding):
    if encoding == "gzip":
        return gzip.compress(body), {"Content-Encoding": "gzip"}
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(body), {"Content-Encoding": "zstd"}
    return body, {}


# --------------------------------------------------------------------------
# Harness self-test: spans built with the official classes, through the
# collector, must reach the sink unchanged and satisfy the contract checks.


def kv(key, value):
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    else:
        v.string_value = value
    return KeyValue(key=key, value=v)


def synthetic_request(rng, traceparent, request_id, pid):
    """An ExportTraceServiceRequest holding one sequential P/D request."""
    trace_id = bytes.fromhex(traceparent.split("-")[1])
    parent = bytes.fromhex(traceparent.split("-")[2])
    ids = [rng.getrandbits(64).to_bytes(8, "big") for _ in range(3)]
    A = time.time_ns()
    Ps = A + 1_500_123
    Pe = Ps + 20_250_456
    Ds = Pe + 750_789
    F = Ds + 5_125_001
    L = F + 40_000_000
    E = L + 500_002
    out_tokens = 9
    ms = lambda ns: ns / 1e6  # noqa: E731
    summary = {
        "queue_ms": ms(Ps - A),
        "prefill_duration_ms": ms(Pe - Ps),
        "kv_transfer_overhead_ms": ms(Ds - Pe),
        "decode_ttft_ms": ms(F - Ds),
        "true_ttft_ms": ms(F - A),
        "decode_duration_ms": ms(E - Ds),
        "total_duration_ms": ms(E - A),
        "tpot_ms": ms(L - F) / (out_tokens - 1),
    }
    common = [kv(oa.PREFIX + "request_id", request_id), kv(oa.PREFIX + "connector", "nixlv2"),
              kv(oa.PREFIX + "disaggregation_enabled", True)]
    sums = [kv(oa.PREFIX + k, v) for k, v in summary.items()]
    usage = [kv("gen_ai.usage.input_tokens", 1234), kv("gen_ai.usage.output_tokens", out_tokens),
             kv("gen_ai.request.model", "test-model")]
    request = Span(trace_id=trace_id, span_id=ids[0], parent_span_id=parent, name=oa.REQUEST_SPAN,
                   kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=A, end_time_unix_nano=E,
                   attributes=common + sums + usage + [kv("http.response.status_code", 200)],
                   status=Status(code=Status.STATUS_CODE_UNSET))
    prefill = Span(trace_id=trace_id, span_id=ids[1], parent_span_id=ids[0], name=oa.PREFILL_SPAN,
                   kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=Ps, end_time_unix_nano=Pe,
                   attributes=[kv(oa.PREFIX + "request_id", request_id), kv("server.address", "127.0.0.1"),
                               kv("server.port", 8000)])
    decode = Span(trace_id=trace_id, span_id=ids[2], parent_span_id=ids[0], name=oa.DECODE_SPAN,
                  kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=Ds, end_time_unix_nano=E,
                  attributes=common + sums + usage + [kv("server.address", "127.0.0.1"), kv("server.port", 8001)],
                  events=[Span.Event(name="first_token", time_unix_nano=F, attributes=[kv("index", 0)])])
    resource = Resource(attributes=[
        kv("service.name", oa.DEFAULT_SERVICE_NAME), kv("telemetry.sdk.name", "libpdtrace"),
        kv("telemetry.sdk.language", "c"), kv("telemetry.sdk.version", "0.0.0-test"),
        kv("process.pid", pid), kv("host.name", socket.gethostname())])
    scope = InstrumentationScope(name=oa.SCOPE_NAME, version="0.0.0-test")
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=[request, prefill, decode])])])
    return req, summary


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_collector_roundtrip_python(collector, sink, compression):
    rng = random.Random(1000 + COMPRESSIONS.index(compression))
    tp = random_traceparent(rng)
    n = 3
    sent = {}
    for i in range(n):
        rid = "py-%s-%d" % (compression, i)
        req, summary = synthetic_request(rng, tp, rid, os.getpid())
        sent[rid] = (req, summary)
        body, headers = compress(req.SerializeToString(), compression)
        status, answer = post(collector.url + "/v1/traces", body, headers)
        assert status == 200, "collector answered %d: %r\n%s" % (status, answer[:500], collector.log())

    spans = sink.wait_for(lambda s: len(s) >= 3 * n, what="%d spans" % (3 * n))
    assert len(spans) == 3 * n, "expected %d spans, got %d" % (3 * n, len(spans))
    oa.check_unique_span_ids(spans)
    reqs = oa.by_request_id(oa.find_pd_requests(spans))
    assert set(reqs) == set(sent)
    for rid, r in reqs.items():
        req, summary = sent[rid]
        oa.check_pd_request(r, traceparent=tp, mode="sequential", breakdown=summary,
                            pid=os.getpid(), host_name=socket.gethostname(), scope_version="0.0.0-test")
        # Typed attributes come through unchanged.
        for sent_span in req.resource_spans[0].scope_spans[0].spans:
            got = next(s for s in spans if s["span_id"] == sent_span.span_id.hex())
            for a in sent_span.attributes:
                which = a.value.WhichOneof("value")
                want_type = {"string_value": "string", "int_value": "int", "double_value": "double",
                             "bool_value": "bool"}[which]
                assert got["attributes"][a.key] == {"type": want_type, "value": getattr(a.value, which)}, a.key
            assert got["start_time_unix_nano"] == sent_span.start_time_unix_nano
            assert got["end_time_unix_nano"] == sent_span.end_time_unix_nano
            assert len(got["events"]) == len(sent_span.events)
    # The tree: one inbound parent (not exported) with n request roots, each
    # with two children.
    tree = oa.build_tree(spans)
    assert len(tree) == n and all(len(node["children"]) == 2 for node in tree)
    # The collector forwarded protobuf, uncompressed, as configured.
    for rec in sink.requests():
        assert rec["status"] == 200 and rec["path"] == "/v1/traces"
        assert rec["content_type"] == "application/x-protobuf"
        assert not rec["content_encoding"]


def test_collector_rejects_garbage(collector, sink):
    status, _ = post(collector.url + "/v1/traces", b"\xff\xff\xff\xff", {})
    assert status == 400
    body, headers = compress(b"not a protobuf", "zstd")
    status, _ = post(collector.url + "/v1/traces", body[:-3], headers)
    assert status == 400
    assert sink.spans() == []


def test_otlp_assert_catches_violations():
    """The checks fail on a broken formula, a missing mirror and a bad parent."""
    rng = random.Random(7)
    tp = random_traceparent(rng)
    req, summary = synthetic_request(rng, tp, "neg", 42)
    def fresh():
        return oa.find_pd_requests(request_to_span_dicts(req))[0]

    oa.check_pd_request(fresh(), traceparent=tp, mode="sequential", breakdown=summary, pid=42)
    r = fresh()
    r.request["attributes"][oa.PREFIX + "true_ttft_ms"]["value"] += 0.01
    with pytest.raises(AssertionError):
        oa.check_formulas(r, mode="sequential")
    r = fresh()
    del r.decode["attributes"][oa.PREFIX + "queue_ms"]
    with pytest.raises(AssertionError):
        oa.check_mirrored(r)
    r = fresh()
    r.request["attributes"][oa.PREFIX + "queue_ms"] = {"type": "int", "value": 1}
    with pytest.raises(AssertionError):
        oa.check_duration_types(r.request)
    with pytest.raises(AssertionError):
        oa.check_structure(fresh(), traceparent=random_traceparent(rng))
    with pytest.raises(AssertionError):
        oa.check_breakdown(fresh(), dict(summary, queue_ms=summary["queue_ms"] + 1))
    with pytest.raises(AssertionError):
        oa.check_pd_request(fresh(), mode="decode-only")


# --------------------------------------------------------------------------
# pd_demo: the C example driving libpdtrace


def need_pd_demo():
    if not os.access(PD_DEMO, os.X_OK):
        pytest.skip("pd_demo not built (%s); build the examples first" % PD_DEMO)


def run_pd_demo(endpoint, compression, mode, requests, traceparent, seed):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    args = [PD_DEMO, "--requests", str(requests), "--traceparent", traceparent, "--mode", mode, "--seed", str(seed)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = proc.communicate(timeout=PD_DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail("pd_demo timed out after %ds\n%s" % (PD_DEMO_TIMEOUT, err[-4000:]))
    assert proc.returncode == 0, "pd_demo exited %d\n%s" % (proc.returncode, err[-4000:])
    printed = []
    for line in out.splitlines():
        line = line.strip()
        if line:
            printed.append(json.loads(line))
    assert len(printed) == requests, "pd_demo printed %d request lines, want %d" % (len(printed), requests)
    return proc.pid, printed


def check_pd_demo_output(sink, pid, printed, traceparent, mode):
    want = {p["request_id"]: p for p in printed}
    assert len(want) == len(printed), "pd_demo printed duplicate request ids"

    def all_there(spans):
        got = {oa.pd(s, "request_id") for s in spans if s["name"] == oa.DECODE_SPAN}
        got &= {oa.pd(s, "request_id") for s in spans if s["name"] == oa.REQUEST_SPAN}
        return set(want) <= got

    spans = sink.wait_for(all_there, what="%d requests" % len(want))
    oa.check_unique_span_ids(spans)
    reqs = oa.by_request_id(oa.find_pd_requests(spans))
    assert set(reqs) == set(want), "exported request ids differ: extra %s, missing %s" % (
        sorted(set(reqs) - set(want)), sorted(set(want) - set(reqs)))
    version = library_version()
    for rid, p in want.items():
        r = reqs[rid]
        assert r.trace_id == p["trace_id"], "%s: exported trace id %s, printed %s" % (rid, r.trace_id, p["trace_id"])
        oa.check_pd_request(r, traceparent=traceparent, mode=mode, breakdown=p["breakdown"], pid=pid,
                            host_name=socket.gethostname(), scope_version=version)
    # Nothing but these requests' spans was exported.
    mine = set()
    for r in reqs.values():
        mine.update(s["span_id"] for s in [r.request] + r.prefills + r.decodes + r.others)
    stray = [oa.span_label(s) for s in spans if s["span_id"] not in mine]
    assert not stray, "spans outside any request: %s" % stray[:10]
    return spans


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_pd_demo_through_collector(collector, sink, compression, mode):
    need_pd_demo()
    seed = 100 + 10 * COMPRESSIONS.index(compression) + MODES.index(mode)
    tp = random_traceparent(random.Random(seed))
    pid, printed = run_pd_demo(collector.url, compression, mode, 6, tp, seed)
    check_pd_demo_output(sink, pid, printed, tp, mode)


def test_pd_demo_direct_to_sink_zstd(sink):
    """libpdtrace's own bytes, zstd-compressed, accepted by the official
    decoder as they are, with no field the schema does not know."""
    need_pd_demo()
    seed = 4242
    tp = random_traceparent(random.Random(seed))
    pid, printed = run_pd_demo(sink.url, "zstd", "sequential", 4, tp, seed)
    check_pd_demo_output(sink, pid, printed, tp, "sequential")
    recs = sink.requests()
    assert recs, "no request reached the sink"
    assert sum(r.get("spans", 0) for r in recs) == len(sink.spans())
    for rec in recs:
        assert rec["status"] == 200, rec
        assert rec["path"] == "/v1/traces"
        assert rec["content_type"] == "application/x-protobuf"
        assert rec["content_encoding"] == "zstd"
        raw = os.path.join(sink.raw_dir, "%06d.bin" % rec["seq"])
        with open(raw, "rb") as f:
            body = decompress(f.read(), "zstd")
        msg = ExportTraceServiceRequest.FromString(body)
        oa.assert_no_unknown_fields(msg)
