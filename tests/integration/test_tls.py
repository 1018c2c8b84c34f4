"""TLS options of the OTLP/HTTP exporter, driven the way a user drives them.

The certificates are made here, at test time, with the openssl command: a
CA, a server certificate for 127.0.0.1 and localhost signed by it, a client
certificate signed by it, and a second CA that signed nothing the server
uses. A loopback HTTPS receiver (http.server with ssl) decodes each
ExportTraceServiceRequest and counts the spans; in the mutual-TLS cases it
requires a client certificate signed by the first CA.

The pd_demo C example exports through the environment variables
OTEL_EXPORTER_OTLP_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and
OTEL_EXPORTER_OTLP_CLIENT_KEY (and once through their TRACES_ variants) and
prints its span counters on stderr, where the library also writes its
warnings (pd_demo sets no log callback).

Environment:
  PDTRACE_PD_DEMO   path of the pd_demo example
                    (default build/examples/c/pd_demo)
"""

import http.server
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from test_collector import PD_DEMO, need_pd_demo

REQUESTS = 3
# Short bounds: one HTTP request may take 2 s, one batch 4 s with retries.
EXPORT_ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "50",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
    "OTEL_BSP_EXPORT_TIMEOUT": "4000",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
}
RUN_TIMEOUT = 60
STATS_RE = re.compile(r"spans: (\d+) started, (\d+) exported, (\d+) dropped, (\d+) failed")


# ---- certificates -----------------------------------------------------------


def openssl(*args, cwd):
    res = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, "openssl %s failed:\n%s" % (" ".join(args), res.stderr)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=pdtrace test " + name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, name, ca, ext):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=pdtrace test " + name, cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-out", name + ".pem", "-extfile", name + ".ext", cwd=d)


class Certs:
    def __init__(self, d):
        self.dir = d

    def path(self, name):
        return os.path.join(self.dir, name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = str(tmp_path_factory.mktemp("tls"))
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "server", "ca", "basicConstraints=CA:FALSE\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=serverAuth\n"
              "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    make_leaf(d, "client", "ca", "basicConstraints=CA:FALSE\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n")
    make_leaf(d, "stranger", "other-ca", "basicConstraints=CA:FALSE\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n")
    return Certs(d)


# ---- the receiver -----------------------------------------------------------


class Receiver:
    """Loopback HTTPS OTLP/HTTP receiver counting the spans it decodes."""

    def __init__(self, certs, require_client_cert, max_version=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if max_version is not None:
            ctx.maximum_version = max_version
        ctx.load_cert_chain(certs.path("server.pem"), certs.path("server.key"))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(certs.path("ca.pem"))
        self.lock = threading.Lock()
        self.spans = 0
        self.requests = 0
        self.handshake_errors = []
        self.peer_certs = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                req = trace_service_pb2.ExportTraceServiceRequest()
                try:
                    req.ParseFromString(body)
                except Exception:  # noqa: BLE001 - any decode error is a 400
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                count = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
                with receiver.lock:
                    receiver.requests += 1
                    receiver.spans += count
                    receiver.peer_certs.append(self.connection.getpeercert())
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                request.settimeout(10)
                tls = ctx.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                try:
                    try:
                        tls.do_handshake()
                    except (ssl.SSLError, OSError) as e:
                        with receiver.lock:
                            receiver.handshake_errors.append(str(e))
                        # Like a careful server: the alert is out; read what
                        # the client sent so that closing does not reset the
                        # connection before the client has read the alert.
                        try:
                            tls.shutdown(socket.SHUT_WR)
                            tls.settimeout(2)
                            while tls.recv(65536):
                                pass
                        except OSError:
                            pass
                        return
                    super().finish_request(tls, client_address)
                finally:
                    tls.close()

            def handle_error(self, request, client_address):
                # A peer that fails the handshake or closes early is expected
                # in these tests; the counters tell what happened.
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = "https://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def receiver(certs):
    r = Receiver(certs, require_client_cert=False)
    yield r
    r.stop()


@pytest.fixture
def mtls_receiver(certs):
    r = Receiver(certs, require_client_cert=True)
    yield r
    r.stop()


@pytest.fixture
def mtls12_receiver(certs):
    """Mutual TLS limited to TLS 1.2, where the client certificate is
    checked during the handshake itself."""
    r = Receiver(certs, require_client_cert=True, max_version=ssl.TLSVersion.TLSv1_2)
    yield r
    r.stop()


# ---- the program ------------------------------------------------------------


class Run:
    def __init__(self, proc, err):
        self.returncode = proc.returncode
        self.stderr = err
        m = STATS_RE.search(err)
        self.stats = None
        if m:
            self.started, self.exported, self.dropped, self.failed = (int(x) for x in m.groups())
            self.stats = m.group(0)

    def library_messages(self):
        return [line for line in self.stderr.splitlines() if line.startswith("libpdtrace ")]


def run_pd_demo(extra_env):
    need_pd_demo()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(EXPORT_ENV)
    env.update(extra_env)
    proc = subprocess.Popen([PD_DEMO, "--requests", str(REQUESTS), "--seed", "7"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail("pd_demo timed out after %ds\n%s" % (RUN_TIMEOUT, err[-4000:]))
    return Run(proc, err)


def delivered(run, receiver):
    assert run.returncode == 0, "pd_demo exited %d\n%s" % (run.returncode, run.stderr[-4000:])
    assert run.stats, "pd_demo printed no span counters:\n" + run.stderr[-4000:]
    assert run.started > 0
    assert run.exported == run.started, run.stats
    assert run.dropped == 0 and run.failed == 0, run.stats
    assert receiver.spans == run.started, "receiver decoded %d span(s), pd_demo started %d" % (
        receiver.spans, run.started)
    assert not run.library_messages(), run.stderr


def failed(run, receiver):
    assert run.stats, "pd_demo printed no span counters:\n" + run.stderr[-4000:]
    assert run.started > 0
    assert run.exported == 0, run.stats
    assert run.failed == run.started, run.stats
    assert receiver.spans == 0 and receiver.requests == 0


# ---- the cases ------------------------------------------------------------------


def test_right_ca_delivers(certs, receiver):
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("ca.pem"),
    })
    delivered(run, receiver)
    assert receiver.handshake_errors == []


def test_traces_variables_take_precedence(certs, receiver):
    # The signal-specific variable wins over the generic one, which here
    # names the wrong CA.
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url + "/v1/traces",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("other-ca.pem"),
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": certs.path("ca.pem"),
    })
    delivered(run, receiver)


def test_mtls_with_client_pair_delivers(certs, mtls_receiver):
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_ENDPOINT": mtls_receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("ca.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": certs.path("client.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": certs.path("client.key"),
    })
    delivered(run, mtls_receiver)
    # The receiver saw the client certificate it verified.
    subjects = [dict(x[0] for x in c["subject"]) for c in mtls_receiver.peer_certs]
    assert subjects and all(s.get("commonName") == "pdtrace test client" for s in subjects), subjects


def test_mtls_traces_client_pair(certs, mtls_receiver):
    # The TRACES_ client pair wins over a generic pair that names the
    # server's own certificate (which the receiver would not accept as a
    # client: it lacks clientAuth).
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_ENDPOINT": mtls_receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("ca.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": certs.path("server.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": certs.path("server.key"),
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": certs.path("client.pem"),
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": certs.path("client.key"),
    })
    delivered(run, mtls_receiver)


def test_mtls_without_client_pair_is_refused(certs, mtls_receiver):
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_ENDPOINT": mtls_receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("ca.pem"),
    })
    failed(run, mtls_receiver)
    assert mtls_receiver.handshake_errors, "the receiver refused no handshake"
    msgs = run.library_messages()
    assert msgs, "the library logged nothing:\n" + run.stderr
    assert any("the collector requires a client certificate" in m and "OTEL_EXPORTER_OTLP_CLIENT_KEY" in m
               for m in msgs), msgs
    # A refusal is a configuration error: no retries until the deadline.
    assert not any("gave up after" in m for m in msgs), msgs


def test_mtls_untrusted_client_pair_is_refused(certs, mtls_receiver):
    # A client certificate the receiver does not trust (another CA signed it).
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_ENDPOINT": mtls_receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("ca.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": certs.path("stranger.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": certs.path("stranger.key"),
    })
    failed(run, mtls_receiver)
    assert mtls_receiver.handshake_errors, "the receiver refused no handshake"
    msgs = run.library_messages()
    assert any("the collector refused the client certificate" in m for m in msgs), msgs
    assert not any("gave up after" in m for m in msgs), msgs


@pytest.mark.parametrize("client", [None, "client", "stranger"])
def test_mtls_tls12(certs, mtls12_receiver, client):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": mtls12_receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("ca.pem"),
    }
    if client:
        env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] = certs.path(client + ".pem")
        env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = certs.path(client + ".key")
    run = run_pd_demo(env)
    if client == "client":
        delivered(run, mtls12_receiver)
        return
    failed(run, mtls12_receiver)
    msgs = run.library_messages()
    want = "TLS handshake failed" if client is None else "the collector refused the client certificate"
    assert any(m.startswith("libpdtrace error: ") and want in m for m in msgs), msgs
    assert not any("gave up after" in m for m in msgs), msgs


def test_wrong_ca_fails_with_clear_error(certs, receiver):
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("other-ca.pem"),
    })
    failed(run, receiver)
    msgs = run.library_messages()
    assert msgs, "the library logged nothing:\n" + run.stderr
    assert any("TLS certificate verification failed" in m and "OTEL_EXPORTER_OTLP_CERTIFICATE" in m
               for m in msgs), msgs


def test_missing_ca_file_fails_at_first_export(certs, receiver, tmp_path):
    # The files are read when the first export connects, not at open: the
    # tracer opens, and every export fails with a message naming the file.
    missing = str(tmp_path / "no-such-ca.pem")
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": missing,
    })
    assert "pdt_tracer_open" not in run.stderr, run.stderr
    failed(run, receiver)
    msgs = run.library_messages()
    assert any("cannot load the CA certificate file" in m and missing in m for m in msgs), msgs


def test_missing_client_key_fails_at_first_export(certs, mtls_receiver, tmp_path):
    missing = str(tmp_path / "no-such-client.key")
    run = run_pd_demo({
        "OTEL_EXPORTER_OTLP_ENDPOINT": mtls_receiver.url,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": certs.path("ca.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": certs.path("client.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": missing,
    })
    assert "pdt_tracer_open" not in run.stderr, run.stderr
    failed(run, mtls_receiver)
    msgs = run.library_messages()
    assert any("cannot load the client certificate or key" in m and "OTEL_EXPORTER_OTLP_CLIENT_KEY" in m
               for m in msgs), msgs
