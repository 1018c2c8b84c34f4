"""A minimal loopback OTLP/HTTP trace receiver for the examples' tests.

It accepts ``POST /v1/traces`` with a protobuf ExportTraceServiceRequest
(plain or gzip), decodes the fields the tests read with a small wire-format
reader (field numbers from the OTLP specification), and keeps every span as
a dict: trace_id, span_id, parent_span_id (hex), name, kind, start/end
(unix ns), status_code, status_message, attrs and service (resource
``service.name``). No third-party packages needed.
"""
import gzip
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 * 1024 * 1024


def _fields(buf):
    """Yields (field number, wire type, value) of one protobuf message."""
    i, n = 0, len(buf)

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            if i >= n or shift > 63:
                raise ValueError("truncated varint")
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < n:
        key = varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            yield num, wt, varint()
        elif wt == 1:
            if i + 8 > n:
                raise ValueError("truncated fixed64")
            yield num, wt, buf[i:i + 8]
            i += 8
        elif wt == 2:
            ln = varint()
            if i + ln > n:
                raise ValueError("truncated bytes")
            yield num, wt, buf[i:i + ln]
            i += ln
        elif wt == 5:
            if i + 4 > n:
                raise ValueError("truncated fixed32")
            yield num, wt, buf[i:i + 4]
            i += 4
        else:
            raise ValueError("wire type %d" % wt)


def _any(buf):
    for num, wt, v in _fields(buf):
        if num == 1:
            return v.decode("utf-8")
        if num == 2:
            return bool(v)
        if num == 3:
            return v - (1 << 64) if v >= 1 << 63 else v
        if num == 4:
            return struct.unpack("<d", v)[0]
    return None


def _attrs(items):
    out = {}
    for kv in items:
        key, val = "", None
        for num, wt, v in _fields(kv):
            if num == 1:
                key = v.decode("utf-8")
            elif num == 2:
                val = _any(v)
        out[key] = val
    return out


def decode(body):
    """Spans of one ExportTraceServiceRequest."""
    spans = []
    for num, _, rs in _fields(body):
        if num != 1:
            continue
        res_attrs, scope_spans = {}, []
        for n2, _, v2 in _fields(rs):
            if n2 == 1:
                res_attrs = _attrs(v for n3, _, v in _fields(v2) if n3 == 1)
            elif n2 == 2:
                scope_spans.append(v2)
        for ss in scope_spans:
            for n3, _, sp in _fields(ss):
                if n3 != 2:
                    continue
                s = {"trace_id": "", "span_id": "", "parent_span_id": "",
                     "name": "", "kind": 0, "start": 0, "end": 0,
                     "status_code": 0, "status_message": "",
                     "service": res_attrs.get("service.name")}
                kvs = []
                for n4, _, v in _fields(sp):
                    if n4 == 1:
                        s["trace_id"] = v.hex()
                    elif n4 == 2:
                        s["span_id"] = v.hex()
                    elif n4 == 4:
                        s["parent_span_id"] = v.hex()
                    elif n4 == 5:
                        s["name"] = v.decode("utf-8")
                    elif n4 == 6:
                        s["kind"] = v
                    elif n4 == 7:
                        s["start"] = struct.unpack("<Q", v)[0]
                    elif n4 == 8:
                        s["end"] = struct.unpack("<Q", v)[0]
                    elif n4 == 9:
                        kvs.append(v)
                    elif n4 == 15:
                        for n5, _, v5 in _fields(v):
                            if n5 == 2:
                                s["status_message"] = v5.decode("utf-8")
                            elif n5 == 3:
                                s["status_code"] = v5
                s["attrs"] = _attrs(kvs)
                spans.append(s)
    return spans


class Receiver:
    """Serves on 127.0.0.1 (a free port) until stop()."""

    def __init__(self):
        self.spans = []
        self.errors = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                    if self.path != "/v1/traces" or n > MAX_BODY:
                        raise ValueError("bad request %s %d" % (self.path, n))
                    body = self.rfile.read(n)
                    enc = self.headers.get("Content-Encoding", "")
                    if enc == "gzip":
                        body = gzip.decompress(body)
                    elif enc:
                        raise ValueError("encoding %s" % enc)
                    got = decode(body)
                except (ValueError, OSError, EOFError) as e:
                    with outer._lock:
                        outer.errors.append(str(e))
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with outer._lock:
                    outer.spans.extend(got)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._t = threading.Thread(target=self.server.serve_forever,
                                   daemon=True)
        self._t.start()

    def snapshot(self):
        with self._lock:
            return list(self.spans)

    def wait_for(self, pred, timeout=15.0):
        """Spans once pred(spans) is true; AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if pred(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError("spans not received in %.0f s: %d "
                                     "spans, errors %s"
                                     % (timeout, len(spans), self.errors))
            time.sleep(0.05)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self._t.join(5)
