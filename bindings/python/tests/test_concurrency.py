"""Threads, asyncio and fork."""
import asyncio
import os
import threading

import pdtrace
from pdtrace import Leg
from otlp_spans import read_spans


def _request(t, i):
    with t.request(request_id="r%d" % i, connector="nixlv2") as r:
        r.headers(Leg.PREFILL)
        r.prefill_sent()
        r.prefill_done()
        r.decode_sent()
        r.tokens(1)
        r.tokens(2)
        r.set("i", i)
        return r.end()


def test_threads_share_a_tracer(make_tracer, spans):
    t = make_tracer(max_queue_size=100000)
    errors = []

    def work(k):
        try:
            for i in range(200):
                bd = _request(t, k * 1000 + i)
                assert bd.true_ttft_ms is not None
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    t.flush(10)
    assert t.stats().requests_completed == 1600
    ids = {s["attrs"].get("llm_d.pd_proxy.request_id") for s in spans()
           if s["name"] == "llm_d.pd_proxy.request"}
    assert len(ids) == 1600


def test_request_moves_between_threads(tracer):
    r = tracer.request()
    r.prefill_sent()
    th = threading.Thread(target=r.prefill_done)
    th.start()
    th.join(5)
    r.decode_sent()
    r.tokens(1)
    assert r.end().kv_transfer_overhead_ms is not None
    r.free()


def test_error_message_is_per_thread(tracer):
    # A failure on one thread does not leak its message to another.
    seen = {}

    def fail(name, call):
        try:
            call()
        except pdtrace.PdtraceError as e:
            seen[name] = e.message

    r = tracer.request()
    a = threading.Thread(target=fail, args=("a", r.prefill_done))
    a.start()
    a.join(5)
    b = threading.Thread(target=fail, args=(
        "b", lambda: pdtrace.parse_traceparent("x")))
    b.start()
    b.join(5)
    assert seen["a"] != seen["b"]
    assert "traceparent" in seen["b"]
    r.free()


def test_asyncio_tasks(tracer, spans):
    async def one(i):
        with tracer.request(request_id="a%d" % i) as r:
            r.prefill_sent()
            await asyncio.sleep(0.001)
            r.prefill_done()
            r.decode_sent()
            await asyncio.sleep(0)
            r.tokens(1)
            await asyncio.sleep(0.001)
            return r.end()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(200)))

    bds = asyncio.run(main())
    assert all(bd.prefill_ms >= 0.5 for bd in bds)
    tracer.flush(10)
    assert len(spans()) == 600


def test_fork_child_exports(make_tracer, out_path, tmp_path):
    t = make_tracer()
    _request(t, 1)
    t.flush(5)
    child_path = str(tmp_path / "child.jsonl")
    pid = os.fork()
    if pid == 0:  # child: the parent's tracer keeps working here
        code = 1
        try:
            _request(t, 2)
            t.flush(5)
            with pdtrace.Tracer(exporter="console", console_path=child_path,
                                ignore_environment=True) as t2:
                _request(t2, 3)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    _request(t, 4)
    t.flush(5)
    ids = [s["attrs"].get("llm_d.pd_proxy.request_id")
           for s in read_spans(out_path)
           if s["name"] == "llm_d.pd_proxy.request"]
    assert sorted(ids) == ["r1", "r2", "r4"]
    assert [s["attrs"].get("llm_d.pd_proxy.request_id")
            for s in read_spans(child_path)
            if s["name"] == "llm_d.pd_proxy.request"] == ["r3"]
