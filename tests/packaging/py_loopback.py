"""Run by the packaging tests inside a fresh virtual environment: imports
the installed pdtrace, exports one P/D request to an OTLP/HTTP receiver on
loopback and checks what arrived, that no libpdtrace shared library was
loaded, and that the versions agree.

    python py_loopback.py EXPECTED_VERSION
"""
import http.server
import sys
import threading

EXPECTED = sys.argv[1] if len(sys.argv) > 1 else None

import pdtrace  # noqa: E402

bodies = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        n = int(self.headers.get("Content-Length", "0"))
        bodies.append((self.path, self.headers.get("Content-Type"),
                       self.rfile.read(n)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=srv.serve_forever, daemon=True).start()
port = srv.server_address[1]

tracer = pdtrace.Tracer(service_name="packaging-test", exporter="otlp",
                        endpoint="http://127.0.0.1:%d/v1/traces" % port,
                        compression="none", ignore_environment=True)
with tracer.request() as req:
    req.set_connector("nixlv2")
    req.prefill_sent()
    req.prefill_done()
    req.decode_sent()
    req.tokens(1)
    req.set_response(200)
    bd = req.end()
pending = tracer.flush(10.0)
stats = tracer.stats()
tracer.close(5.0)
srv.shutdown()

if pending:
    fail("%d spans still pending after flush" % pending)
if stats.spans_exported < 3:
    fail("spans_exported = %d, want >= 3" % stats.spans_exported)
if not bodies:
    fail("the receiver got no export request")
path, ctype, body = bodies[0]
if path != "/v1/traces" or ctype != "application/x-protobuf":
    fail("unexpected export request %s %s" % (path, ctype))
for name in (b"llm_d.pd_proxy.request", b"llm_d.pd_proxy.prefill",
             b"llm_d.pd_proxy.decode", b"packaging-test"):
    if not any(name in b for _, _, b in bodies):
        fail("%r not in the exported payload" % name)
if bd.true_ttft_ms is None:
    fail("no true_ttft_ms in the breakdown")

with open("/proc/self/maps") as f:
    maps = f.read()
if "libpdtrace.so" in maps:
    fail("a shared libpdtrace was loaded:\n" + "\n".join(
        ln for ln in maps.splitlines() if "libpdtrace" in ln))

if EXPECTED is not None:
    got = {"library": pdtrace.version(), "package": pdtrace.__version__}
    try:
        from importlib.metadata import version
        got["distribution"] = version("pdtrace")
    except Exception as exc:  # noqa: BLE001
        fail("no distribution metadata: %s" % exc)
    for what, v in got.items():
        if v != EXPECTED:
            fail("%s version %s, want %s" % (what, v, EXPECTED))

print("ok: %d spans exported in %d request(s) to 127.0.0.1:%d, "
      "library %s loaded from %s" % (stats.spans_exported, len(bodies), port,
                                      pdtrace.version(), pdtrace.__file__))
