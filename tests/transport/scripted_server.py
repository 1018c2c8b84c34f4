#!/usr/bin/env python3
"""Scripted HTTP server for the transport integration test (loopback only).

Usage: scripted_server.py SCRIPT.json LOG.jsonl

Listens on 127.0.0.1 on a free port and prints the port number as the
first line of stdout. Each request gets the next response of the script;
when the script runs out, the last response repeats.

SCRIPT.json: {"responses": [RESPONSE, ...]} where RESPONSE has
  "status"          HTTP status (default 200)
  "headers"         extra response headers {name: value}
  "body_hex"        response body as hex (e.g. an encoded
                    ExportTraceServiceResponse)
  "body_size"       instead of body_hex: that many filler bytes, sent in
                    chunks (a connection closed early by the client is fine)
  "retry_after_in"  Retry-After as an HTTP-date this many seconds ahead
                    (whole seconds after the current time, rounded up)
  "hang"            true: read the request, then never answer
  "delay_ms"        wait this long before answering

LOG.jsonl gets one flat JSON object per line and request, flushed at once:
  n, t (wall-clock time.time() on arrival), method, path, client_port,
  concurrent (requests being served, this one included, when its body
  had been read),
  h_<lowercased header name> for every request header, raw_len (bytes on
  the wire), body_len, sha256 and (up to 1 MiB) body_hex of the
  decompressed body, decode_error,
  and for the answer: status, retry_after_epoch (when retry_after_in set).
"""

import ctypes
import ctypes.util
import email.utils
import gzip
import hashlib
import http.server
import json
import math
import os
import sys
import threading
import time

STOP = threading.Event()
LOCK = threading.Lock()
STATE = {"n": 0, "active": 0}


def zstd_decompress(data):
    """Decompresses one zstd frame through the system libzstd (ctypes)."""
    name = ctypes.util.find_library("zstd") or "libzstd.so.1"
    lib = ctypes.CDLL(name)
    lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
    lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                                    ctypes.c_char_p, ctypes.c_size_t]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    size = lib.ZSTD_getFrameContentSize(data, len(data))
    if size >= (1 << 63):
        raise ValueError("zstd frame without content size")
    out = ctypes.create_string_buffer(max(size, 1))
    got = lib.ZSTD_decompress(out, size, data, len(data))
    if lib.ZSTD_isError(got):
        raise ValueError("zstd decompression failed")
    return out.raw[:got]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so reuse can be seen

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def do_POST(self):
        self._serve()

    def do_GET(self):
        self._serve()

    def do_PUT(self):
        self._serve()

    def _serve(self):
        try:
            self._answer()
        finally:
            with LOCK:
                STATE["active"] -= 1

    def _answer(self):
        with LOCK:
            STATE["active"] += 1
        arrived = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        entry = {"t": arrived, "method": self.command, "path": self.path,
                 "client_port": self.client_address[1], "raw_len": len(raw)}
        for name, value in self.headers.items():
            entry["h_" + name.lower()] = value
        body, err = raw, ""
        enc = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if enc == "gzip":
                body = gzip.decompress(raw)
            elif enc == "zstd":
                body = zstd_decompress(raw)
        except Exception as exc:  # recorded for the test to see
            err = str(exc)
        entry["body_len"] = len(body)
        entry["sha256"] = hashlib.sha256(body).hexdigest()
        if len(body) <= (1 << 20):
            entry["body_hex"] = body.hex()
        entry["decode_error"] = err

        with LOCK:
            n = STATE["n"]
            STATE["n"] = n + 1
            entry["concurrent"] = STATE["active"]
            responses = SCRIPT["responses"]
            resp = responses[min(n, len(responses) - 1)] if responses else {}
        entry["n"] = n
        status = int(resp.get("status", 200))
        entry["status"] = status
        headers = dict(resp.get("headers", {}))
        if "retry_after_in" in resp:
            when = math.ceil(time.time()) + int(resp["retry_after_in"])
            headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
            entry["retry_after_epoch"] = when
        entry["hang"] = bool(resp.get("hang", False))
        write_log(entry)

        if resp.get("delay_ms"):
            time.sleep(float(resp["delay_ms"]) / 1000.0)
        if resp.get("hang"):
            STOP.wait()
            self.close_connection = True
            return
        if "body_size" in resp:
            size = int(resp["body_size"])
            body_out = None
        else:
            body_out = bytes.fromhex(resp.get("body_hex", ""))
            size = len(body_out)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            if body_out is not None:
                self.wfile.write(body_out)
            else:
                chunk = b"\x00" * 65536
                left = size
                while left > 0:
                    self.wfile.write(chunk[:min(left, len(chunk))])
                    left -= min(left, len(chunk))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def write_log(entry):
    with LOCK:
        LOG.write(json.dumps(entry, sort_keys=True) + "\n")
        LOG.flush()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler never blocks exit


def watchdog(parent, limit):
    """Exits when the test that started us is gone, or after `limit` s."""
    start = time.time()
    while os.getppid() == parent and time.time() - start < limit:
        time.sleep(0.2)
    os._exit(0)


def main():
    global SCRIPT, LOG
    threading.Thread(target=watchdog, args=(os.getppid(), 120),
                     daemon=True).start()
    with open(sys.argv[1]) as f:
        SCRIPT = json.load(f)
    LOG = open(sys.argv[2], "a")
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        STOP.set()


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    main()
