"""Lifetimes of what the binding hands to C: the log callback must stay
callable for as long as the C tracer may call it, whichever way the tracer
goes (close(), close() deferred by open requests, garbage collection).

Each scenario runs in a child interpreter: a dangling callback handle makes
CPython abort ("Fatal Python error"), which would take pytest down with it.
"""
import http.server
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

# The child gets the endpoint as argv[1] and prints "failures=N" where N is
# the number of log messages it saw; it must exit 0.
_PRELUDE = textwrap.dedent("""
    import gc, sys
    import pdtrace
    seen = []
    def log(level, message):
        seen.append((level, message))
    def open_tracer():
        return pdtrace.Tracer(
            exporter="otlp", endpoint=sys.argv[1], ignore_environment=True,
            log=log, schedule_delay_ms=10, timeout_ms=300,
            export_timeout_ms=400, max_export_batch_size=4)
    def spans(t, n=32):
        for i in range(n):
            with t.start_span("s%d" % i) as s:
                s.set("i", i)
""")

_SCENARIOS = {
    # close() while exports fail: the exporter logs during the C close.
    "close": """
        t = open_tracer()
        spans(t)
        try:
            t.close(2)
        except pdtrace.TimedOutError:
            pass
        del t
        gc.collect()
    """,
    # The callback object itself is only referenced by the tracer.
    "close_lambda_only": """
        t = pdtrace.Tracer(
            exporter="otlp", endpoint=sys.argv[1], ignore_environment=True,
            log=lambda level, message: seen.append((level, message)),
            schedule_delay_ms=10, timeout_ms=300, export_timeout_ms=400)
        spans(t)
        try:
            t.close(2)
        except pdtrace.TimedOutError:
            pass
    """,
    # close() with a request still open defers the C close to the moment
    # the request is freed.
    "deferred_close": """
        t = open_tracer()
        spans(t)
        r = t.request()
        t.close(0.5)
        del t
        gc.collect()
        r.free()
        del r
        gc.collect()
    """,
    # Never closed: the garbage collector closes it.
    "gc_close": """
        t = open_tracer()
        spans(t)
        import time
        time.sleep(0.5)
        del t
        gc.collect()
    """,
}


def _closed_port_endpoint():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more: connections are refused
    return "http://127.0.0.1:%d" % port


class _Http500(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(params=["refused", "http500"])
def failing_endpoint(request):
    if request.param == "refused":
        yield _closed_port_endpoint()
        return
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http500)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield "http://127.0.0.1:%d" % srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)


def _run(body, endpoint):
    code = _PRELUDE + textwrap.dedent(body) + \
        "\nprint('failures=%d' % len(seen))\n"
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("OTEL_"):
            del env[k]
    return subprocess.run([sys.executable, "-c", code, endpoint],
                          capture_output=True, text=True, timeout=60,
                          env=env)


@pytest.mark.parametrize("scenario", sorted(_SCENARIOS))
def test_log_callback_outlives_the_c_tracer(scenario, failing_endpoint):
    for attempt in range(3):
        p = _run(_SCENARIOS[scenario], failing_endpoint)
        assert p.returncode == 0, (
            "run %d exited %d\nstdout: %s\nstderr: %s"
            % (attempt, p.returncode, p.stdout, p.stderr[-2000:]))
        assert "Fatal Python error" not in p.stderr
        if scenario != "gc_close":
            # The export failures were reported through the callback.
            line = [x for x in p.stdout.splitlines()
                    if x.startswith("failures=")]
            assert line and int(line[-1].split("=")[1]) > 0, p.stdout
