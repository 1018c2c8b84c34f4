"""Batched calls: attribute batches (pdt_request_set_attrs,
pdt_span_set_attrs), the calls sequenced into one foreign call (begin with
its settings, send_prefill/send_decode, prefill_done with the leg outcome,
finish), pdt_request_set_model and pdt_tracer_metrics."""
import enum
import math

import pytest

import pdtrace
from pdtrace import Leg

P = "llm_d.pd_proxy."
INBOUND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - listed in examples/requirements.txt
    text_string_to_metric_families = None


def by_name(spans, name):
    return [s for s in spans if s["name"] == name]


def root_attrs(spans):
    return by_name(spans, P + "request")[0]["attrs"]


class Color(str, enum.Enum):
    RED = "red"


ALL_TYPES = {"s": "text", "i": -(2 ** 63), "big": 2 ** 63 - 1, "f": 0.25,
             "t": True, "b": False, "u": "h\u00e9llo", "e": "",
             "sub": Color.RED, "ie": Leg.DECODE}


def check_all_types(a):
    assert a["s"] == "text" and a["u"] == "h\u00e9llo" and a["e"] == ""
    assert a["i"] == -(2 ** 63) and a["big"] == 2 ** 63 - 1
    assert a["f"] == 0.25
    assert a["t"] is True and a["b"] is False
    assert a["sub"] == "red" and a["ie"] == 2


def test_request_batch_every_type(tracer, spans):
    with tracer.request() as r:
        r.set_attributes(ALL_TYPES)
        r.end()
    tracer.flush(5)
    check_all_types(root_attrs(spans()))


def test_begin_with_everything_in_one_call(tracer, spans):
    r = tracer.request(INBOUND, "vendor=abc", 0, request_id="req-b1",
                       connector="lmcache", model=MODEL,
                       attributes=ALL_TYPES)
    assert r.id == "req-b1"
    h = r.send_prefill()
    assert h["x-request-id"] == "req-b1"
    assert h["tracestate"] == "vendor=abc"
    assert h["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    r.prefill_done(target="http://127.0.0.1:8100", status=200)
    h2 = r.send_decode()
    assert h2["traceparent"] != h["traceparent"]
    r.tokens(1)
    r.tokens(4)
    bd = r.finish(200, decode_target="127.0.0.1:8200", decode_status=200,
                  input_tokens=10, output_tokens=5, cached_input_tokens=2)
    r.free()
    assert isinstance(bd, pdtrace.Breakdown)
    assert bd.true_ttft_ms is not None and bd.output_tokens == 5
    assert bd.error is False
    tracer.flush(5)
    s = spans()
    a = root_attrs(s)
    check_all_types(a)
    assert a[P + "request_id"] == "req-b1"
    assert a[P + "connector"] == "lmcache"
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.usage.input_tokens"] == 10
    assert a["gen_ai.usage.output_tokens"] == 5
    assert a["http.response.status_code"] == 200
    assert a[P + "prefill_target"] == "http://127.0.0.1:8100"
    assert a[P + "decode_target"] == "127.0.0.1:8200"
    assert len(by_name(s, P + "prefill")) == 1
    assert len(by_name(s, P + "decode")) == 1


def test_constructor_takes_the_same_keywords(tracer, spans):
    r = pdtrace.Request(tracer, attributes={"k": 1}, model="m",
                        request_id="req-b2")
    assert r.id == "req-b2"
    r.end()
    r.free()
    tracer.flush(5)
    a = root_attrs(spans())
    assert a["k"] == 1 and a["gen_ai.request.model"] == "m"


def test_leg_batch_needs_the_leg_span(tracer, spans):
    with tracer.request() as r:
        with pytest.raises(pdtrace.StateError):
            r.set_attributes({"k": 1}, leg=Leg.PREFILL)
        r.prefill_sent()
        r.set_attributes({"p.k": 1, "p.s": "x"}, leg=Leg.PREFILL)
        r.end()
    tracer.flush(5)
    a = by_name(spans(), P + "prefill")[0]["attrs"]
    assert a["p.k"] == 1 and a["p.s"] == "x"


def test_bad_type_raises_before_anything_is_set(tracer, spans):
    with tracer.request() as r:
        with pytest.raises(TypeError):
            r.set_attributes({"ok": 1, "bad": [1, 2]})
        with pytest.raises(TypeError):
            r.set_attributes({"none": None})
        with pytest.raises(OverflowError):
            r.set_attributes({"huge": 2 ** 64})
        with pytest.raises(TypeError):
            r.set_attributes({1: "non-str key"})
        with pytest.raises(TypeError):
            tracer.request(attributes={"bad": object()})
        r.end()
    tracer.flush(5)
    a = root_attrs(spans())
    assert "ok" not in a and "none" not in a and "huge" not in a


def test_refused_entry_does_not_stop_the_others(tracer, spans):
    with tracer.request() as r:
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_attributes({"a": 1, "": 2, "c": "three"})
        r.end()
    tracer.flush(5)
    a = root_attrs(spans())
    assert a["a"] == 1 and a["c"] == "three"


def test_nul_bytes_are_refused_as_set_does(tracer, spans):
    with tracer.request() as r:
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_attributes({"k1\0x": "v", "k3": "c"})
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_attributes({"k2": "a\0b", "k3": "c"})
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set("k2", "a\0b")
        r.end()
    tracer.flush(5)
    a = root_attrs(spans())
    assert "k1" not in a and "k2" not in a and "k3" not in a


def test_count_limit_gives_limit_error(make_tracer, spans):
    t = make_tracer(attribute_count_limit=40)
    with t.request() as r:
        with pytest.raises(pdtrace.LimitError):
            r.set_attributes({"k%03d" % i: i for i in range(100)})
        r.end()
    t.flush(5)
    a = root_attrs(spans())
    assert len(a) <= 40 and "k000" in a and "k099" not in a


def test_long_values_are_truncated_not_refused(make_tracer, spans):
    t = make_tracer(attribute_value_length_limit=8)
    with t.request() as r:
        r.set_attributes({"long": "x" * 100, "n": 7})
        r.end()
    t.flush(5)
    a = root_attrs(spans())
    assert a["long"] == "x" * 8 and a["n"] == 7


def test_many_attributes_span_more_than_one_chunk(make_tracer, spans):
    t = make_tracer(attribute_count_limit=128)
    batch = {}
    for i in range(70):
        batch["k%02d" % i] = ("s%d" % i, i, float(i) + 0.5, i % 2 == 0)[i % 4]
    with t.request() as r:
        r.set_attributes(batch)
        r.end()
    t.flush(5)
    a = root_attrs(spans())
    for k, v in batch.items():
        assert a[k] == v and type(a[k]) is type(v), k


def test_span_batch(tracer, spans):
    with tracer.start_span("s") as s:
        s.set_attributes(ALL_TYPES)
        with pytest.raises(TypeError):
            s.set_attributes({"x": {}})
        s.end()
        with pytest.raises(pdtrace.StateError):
            s.set_attributes({"late": 1})
    tracer.flush(5)
    check_all_types(by_name(spans(), "s")[0]["attrs"])


def test_freed_handles_are_invalid(tracer):
    r = tracer.request()
    span = tracer.start_span("s")
    r.free()
    span.free()
    with pytest.raises(pdtrace.InvalidArgumentError):
        r.set_attributes({"k": 1})
    with pytest.raises(pdtrace.InvalidArgumentError):
        span.set_attributes({"k": 1})
    with pytest.raises(pdtrace.InvalidArgumentError):
        r.set_model("m")
    with pytest.raises(pdtrace.InvalidArgumentError):
        r.send_prefill()
    with pytest.raises(pdtrace.InvalidArgumentError):
        r.finish(200)


def test_refused_setting_at_begin_carries_the_request(tracer, spans):
    with pytest.raises(pdtrace.InvalidArgumentError) as ei:
        tracer.request(request_id="", connector="nixlv2",
                       attributes={"k": 1})
    r = ei.value.request
    assert isinstance(r, pdtrace.Request)
    assert r.id  # a generated one
    r.end()
    r.free()
    tracer.flush(5)
    a = root_attrs(spans())
    assert a[P + "connector"] == "nixlv2" and a["k"] == 1


def test_begin_failure_raises_without_request(tracer):
    tracer.close(5)
    with pytest.raises(pdtrace.PdtraceError) as ei:
        tracer.request(request_id="x")
    assert ei.value.request is None


def test_set_model(tracer, spans):
    with tracer.request() as r:
        r.set_model("first")
        r.set_model(MODEL)
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_model("")
        with pytest.raises(pdtrace.InvalidArgumentError):
            r.set_model("m" * 256)
        r.end()
        with pytest.raises(pdtrace.StateError):
            r.set_model("late")
    tracer.flush(5)
    assert root_attrs(spans())["gen_ai.request.model"] == MODEL


def test_send_refused_mark_still_gives_headers(tracer):
    with tracer.request(request_id="req-s") as r:
        r.send_prefill()
        with pytest.raises(pdtrace.StateError) as ei:
            r.send_prefill()  # previous attempt not done
        assert ei.value.headers["x-request-id"] == "req-s"
        r.end()


def test_prefill_done_with_error_marks_the_leg(tracer, spans):
    with tracer.request() as r:
        r.send_prefill()
        r.prefill_done(target="10.0.0.1:8000", status=0,
                       error_type="timeout")
        bd = r.finish(504, "timeout")
        assert bd.error is True
    tracer.flush(5)
    s = spans()
    pre = by_name(s, P + "prefill")[0]
    assert pre["status"].get("code") == 2
    assert root_attrs(s)["http.response.status_code"] == 504


def test_finish_errors(tracer):
    r = tracer.request()
    r.end()
    with pytest.raises(pdtrace.StateError) as ei:
        r.finish(200)
    assert ei.value.breakdown is None  # end itself was refused
    r.free()

    r = tracer.request()
    r.set_mode(pdtrace.Mode.DECODE_ONLY)
    r.send_decode()
    with pytest.raises(pdtrace.InvalidArgumentError) as ei:
        r.finish(200, decode_status=1000)  # out of range
    # The leg outcome was refused, the request was still ended.
    assert ei.value.breakdown is not None
    with pytest.raises(pdtrace.StateError):
        r.end()
    r.free()


def test_finish_with_clamped_end_carries_breakdown(tracer):
    a = pdtrace.now_ns() - 10_000_000
    with tracer.request(arrival_ns=a) as r:
        r.send_prefill(a + 2_000_000)
        with pytest.raises(pdtrace.RangeError) as ei:
            r.finish(200, end_ns=a + 1_000_000)
        assert ei.value.breakdown is not None


def _families(text):
    assert text_string_to_metric_families is not None, \
        "prometheus_client is required (examples/requirements.txt)"
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_text_parses(tracer):
    for conn, model in (("nixlv2", MODEL), ("lmcache", "other-model")):
        r = tracer.request(connector=conn, model=model)
        r.send_prefill()
        r.prefill_done(status=200)
        r.send_decode()
        r.tokens(1)
        r.tokens(3)
        r.finish(200, decode_status=200)
        r.free()
    text = tracer.metrics()
    assert isinstance(text, str) and text.endswith("\n")
    fams = _families(text)
    ttft = fams["pdtrace_true_ttft_seconds"]
    assert ttft.type == "histogram"
    counts = {s.labels["model"]: s.value for s in ttft.samples
              if s.name == "pdtrace_true_ttft_seconds_count"}
    assert counts == {MODEL: 1.0, "other-model": 1.0}
    for s in ttft.samples:
        if s.name.endswith("_sum"):
            assert s.value >= 0 and math.isfinite(s.value)
    assert pdtrace.METRICS_CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_metrics_retries_a_small_buffer(tracer):
    tracer._metrics_cap = 16
    text = tracer.metrics()
    assert len(text) > 16 and tracer._metrics_cap > 16
    assert text == tracer.metrics() or "pdtrace" in text


def test_metrics_after_close(tracer):
    tracer.close(5)
    with pytest.raises(pdtrace.InvalidArgumentError):
        tracer.metrics()
