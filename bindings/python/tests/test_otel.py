"""One trace with the host's OpenTelemetry: real opentelemetry-sdk spans
around and inside libpdtrace requests, checked where the spans land (the
SDK's in-memory exporter, the library's console file, and a loopback
OTLP/HTTP receiver both export to)."""
import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

import pdtrace

otel_trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402

import pdtrace.otel  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SINK_PY = os.path.join(HERE, "..", "..", "..", "tests", "integration",
                       "sink.py")

INBOUND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def host():
    """A host OpenTelemetry SDK tracer (not the global one) exporting to
    memory; yields (tracer, exporter)."""
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("host-proxy"), exporter
    provider.shutdown()


def _hex(ctx):
    return "%032x" % ctx.trace_id, "%016x" % ctx.span_id


def _host_spans(exporter):
    out = {}
    for s in exporter.get_finished_spans():
        tid, sid = _hex(s.context)
        out[s.name] = {"trace_id": tid, "span_id": sid,
                       "parent": "%016x" % s.parent.span_id if s.parent
                       else ""}
    return out


def _run_pd(req):
    req.set_connector("nixlv2")
    req.send_prefill()
    req.prefill_done()
    req.send_decode()
    req.tokens(1)
    req.tokens(3)
    return req.end()


def test_one_trace_sync(host, tracer, spans):
    otel, exporter = host
    with otel.start_as_current_span("handle"):
        with tracer.request(otel=True) as req:
            rid = req.span_id
            with otel.start_as_current_span("route"):
                pass
            _run_pd(req)
        # Back to the host span once the request block is left.
        with otel.start_as_current_span("after"):
            pass
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN
    tracer.close(5)

    hs = _host_spans(exporter)
    ours = {s["name"]: s for s in spans()}
    handle = hs["handle"]
    root = ours["llm_d.pd_proxy.request"]
    assert root["span_id"] == rid
    # host span -> request span -> host span, one trace
    assert root["trace_id"] == handle["trace_id"]
    assert root["parent"] == handle["span_id"]
    assert hs["route"]["trace_id"] == handle["trace_id"]
    assert hs["route"]["parent"] == root["span_id"]
    assert hs["after"]["parent"] == handle["span_id"]
    for leg in ("llm_d.pd_proxy.prefill", "llm_d.pd_proxy.decode"):
        assert ours[leg]["trace_id"] == handle["trace_id"]
        assert ours[leg]["parent"] == root["span_id"]


def test_one_trace_async_tasks_stay_apart(host, tracer, spans):
    """Two concurrent tasks, each with its own host span and request:
    `async with` makes each request current in its own task only."""
    otel, exporter = host

    async def handle(n):
        with otel.start_as_current_span("handle-%d" % n):
            async with tracer.request(otel=True, request_id="r%d" % n) as req:
                req.set_mode(pdtrace.Mode.DECODE_ONLY, "test")
                await asyncio.sleep(0.01)
                with otel.start_as_current_span("route-%d" % n):
                    await asyncio.sleep(0.01)
                req.send_decode()
                req.tokens(1)
                req.end()

    async def main():
        await asyncio.wait_for(asyncio.gather(handle(1), handle(2)), 10)

    asyncio.run(main())
    tracer.close(5)
    hs = _host_spans(exporter)
    roots = {s["attrs"]["llm_d.pd_proxy.request_id"]: s for s in spans()
             if s["name"] == "llm_d.pd_proxy.request"}
    assert hs["handle-1"]["trace_id"] != hs["handle-2"]["trace_id"]
    for n in (1, 2):
        root = roots["r%d" % n]
        assert root["trace_id"] == hs["handle-%d" % n]["trace_id"]
        assert root["parent"] == hs["handle-%d" % n]["span_id"]
        assert hs["route-%d" % n]["trace_id"] == root["trace_id"]
        assert hs["route-%d" % n]["parent"] == root["span_id"]


def test_no_host_span_keeps_inbound_parent(host, tracer, spans):
    otel, exporter = host
    with tracer.request(INBOUND, "vendor=abc", otel=True) as req:
        sc = pdtrace.otel.span_context(req)
        assert not sc.is_remote
        assert sc.trace_flags.sampled
        assert sc.trace_state.get("vendor") == "abc"
        with otel.start_as_current_span("route") as inner:
            assert inner.get_span_context().trace_state.get("vendor") == "abc"
        req.end()
    tracer.close(5)
    root = [s for s in spans() if s["name"] == "llm_d.pd_proxy.request"][0]
    assert root["trace_id"] == INBOUND[3:35]
    assert root["parent"] == INBOUND[36:52]
    assert _host_spans(exporter)["route"]["parent"] == root["span_id"]


def test_host_span_wins_over_given_traceparent(host, tracer, spans):
    otel, _ = host
    with otel.start_as_current_span("handle") as h:
        with tracer.request(INBOUND, otel=True) as req:
            req.end()
    tracer.close(5)
    root = [s for s in spans() if s["name"] == "llm_d.pd_proxy.request"][0]
    assert (root["trace_id"], root["parent"]) == _hex(h.get_span_context())


def test_without_flag_nothing_joins(host, tracer, spans):
    otel, exporter = host
    with otel.start_as_current_span("handle") as h:
        with tracer.request() as req:
            assert otel_trace.get_current_span() is h
            with otel.start_as_current_span("route"):
                pass
            req.end()
    tracer.close(5)
    root = [s for s in spans() if s["name"] == "llm_d.pd_proxy.request"][0]
    assert root["trace_id"] != _hex(h.get_span_context())[0]
    assert root["parent"] == ""
    assert _host_spans(exporter)["route"]["parent"] == \
        _hex(h.get_span_context())[1]


def test_unsampled_host_parent_is_honoured(tracer, spans):
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel = provider.get_tracer("host-proxy")
    with otel.start_as_current_span("handle"):
        with tracer.request(otel=True) as req:
            assert not req.span(pdtrace.Leg.REQUEST).is_sampled
            assert not pdtrace.otel.span_context(req).trace_flags.sampled
            req.end()
    tracer.close(5)
    provider.shutdown()
    assert spans() == []
    assert exporter.get_finished_spans() == ()


def test_use_generic_span_and_leg_span(host, tracer, spans):
    otel, exporter = host
    with tracer.start_span("llm_d.epp.profile_handler.pick") as pick:
        with pdtrace.otel.use(pick) as cur:
            assert not cur.is_recording()
            with otel.start_as_current_span("score"):
                pass
        pick_ids = (pick.trace_id, pick.span_id)
    with tracer.request() as req:
        req.set_mode(pdtrace.Mode.DECODE_ONLY, "test")
        req.send_decode()
        dec = req.span(pdtrace.Leg.DECODE)
        ctx = pdtrace.otel.set_in_context(dec)
        with otel.start_as_current_span("stream", context=ctx):
            pass
        dec_ids = (dec.trace_id, dec.span_id)
        req.tokens(1)
        req.end()
    hs = _host_spans(exporter)
    assert (hs["score"]["trace_id"], hs["score"]["parent"]) == pick_ids
    assert (hs["stream"]["trace_id"], hs["stream"]["parent"]) == dec_ids


def test_current_parent_round_trip(host):
    otel, _ = host
    assert pdtrace.otel.current_parent() == (None, None)
    with otel.start_as_current_span("handle") as h:
        tp, ts = pdtrace.otel.current_parent()
        tid, sid, flags = pdtrace.parse_traceparent(tp)
        assert (tid.hex(), sid.hex()) == _hex(h.get_span_context())
        assert flags & 1  # sampled (newer SDKs also set the random bit)
        assert ts is None


def test_freed_request_is_refused(tracer):
    req = tracer.request(otel=True)
    req.free()
    with pytest.raises(pdtrace.InvalidArgumentError):
        pdtrace.otel.span_context(req)
    with pytest.raises(pdtrace.InvalidArgumentError):
        with pdtrace.otel.use(req):
            pass
    # nothing was left attached
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


def test_exception_in_block_restores_context(host, tracer):
    otel, _ = host
    with otel.start_as_current_span("handle") as h:
        with pytest.raises(KeyError):
            with tracer.request(otel=True):
                raise KeyError("x")
        assert otel_trace.get_current_span() is h


def _python(code, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=60)


def test_nothing_imported_without_otel(tmp_path):
    code = """
import sys, pdtrace
t = pdtrace.Tracer(exporter="console", console_path=%r,
                   ignore_environment=True)
with t.request() as r:
    r.end()
t.close(5)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
""" % str(tmp_path / "s.jsonl")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_without_opentelemetry_api(tmp_path):
    """opentelemetry made unimportable: otel=True changes nothing, and
    pdtrace.otel says what is missing."""
    code = """
import sys
sys.modules["opentelemetry"] = None   # import of it now fails
import pdtrace
t = pdtrace.Tracer(exporter="console", console_path=%r,
                   ignore_environment=True)
inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
with t.request(inbound, otel=True) as r:
    assert r.trace_id == inbound[3:35]
    r.end()
async def main():
    async with t.request(otel=True) as r:
        r.end()
import asyncio
asyncio.run(main())
t.close(5)
try:
    import pdtrace.otel
except ImportError as e:
    print("ImportError:", e)
""" % str(tmp_path / "s.jsonl")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert "ImportError: pdtrace.otel needs the opentelemetry-api" in r.stdout


def test_one_trace_at_otlp_receiver(tmp_path):
    """The way a proxy runs it: the host's SDK and libpdtrace both export
    OTLP/HTTP to one receiver, which sees one trace with the right
    parents."""
    otlp = pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.http.trace_exporter")
    pytest.importorskip("opentelemetry.proto")
    out = tmp_path / "received.jsonl"
    sink = subprocess.Popen([sys.executable, SINK_PY, "--out", str(out)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline().strip())
        base = "http://127.0.0.1:%d" % port
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(
            otlp.OTLPSpanExporter(endpoint=base + "/v1/traces", timeout=5)))
        otel = provider.get_tracer("host-proxy")
        tracer = pdtrace.Tracer(exporter="otlp", endpoint=base + "/v1/traces",
                                ignore_environment=True, compression="gzip",
                                schedule_delay_ms=50)
        with otel.start_as_current_span("handle"):
            with tracer.request(otel=True) as req:
                with otel.start_as_current_span("route"):
                    pass
                _run_pd(req)
        assert tracer.close(5) == 0
        provider.shutdown()
        deadline = time.monotonic() + 10
        got = {}
        while time.monotonic() < deadline:
            if out.exists():
                got = {}
                for line in out.read_text().splitlines():
                    s = json.loads(line)
                    got[s["name"]] = s
                if len(got) >= 5:
                    break
            time.sleep(0.05)
    finally:
        sink.terminate()
        sink.wait(10)
    assert set(got) == {"handle", "route", "llm_d.pd_proxy.request",
                        "llm_d.pd_proxy.prefill", "llm_d.pd_proxy.decode"}
    assert len({s["trace_id"] for s in got.values()}) == 1
    root = got["llm_d.pd_proxy.request"]
    assert got["handle"]["parent_span_id"] == ""
    assert root["parent_span_id"] == got["handle"]["span_id"]
    assert got["route"]["parent_span_id"] == root["span_id"]
    assert got["llm_d.pd_proxy.decode"]["parent_span_id"] == root["span_id"]
    assert root["resource"]["attributes"]["telemetry.sdk.name"]["value"] \
        == "libpdtrace"
