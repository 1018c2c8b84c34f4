"""P/D requests: marks, breakdown, attributes, legs, propagation, misuse."""
import time

import pytest

import pdtrace
from pdtrace import Leg, Mark, Mode

P = "llm_d.pd_proxy."
INBOUND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def by_name(spans, name):
    return [s for s in spans if s["name"] == name]


def test_sequential_flow_breakdown_and_export(tracer, spans):
    a = pdtrace.now_ns() - 50_000_000
    r = tracer.request(INBOUND, "vendor=abc", a, request_id="req-1",
                       connector="nixlv2")
    ph = r.headers(Leg.PREFILL)
    r.prefill_sent(a + 2_000_000)
    r.prefill_done(a + 12_000_000)
    r.set_leg(Leg.PREFILL, "http://127.0.0.1:8100", 200)
    dh = r.headers(Leg.DECODE)
    r.decode_sent(a + 13_000_000)
    r.tokens(1, a + 20_000_000)
    r.tokens(9, a + 29_000_000)
    r.set_leg(Leg.DECODE, "127.0.0.1:8200", 200)
    r.set_usage(100, 10, 40)
    r.set_response(200)
    bd = r.end(a + 30_000_000)
    assert isinstance(bd, pdtrace.Breakdown)
    assert bd.queue_ms == pytest.approx(2.0)
    assert bd.prefill_ms == pytest.approx(10.0)
    assert bd.kv_transfer_overhead_ms == pytest.approx(1.0)
    assert bd.decode_ttft_ms == pytest.approx(7.0)
    assert bd.true_ttft_ms == pytest.approx(20.0)
    assert bd.true_ttft_ms == pytest.approx(
        bd.queue_ms + bd.prefill_ms + bd.kv_transfer_overhead_ms
        + bd.decode_ttft_ms)
    assert bd.decode_duration_ms == pytest.approx(17.0)
    assert bd.total_ms == pytest.approx(30.0)
    assert bd.tpot_ms == pytest.approx(1.0)
    assert bd.output_tokens == 10
    assert bd.mode is Mode.SEQUENTIAL
    assert bd.error is False and bd.sampled is True

    assert ph["x-request-id"] == dh["x-request-id"] == "req-1" == r.id
    assert ph["tracestate"] == "vendor=abc"
    tid = "0af7651916cd43dd8448eb211c80319c"
    assert r.trace_id == tid
    assert ph["traceparent"].split("-")[1] == tid
    r.free()

    tracer.flush(5)
    got = spans()
    root = by_name(got, P + "request")[0]
    pre = by_name(got, P + "prefill")[0]
    dec = by_name(got, P + "decode")[0]
    assert root["parent"] == "b7ad6b7169203331"
    assert pre["parent"] == dec["parent"] == root["span_id"]
    assert ph["traceparent"].split("-")[2] == pre["span_id"]
    assert dh["traceparent"].split("-")[2] == dec["span_id"]
    for s in (root, dec):
        assert s["attrs"][P + "true_ttft_ms"] == pytest.approx(20.0)
    assert root["attrs"][P + "request_id"] == "req-1"
    assert root["attrs"][P + "connector"] == "nixlv2"
    assert root["attrs"]["gen_ai.usage.input_tokens"] == 100
    assert root["attrs"]["gen_ai.usage.cache_read.input_tokens"] == 40
    assert root["attrs"]["http.response.status_code"] == 200
    assert pre["attrs"]["server.port"] == 8100
    assert root["trace_state"] == "vendor=abc"


def test_concurrent_mode(tracer):
    r = tracer.request(connector="sglang")
    r.set_mode(Mode.CONCURRENT)
    r.prefill_sent()
    r.decode_sent()
    r.prefill_done()
    r.tokens(1)
    bd = r.end()
    assert bd.mode is Mode.CONCURRENT
    assert bd.kv_transfer_overhead_ms is None
    assert bd.true_ttft_ms is not None
    r.free()


def test_decode_only_mode(tracer, spans):
    with tracer.request() as r:
        r.set_mode(Mode.DECODE_ONLY, "short prompt")
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.prefill_sent()
        r.decode_sent()
        r.first_token()
        r.last_token()
        bd = r.end()
    assert bd.prefill_ms is None and bd.queue_ms is None
    assert bd.mode is Mode.DECODE_ONLY
    assert bd.tpot_ms is None  # output tokens unknown
    tracer.flush(5)
    got = spans()
    assert not by_name(got, P + "prefill")
    root = by_name(got, P + "request")[0]
    assert root["attrs"][P + "disaggregation_enabled"] is False
    assert root["attrs"][P + "reason"] == "short prompt"


def test_missing_marks_are_none_never_zero(tracer):
    with tracer.request() as r:
        bd = r.end()
    assert bd.total_ms is not None
    for f in ("queue_ms", "prefill_ms", "kv_transfer_overhead_ms",
              "decode_ttft_ms", "true_ttft_ms", "decode_duration_ms",
              "tpot_ms", "output_tokens"):
        assert getattr(bd, f) is None, f


def test_generic_mark_and_named_marks(tracer):
    with tracer.request() as r:
        r.mark(Mark.PREFILL_SENT)
        r.mark(Mark.PREFILL_DONE)
        r.mark(Mark.DECODE_SENT)
        r.mark(Mark.FIRST_TOKEN)
        r.mark(Mark.LAST_TOKEN)
        assert r.end().true_ttft_ms is not None


def test_prefill_retry(tracer, spans):
    with tracer.request() as r:
        r.prefill_sent()
        r.prefill_done()
        r.set_leg(Leg.PREFILL, "127.0.0.1:1", 503, "upstream_unavailable")
        r.prefill_sent()
        r.prefill_done()
        r.set_leg(Leg.PREFILL, "127.0.0.1:2", 200)
        r.decode_sent()
        r.tokens(1)
        r.end()
    tracer.flush(5)
    assert len(by_name(spans(), P + "prefill")) == 2


@pytest.mark.parametrize("value, kind", [
    ("s", "str"), (True, "bool"), (False, "bool"), (7, "int"),
    (2.5, "float"), (-(2 ** 63), "int"),
])
def test_typed_attributes(tracer, spans, value, kind):
    with tracer.request() as r:
        r.set("k", value)
        r.end()
    tracer.flush(5)
    got = by_name(spans(), P + "request")[0]["attrs"]["k"]
    assert type(got).__name__ == kind and got == value


def test_typed_setters_and_subclasses(tracer, spans):
    import enum

    class Color(str, enum.Enum):
        RED = "red"

    with tracer.request() as r:
        r.set_str("a", "x")
        r.set_int("b", 3)
        r.set_float("c", 1.0)
        r.set_bool("d", 1)
        r.set_attributes({"e": Color.RED, "f": pdtrace.Leg.DECODE})
        r.end()
    tracer.flush(5)
    attrs = by_name(spans(), P + "request")[0]["attrs"]
    assert attrs["a"] == "x" and attrs["b"] == 3
    assert attrs["c"] == 1.0 and attrs["d"] is True
    assert attrs["e"] == "red" and attrs["f"] == 2


def test_unsupported_attribute_type(tracer):
    with tracer.request() as r:
        with pytest.raises(TypeError):
            r.set("k", [1, 2])
        with pytest.raises(TypeError):
            r.set("k", None)
        with pytest.raises(OverflowError):
            r.set("k", 2 ** 64)


def test_empty_key_is_invalid(tracer):
    with tracer.request() as r:
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set("", 1)


def test_invalid_utf8_is_repaired(tracer, spans):
    with tracer.request() as r:
        r.set("k", "a\udcffb")
        r.end()
    tracer.flush(5)
    v = by_name(spans(), P + "request")[0]["attrs"]["k"]
    assert v.startswith("a") and v.endswith("b")
    assert tracer.stats().strings_sanitized >= 1


def test_out_of_order_marks(tracer):
    with tracer.request() as r:
        with pytest.raises(pdtrace.StateError):
            r.prefill_done()
        with pytest.raises(pdtrace.StateError):
            r.tokens(1)
        r.prefill_sent()
        with pytest.raises(pdtrace.StateError):
            r.prefill_sent()
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.mark(99)
        with pytest.raises(pdtrace.StateError):
            r.set_mode(Mode.CONCURRENT)


def test_marks_out_of_range(tracer):
    a = pdtrace.now_ns()
    with tracer.request(arrival_ns=a) as r:
        with pytest.raises(pdtrace.RangeError):
            r.prefill_sent(a - 1_000_000)
        with pytest.raises(pdtrace.RangeError):
            r.prefill_sent(pdtrace.now_ns() + 60 * 10 ** 9)
        r.prefill_sent(a + 1)


def test_arrival_in_future(tracer):
    with pytest.raises(pdtrace.RangeError):
        tracer.request(arrival_ns=pdtrace.now_ns() + 60 * 10 ** 9)


def test_end_clamped_carries_breakdown(tracer):
    a = pdtrace.now_ns() - 10_000_000
    r = tracer.request(arrival_ns=a)
    r.prefill_sent(a + 5_000_000)
    with pytest.raises(pdtrace.RangeError) as ei:
        r.end(a + 1_000_000)
    assert ei.value.breakdown is not None
    assert ei.value.breakdown.total_ms == pytest.approx(5.0)
    with pytest.raises(pdtrace.StateError):
        r.end()
    r.free()


def test_calls_after_end(tracer):
    r = tracer.request()
    r.end()
    for call in (lambda: r.end(), lambda: r.prefill_sent(),
                 lambda: r.set("k", 1), lambda: r.set_id("x"),
                 lambda: r.set_connector("x"), lambda: r.set_usage(1, 1, 1),
                 lambda: r.set_leg(Leg.DECODE, None, 200),
                 lambda: r.set_response(200)):
        with pytest.raises(pdtrace.StateError):
            call()
    # Headers and ids stay available after end.
    assert r.headers(Leg.DECODE)["traceparent"]
    assert len(r.span_id) == 16
    r.free()


def test_use_after_free(tracer):
    r = tracer.request()
    r.free()
    r.free()  # idempotent
    assert r.id is None
    with pytest.raises(pdtrace.InvalidArgumentError):
        r.prefill_sent()
    with pytest.raises(pdtrace.InvalidArgumentError):
        r.end()
    with pytest.raises(pdtrace.InvalidArgumentError):
        r.headers(Leg.PREFILL)
    with pytest.raises(pdtrace.InvalidArgumentError):
        r.trace_id
    assert r.span(Leg.REQUEST) is None


def test_invalid_arguments(tracer):
    with tracer.request() as r:
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_id("")
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_connector("")
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_mode(7)
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_leg(Leg.REQUEST, None, 200)
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.headers(9)
        with pytest.raises(OverflowError):
            r.tokens(-1)


def test_abandoned_on_context_exit(tracer, spans):
    with pytest.raises(KeyError):
        with tracer.request() as r:
            r.prefill_sent()
            raise KeyError("client went away")
    tracer.flush(5)
    root = by_name(spans(), P + "request")[0]
    assert root["attrs"]["error.type"] == "abandoned"
    assert root["status"].get("code") == 2


def test_abandoned_on_gc(tracer, spans):
    import gc
    r = tracer.request(request_id="lost")
    del r
    gc.collect()
    tracer.flush(5)
    root = by_name(spans(), P + "request")[0]
    assert root["attrs"]["error.type"] == "abandoned"


def test_leg_failure_marks_error(tracer, spans):
    with tracer.request() as r:
        r.prefill_sent()
        r.prefill_done()
        r.set_leg(Leg.PREFILL, "127.0.0.1:8100", 0, "connection_refused")
        r.set_response(502, "upstream_unavailable")
        bd = r.end()
    assert bd.error is True
    tracer.flush(5)
    got = spans()
    root = by_name(got, P + "request")[0]
    pre = by_name(got, P + "prefill")[0]
    assert root["status"]["code"] == 2 and pre["status"]["code"] == 2
    assert pre["attrs"]["error.type"] == "connection_refused"
    assert root["attrs"]["http.response.status_code"] == 502


def test_leg_spans_are_borrowed(tracer, spans):
    r = tracer.request()
    assert r.span(Leg.PREFILL) is None
    assert r.span(Leg.DECODE) is None
    root = r.span(Leg.REQUEST)
    assert root is r.span(Leg.REQUEST)
    assert root.span_id == r.span_id and root.trace_id == r.trace_id
    r.set_mode(Mode.DECODE_ONLY)
    r.decode_sent()
    dec = r.span(Leg.DECODE)
    dec.set("upstream.model", "m")
    dec.add_event("chunk", attributes={"n": 1})
    with pytest.raises(pdtrace.StateError):
        dec.end()  # a request's span is ended by Request.end()
    dec.free()  # only detaches
    r.tokens(1)
    r.end()
    r.free()
    with pytest.raises(pdtrace.InvalidArgumentError):
        root.set("k", 1)
    tracer.flush(5)
    d = by_name(spans(), P + "decode")[0]
    assert d["attrs"]["upstream.model"] == "m"
    assert d["events"][0]["name"] == "chunk"


def test_usage_none_means_unknown(tracer, spans):
    with tracer.request() as r:
        r.set_usage(None, 5, None)
        r.end()
    tracer.flush(5)
    attrs = by_name(spans(), P + "request")[0]["attrs"]
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert "gen_ai.usage.input_tokens" not in attrs


def test_generated_request_id(tracer):
    with tracer.request() as r:
        assert r.id and len(r.id) >= 16
        h = r.headers(Leg.PREFILL)
        assert h["x-request-id"] == r.id
        assert "tracestate" not in h


def test_malformed_inbound_traceparent_starts_new_trace(tracer):
    with tracer.request("garbage") as r:
        assert len(r.trace_id) == 32


def test_marks_take_time_monotonic_ns(tracer):
    a = time.monotonic_ns()
    with tracer.request(arrival_ns=a) as r:
        r.prefill_sent(time.monotonic_ns())
        r.prefill_done(time.monotonic_ns())
        r.decode_sent(time.monotonic_ns())
        r.tokens(1, time.monotonic_ns())
        bd = r.end(time.monotonic_ns())
    assert 0 < bd.true_ttft_ms < 1000


def test_tenant(make_tracer, spans):
    t = make_tracer(metrics_tenants="team-a, team-b")
    with t.request(tenant="team-a", connector="nixlv2", model="m") as r:
        r.set_usage(100, 7, -1)
        r.end()
    r = t.request(connector="nixlv2", model="m")
    r.set_tenant("zeta")  # not configured: "other"
    r.end()
    r.free()
    with pytest.raises(pdtrace.InvalidArgumentError):
        t.request(tenant="a\0b")
    with t.request(connector="nixlv2", model="m") as r:
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_tenant("")
        r.end()
        with pytest.raises(pdtrace.StateError):
            r.set_tenant("team-b")
    text = t.metrics()
    lbl = 'connector="nixlv2",model="m",mode="sequential",tenant='
    assert 'pdtrace_requests_total{%s"team-a",outcome="ok"} 1\n' % lbl in text
    assert 'pdtrace_output_tokens_total{%s"team-a"} 7\n' % lbl in text
    assert 'pdtrace_input_tokens_total{%s"team-a"} 100\n' % lbl in text
    assert 'pdtrace_requests_total{%s"other",outcome="ok"} 1\n' % lbl in text
    assert 'pdtrace_requests_total{%s"",outcome="ok"} 1\n' % lbl in text
    assert "zeta" not in text
    t.flush(5)
    roots = by_name(spans(), P + "request")
    assert sorted(s["attrs"].get("llm_d.tenant", "") for s in roots) == \
        ["", "team-a", "zeta"]


def test_metrics_tenants_option_is_checked(make_tracer):
    with pytest.raises(pdtrace.InvalidArgumentError):
        make_tracer(metrics_tenants="a,other")
