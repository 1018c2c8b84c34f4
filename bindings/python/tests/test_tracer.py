"""Tracer: options, environment, export, flush, close, stats, log."""
import os
import socket
import threading

import pytest

import pdtrace
from otlp_spans import read_spans


def _one_request(t, **kw):
    with t.request(**kw) as r:
        r.prefill_sent()
        r.prefill_done()
        r.decode_sent()
        r.tokens(1)
        return r.end()


def test_default_service_name_and_resource(tracer, spans):
    _one_request(tracer)
    assert tracer.flush(5) == 0
    got = spans()
    assert len(got) == 3
    res = got[0]["resource"]
    assert res["service.name"] == "llm-d-pd-proxy"
    assert res["telemetry.sdk.name"] == "libpdtrace"
    assert res["process.pid"] == os.getpid()
    assert got[0]["scope"]["name"] == "libpdtrace"


def test_options_map_to_fields(make_tracer, spans):
    t = make_tracer(service_name="svc-a",
                    resource_attributes="deployment.environment=test,team=x%2Cy",
                    compression="gzip", timeout_ms=1000,
                    export_timeout_ms=2000, max_queue_size=100,
                    max_export_batch_size=10, attribute_count_limit=50,
                    attribute_value_length_limit=8, sampler="always_on",
                    tail_ttft_threshold_ms=5.0, tail_keep_errors=False,
                    disabled=False, spool_max_bytes=1 << 20,
                    max_concurrent_exports=2, compression_level=6)
    with t.start_span("s") as s:
        s.set("long", "0123456789abcdef")
    t.flush(5)
    got = spans()
    assert got[0]["resource"]["service.name"] == "svc-a"
    assert got[0]["resource"]["team"] == "x,y"
    assert got[0]["attrs"]["long"] == "01234567"
    assert t.stats().values_truncated >= 1


def test_enum_options_take_enums_and_names(make_tracer):
    make_tracer(exporter=pdtrace.Exporter.NONE,
                compression=pdtrace.Compression.ZSTD,
                sampler=pdtrace.Sampler.PARENTBASED_TRACEIDRATIO,
                sampler_ratio=0.5)
    make_tracer(exporter="none", compression="none",
                sampler="parentbased_always_off")


def test_unknown_protocol_name_is_value_error(make_tracer):
    with pytest.raises(ValueError, match="protocol"):
        make_tracer(protocol="thrift")


def test_unknown_enum_name_is_value_error(make_tracer):
    with pytest.raises(ValueError, match="exporter"):
        make_tracer(exporter="zipkin")


@pytest.mark.parametrize("kw, exc", [
    ({"sampler_ratio": 1.5}, pdtrace.InvalidArgumentError),
    ({"exporter": 42}, pdtrace.InvalidArgumentError),
    ({"service_name": ""}, pdtrace.InvalidArgumentError),
    ({"endpoint": "not a url"}, pdtrace.ParseError),
    ({"headers": "=novalue"}, pdtrace.ParseError),
    ({"max_concurrent_exports": 65}, pdtrace.InvalidArgumentError),
    ({"compression": "gzip", "compression_level": 10},
     pdtrace.InvalidArgumentError),
    ({"protocol": 99}, pdtrace.InvalidArgumentError),
    ({"max_queue_bytes": 1000}, pdtrace.InvalidArgumentError),
])
def test_bad_options_raise(make_tracer, kw, exc):
    with pytest.raises(exc) as ei:
        make_tracer(**kw)
    assert ei.value.message


def test_unusable_console_file_is_io_error(tmp_path):
    with pytest.raises(pdtrace.FileIOError):
        pdtrace.Tracer(exporter="console",
                       console_path=str(tmp_path / "no" / "dir" / "x.jsonl"),
                       ignore_environment=True)


def test_environment_is_honoured(monkeypatch, out_path, spans):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("PDTRACE_CONSOLE_PATH", out_path)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k=v")
    with pdtrace.Tracer() as t:
        _one_request(t)
    got = spans()
    assert got and got[0]["resource"]["service.name"] == "from-env"
    assert got[0]["resource"]["k"] == "v"


def test_options_win_over_environment(monkeypatch, out_path, spans):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    with pdtrace.Tracer(exporter="console", console_path=out_path,
                        service_name="from-code") as t:
        _one_request(t)
    assert spans()[0]["resource"]["service.name"] == "from-code"


def test_ignore_environment(monkeypatch, out_path, spans):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    with pdtrace.Tracer(exporter="console", console_path=out_path,
                        ignore_environment=True) as t:
        _one_request(t)
    assert spans()[0]["resource"]["service.name"] == "llm-d-pd-proxy"


def test_sdk_disabled_env_and_option(monkeypatch, out_path, spans):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with pdtrace.Tracer(exporter="console", console_path=out_path) as t:
        bd = _one_request(t)
        assert bd.true_ttft_ms is not None  # breakdown still computed
    assert spans() == []
    # disabled=False (-1) re-enables against the environment.
    with pdtrace.Tracer(exporter="console", console_path=out_path,
                        disabled=False) as t:
        _one_request(t)
    assert len(spans()) == 3


def test_disabled_option(make_tracer, spans):
    t = make_tracer(disabled=True)
    _one_request(t)
    t.flush(1)
    assert spans() == []


def test_sampler_always_off_keeps_calls_valid(make_tracer, spans):
    t = make_tracer(sampler="always_off", tail_keep_errors=False)
    bd = _one_request(t)
    assert bd.sampled is False
    t.flush(1)
    assert spans() == []
    assert t.stats().spans_not_sampled >= 3


def test_stats_fields(tracer):
    _one_request(tracer)
    tracer.flush(5)
    st = tracer.stats()
    assert isinstance(st, pdtrace.Stats)
    assert st.spans_started == 3
    assert st.spans_ended == 3
    assert st.spans_exported == 3
    assert st.requests_completed == 1
    assert st.export_requests >= 1
    assert st.queue_depth == 0


def test_close_is_idempotent_and_closes(make_tracer):
    t = make_tracer()
    assert not t.closed
    assert t.close(5) == 0
    assert t.closed
    assert t.close(5) == 0
    with pytest.raises(pdtrace.InvalidArgumentError):
        t.flush(1)
    with pytest.raises(pdtrace.InvalidArgumentError):
        t.stats()
    with pytest.raises(pdtrace.InvalidArgumentError):
        t.request()
    with pytest.raises(pdtrace.InvalidArgumentError):
        t.start_span("x")


def test_close_with_open_children_is_deferred(make_tracer, spans):
    import gc
    t = make_tracer()
    done = t.request(request_id="done")
    done.end()
    r = t.request(request_id="open")
    r.prefill_sent()
    s = t.start_span("open-span")
    leg = r.span(pdtrace.Leg.PREFILL)
    assert t.close(5) == 0  # flushed what had ended
    assert t.closed
    assert [x["attrs"][P_ID] for x in spans()
            if x["name"] == "llm_d.pd_proxy.request"] == ["done"]
    with pytest.raises(pdtrace.InvalidArgumentError):
        t.request()
    # The open request and span still work; the C tracer lives on for them.
    leg.set("k", 1)
    r.prefill_done()
    r.decode_sent()
    r.tokens(1)
    assert r.end().true_ttft_ms is not None
    s.set("k", "v")
    s.end()
    r.free()
    assert t._live  # the span is still open
    del s, leg, done
    gc.collect()
    assert not t._live  # the last one closed the tracer (without waiting)


P_ID = "llm_d.pd_proxy.request_id"


def test_context_manager_closes(out_path, spans):
    with pdtrace.Tracer(exporter="console", console_path=out_path,
                        ignore_environment=True, schedule_delay_ms=60000) as t:
        _one_request(t)
    assert t.closed
    assert len(spans()) == 3  # close flushed despite the long delay


def _blackhole():
    """A loopback server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns = []
    stop = threading.Event()

    def run():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    th = threading.Thread(target=run, daemon=True)
    th.start()

    def close():
        stop.set()
        th.join(2)
        for c in conns:
            c.close()
        srv.close()

    return srv.getsockname()[1], close


def test_flush_and_close_timeouts_are_bounded():
    port, stop = _blackhole()
    try:
        t = pdtrace.Tracer(exporter="otlp",
                           endpoint="http://127.0.0.1:%d/v1/traces" % port,
                           ignore_environment=True, timeout_ms=10000,
                           export_timeout_ms=10000)
        _one_request(t)
        with pytest.raises(pdtrace.TimedOutError) as ei:
            t.flush(0.2)
        assert ei.value.pending == 3
        with pytest.raises(pdtrace.TimedOutError) as ei:
            t.close(0.2)
        assert ei.value.dropped == 3
        assert t.closed
    finally:
        stop()


def test_log_callback_gets_background_messages():
    got = []
    port, stop = _blackhole()
    stop()  # now nothing listens: connection refused
    t = pdtrace.Tracer(exporter="otlp",
                       endpoint="http://127.0.0.1:%d/v1/traces" % port,
                       ignore_environment=True, export_timeout_ms=300,
                       timeout_ms=100,
                       log=lambda level, msg: got.append((level, msg)))
    _one_request(t)
    t.flush(3)
    t.close(1)
    assert got, "no log message"
    assert all(isinstance(m, str) for _, m in got)
    assert got[0][0] in (pdtrace.LogLevel.ERROR, pdtrace.LogLevel.WARN)


def test_log_callback_for_bad_environment(monkeypatch):
    got = []
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "soon")
    t = pdtrace.Tracer(exporter="none", log=lambda lv, m: got.append(m))
    t.close(1)
    assert any("OTEL_BSP_SCHEDULE_DELAY" in m for m in got)


def test_gc_of_open_tracer_does_not_wait(out_path):
    import gc
    t = pdtrace.Tracer(exporter="console", console_path=out_path,
                       ignore_environment=True)
    _one_request(t)
    del t
    gc.collect()
    # Nothing to assert beyond "returned and did not crash"; spans may or
    # may not have been written.
    read_spans(out_path)


@pytest.mark.parametrize("protocol, content_type", [
    (None, "application/x-protobuf"),
    ("http/protobuf", "application/x-protobuf"),
    ("http/json", "application/json"),
    (pdtrace.Protocol.HTTP_JSON, "application/json"),
])
def test_protocol_option_reaches_the_wire(protocol, content_type):
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((self.path, self.headers.get("Content-Type")))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}" if "json" in content_type else b"\0\0")

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        kw = {} if protocol is None else {"protocol": protocol}
        t = pdtrace.Tracer(exporter="otlp", compression="none",
                           endpoint="http://127.0.0.1:%d/v1/traces"
                           % srv.server_port,
                           ignore_environment=True, **kw)
        with t.start_span("s"):
            pass
        t.flush(5)
        t.close(5)
    finally:
        srv.shutdown()
        srv.server_close()
    assert seen, "no export arrived"
    assert seen[0] == ("/v1/traces", content_type)
