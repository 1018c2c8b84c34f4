"""Strings at the C boundary: a NUL would cut a C string short, so every
string argument holding one is refused with InvalidArgumentError before
anything is applied; and what the binding returns (request id, headers)
is what the library holds, never the caller's argument."""
import pytest

import pdtrace
from pdtrace import Leg

EVIL = "abc\0\r\nX-Evil: 1"
INBOUND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _refused(call, what):
    with pytest.raises(pdtrace.InvalidArgumentError) as ei:
        call()
    assert isinstance(ei.value, ValueError)
    assert "NUL" in str(ei.value) and what in str(ei.value)


def _no_evil(headers):
    for k, v in headers.items():
        assert "\0" not in v and "\r" not in v and "\n" not in v, (k, v)
        assert "X-Evil" not in v, (k, v)


def test_request_id_with_nul_is_refused_everywhere(tracer, spans):
    _refused(lambda: tracer.request(request_id=EVIL), "request_id")
    _refused(lambda: pdtrace.Request(tracer, request_id=EVIL), "request_id")
    with tracer.request(request_id="good-1") as r:
        _refused(lambda: r.set_id(EVIL), "request_id")
        assert r.id == "good-1"
        _no_evil(r.send_prefill())
        _no_evil(r.headers(Leg.PREFILL))
        r.prefill_done()
        hd = r.send_decode()
        _no_evil(hd)
        assert hd["x-request-id"] == "good-1"
        r.end()
    tracer.flush(5)
    assert all("X-Evil" not in repr(s) for s in spans())


def test_headers_return_what_the_library_holds(tracer):
    # An id the library refuses (no NUL, but a CR/LF) leaves its own.
    with tracer.request() as r:
        own = r.id
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_id("abc\r\nX-Evil: 1")
        assert r.id == own
        assert r.send_prefill()["x-request-id"] == own
        assert r.headers(Leg.DECODE)["x-request-id"] == own
    # Given at begin, the id sent is the one read back from the library.
    with tracer.request(request_id="rid-7") as r:
        assert r.send_prefill()["x-request-id"] == "rid-7"
        assert r.headers(Leg.PREFILL)["x-request-id"] == "rid-7"
        assert r.id == "rid-7"
    # Refused at begin (CR/LF): the request still begins with its own id,
    # and the refused one is sent nowhere.
    with pytest.raises(pdtrace.InvalidArgumentError) as ei:
        tracer.request(request_id="x\r\ny")
    r = ei.value.request
    try:
        h = r.send_prefill()
        assert h["x-request-id"] == r.id and "\n" not in r.id
    finally:
        r.free()


@pytest.mark.parametrize("kw,what", [
    ({"traceparent": INBOUND + "\0"}, "traceparent"),
    ({"tracestate": "a=b\0c=d"}, "tracestate"),
    ({"connector": "nixl\0v2"}, "connector"),
    ({"model": "m\0x"}, "model"),
    ({"attributes": {"k\0": 1}}, "attribute key"),
    ({"attributes": {"k": "v\0w"}}, "attribute value"),
])
def test_request_begin_arguments(tracer, kw, what):
    before = tracer.stats().spans_started
    _refused(lambda: tracer.request(**kw), what)
    # Refused before the library saw anything: no request began.
    assert tracer.stats().spans_started == before


def test_request_methods(tracer):
    with tracer.request() as r:
        _refused(lambda: r.set_connector("a\0b"), "connector")
        _refused(lambda: r.set_model("a\0b"), "model")
        _refused(lambda: r.set_mode(pdtrace.Mode.CONCURRENT, "r\0"),
                 "reason")
        _refused(lambda: r.set_leg(Leg.PREFILL, "h:1\0", 200), "target")
        _refused(lambda: r.set_leg(Leg.PREFILL, "h:1", 500, "e\0"),
                 "error_type")
        _refused(lambda: r.set_response(500, "e\0"), "error_type")
        _refused(lambda: r.prefill_done(target="t\0", status=200), "target")
        _refused(lambda: r.set("k\0", 1), "key")
        _refused(lambda: r.set("k", "v\0"), "value")
        _refused(lambda: r.set("k\0", 1.5), "key")
        _refused(lambda: r.set_str("k", "v\0"), "value")
        _refused(lambda: r.set_str("k\0", "v"), "key")
        _refused(lambda: r.set_int("k\0", 1), "key")
        _refused(lambda: r.set_float("k\0", 1.0), "key")
        _refused(lambda: r.set_bool("k\0", True), "key")
        _refused(lambda: r.set_attributes({"a": 1, "b\0": 2}),
                 "attribute key")
        _refused(lambda: r.set_attributes({"a": "x\0"}, Leg.DECODE),
                 "attribute value")
        _refused(lambda: r.finish(200, "e\0"), "error_type")
        _refused(lambda: r.finish(200, decode_target="t\0",
                                  decode_status=200), "decode_target")
        _refused(lambda: r.finish(200, decode_error="e\0",
                                  decode_status=500), "decode_error")
        # None of the refused calls ended the request.
        bd = r.finish(200)
        assert bd.error is False


def test_nul_in_attributes_applies_nothing(tracer, spans):
    with tracer.request() as r:
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_attributes({"a": "1", "k2": "a\0b", "c": "3"})
        r.end()
    tracer.flush(5)
    root = [s for s in spans() if not s["parent"]][0]
    assert "a" not in root["attrs"] and "k2" not in root["attrs"]


def test_span_and_tracer_entry_points(make_tracer, tracer):
    _refused(lambda: tracer.start_span("n\0"), "name")
    _refused(lambda: tracer.start_span("n", traceparent=INBOUND + "\0"),
             "traceparent")
    _refused(lambda: tracer.start_span("n", tracestate="a=b\0"),
             "tracestate")
    with tracer.start_span("s") as s:
        _refused(lambda: s.set("k\0", 1), "key")
        _refused(lambda: s.set("k", "v\0"), "attribute value")
        _refused(lambda: s.set_attributes({"k\0": 1}), "attribute key")
        _refused(lambda: s.add_event("e\0"), "name")
        _refused(lambda: s.add_event("e", attributes={"k\0": 1}), "key")
        _refused(lambda: s.set_status(pdtrace.StatusCode.ERROR, "m\0"),
                 "message")
        _refused(lambda: s.set_bytes("k\0", b"v"), "key")
        # Bytes values are length-counted: their NULs are data.
        s.set_bytes("raw", b"a\0b")
    _refused(lambda: pdtrace.parse_traceparent(INBOUND + "\0junk"),
             "traceparent")
    for opt in ("service_name", "resource_attributes", "endpoint",
                "headers", "console_path", "ca_file", "client_cert",
                "client_key", "spool_dir"):
        _refused(lambda: make_tracer(**{opt: "x\0y"}), opt)
