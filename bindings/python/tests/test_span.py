"""Generic spans: parents, attributes, events, status, propagation."""
import pytest

import pdtrace
from pdtrace import SpanKind, StatusCode


def test_span_tree_and_fields(tracer, spans):
    parent = tracer.start_span("llm_d.epp.request", SpanKind.SERVER)
    child = tracer.start_span("llm_d.epp.profile_handler.pick",
                              SpanKind.INTERNAL, parent=parent)
    child.set_attributes({"decision": "pd", "cache_hit_ratio": 0.25,
                          "pd_threshold": 512, "user_input_bytes": 2048,
                          "hit": True})
    child.add_event("scored", attributes={"pods": 3, "best": "p1",
                                          "score": 0.5, "ok": False})
    child.add_event("plain")
    child.set_status(StatusCode.OK)
    assert child.trace_id == parent.trace_id
    assert child.is_sampled
    child.end()
    parent.end()
    h = child.headers()  # still valid after end
    # A new trace: sampled, and its id is random (W3C Level 2 flag 0x02).
    assert h["traceparent"] == "00-%s-%s-03" % (child.trace_id,
                                                 child.span_id)
    assert "x-request-id" not in h
    child.free()
    parent.free()
    tracer.flush(5)
    got = {s["name"]: s for s in spans()}
    pick = got["llm_d.epp.profile_handler.pick"]
    assert pick["parent"] == got["llm_d.epp.request"]["span_id"]
    assert pick["kind"] == 1 and got["llm_d.epp.request"]["kind"] == 2
    assert pick["attrs"] == {"decision": "pd", "cache_hit_ratio": 0.25,
                             "pd_threshold": 512, "user_input_bytes": 2048,
                             "hit": True}
    assert pick["events"][0] == {"name": "scored", "attrs": {
        "pods": 3, "best": "p1", "score": 0.5, "ok": False}}
    assert pick["events"][1]["name"] == "plain"
    assert pick["status"]["code"] == 1


def test_remote_parent(tracer, spans):
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracer.start_span("llm_request", SpanKind.SERVER, traceparent=tp,
                           tracestate="a=b") as s:
        assert s.headers()["tracestate"] == "a=b"
    tracer.flush(5)
    got = spans()[0]
    assert got["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert got["parent"] == "b7ad6b7169203331"


def test_unsampled_parent(tracer):
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    with tracer.start_span("x", traceparent=tp) as s:
        assert not s.is_sampled
        s.set("k", "still valid")


def test_start_time_and_end_time(tracer, spans):
    t0 = pdtrace.now_ns() - 5_000_000
    s = tracer.start_span("timed", start_ns=t0)
    s.end(t0 + 2_000_000)
    s.free()
    tracer.flush(5)
    got = spans()[0]
    assert got["end"] - got["start"] == 2_000_000


def test_span_misuse(tracer):
    t0 = pdtrace.now_ns()
    s = tracer.start_span("m", start_ns=t0)
    with pytest.raises(pdtrace.RangeError):
        s.end(t0 - 1000)  # clamped to the start, still recorded
    with pytest.raises(pdtrace.StateError):
        s.end()
    with pytest.raises(pdtrace.StateError):
        s.set("k", 1)
    with pytest.raises(pdtrace.StateError):
        s.add_event("e")
    with pytest.raises(pdtrace.StateError):
        s.set_status(StatusCode.ERROR)
    s.free()
    s.free()
    with pytest.raises(pdtrace.InvalidArgumentError):
        s.headers()
    with pytest.raises(pdtrace.InvalidArgumentError):
        s.span_id
    assert s.is_sampled is False


def test_start_errors(tracer):
    with pytest.raises(pdtrace.InvalidArgumentError):
        tracer.start_span("x", kind=9)
    with pytest.raises(pdtrace.InvalidArgumentError):
        tracer.start_span("")
    with pytest.raises(pdtrace.RangeError):
        tracer.start_span("x", start_ns=pdtrace.now_ns() + 60 * 10 ** 9)
    with pytest.raises(TypeError):
        pdtrace.Span()


def test_status_codes(tracer):
    with tracer.start_span("x") as s:
        with pytest.raises(pdtrace.InvalidArgumentError):
            s.set_status(5)
        s.set_status(StatusCode.ERROR, "boom")


def test_exception_in_block_sets_error(tracer, spans):
    with pytest.raises(RuntimeError):
        with tracer.start_span("failing"):
            raise RuntimeError("x")
    tracer.flush(5)
    st = spans()[0]["status"]
    assert st["code"] == 2 and st["message"] == "RuntimeError"


def test_bytes_attribute_keeps_nul(tracer, spans):
    with tracer.start_span("b") as s:
        s.set_bytes("raw", b"a\x00b")
    tracer.flush(5)
    assert spans()[0]["attrs"]["raw"] == "a\x00b"


def test_attribute_count_limit(make_tracer, spans):
    t = make_tracer(attribute_count_limit=2)
    with t.start_span("lim") as s:
        s.set("a", 1)
        s.set("b", 2)
        with pytest.raises(pdtrace.LimitError):
            s.set("c", 3)
    assert t.stats().attributes_dropped == 1


def test_event_limit(tracer):
    with tracer.start_span("ev") as s:
        for i in range(128):
            s.add_event("e%d" % i)
        with pytest.raises(pdtrace.LimitError):
            s.add_event("one too many")


def test_event_attribute_type_error(tracer):
    with tracer.start_span("ev") as s:
        with pytest.raises(TypeError):
            s.add_event("e", attributes={"k": object()})
