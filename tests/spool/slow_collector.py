#!/usr/bin/env python3
"""Delivery through a slow collector, with and without a spool.

Runs spool_driver against a loopback OTLP/HTTP receiver that answers every
request after --delay-ms, ending --spans spans at --rate spans per second,
then lets the tracer replay its spool (up to --drain-ms) and close. Prints
one JSON line per run: spans ended, delivered live (spans_exported),
delivered from the spool (spans_replayed), received by the receiver
(unique span ids), duplicates (span ids received more than once), and the
drop counters.

    slow_collector.py DRIVER [--spans N] [--rate R] [--delay-ms MS]
        [--drain-ms MS] [--no-spool] [--spool-only]

Used by test_slow_collector.py with small numbers, and by hand with the
figures of the issue (21000 spans at 1500/s, 3000 ms answers).
"""

import argparse
import collections
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def fields(b):
    """(field, wire type, value) of a protobuf message; values of
    length-delimited fields are bytes."""
    i = 0
    while i < len(b):
        tag, i = varint(b, i)
        f, w = tag >> 3, tag & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        elif w == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % w)
        yield f, w, v


def span_ids(body):
    """Span ids of an ExportTraceServiceRequest (uncompressed)."""
    out = []
    for f, _, rs in fields(body):
        if f != 1:
            continue
        for g, _, ss in fields(rs):
            if g != 2:
                continue
            for h, _, sp in fields(ss):
                if h != 2:
                    continue
                for k, _, v in fields(sp):
                    if k == 2:
                        out.append(v.hex())
    return out


class Receiver:
    def __init__(self, delay_ms):
        self.delay = delay_ms / 1000.0
        self.lock = threading.Lock()
        self.ids = collections.Counter()
        self.requests = 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                ids = span_ids(body)
                time.sleep(outer.delay)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    return  # the client gave up: not delivered
                with outer.lock:
                    outer.requests += 1
                    outer.ids.update(ids)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d/v1/traces" % self.srv.server_address[1]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def run(driver, spans, rate, delay_ms, drain_ms, spool, timeout=600):
    rx = Receiver(delay_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="pdt-slow-") as tmp:
            args = [driver, "--endpoint", rx.endpoint, "--spans", str(spans),
                    "--rate", str(rate), "--batch", "512", "--queue", "2048",
                    "--delay", "200", "--export-timeout", "30000",
                    "--timeout", "10000", "--close-timeout", "10000",
                    "--drain-ms", str(drain_ms)]
            if spool:
                args += ["--spool", os.path.join(tmp, "spool")]
            p = subprocess.run(args, capture_output=True, text=True,
                               timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-2000:])
            st = json.loads([l for l in p.stdout.splitlines()
                             if l.startswith("{")][-1])
        time.sleep(delay_ms / 1000.0 + 0.5)  # answers still being written
        with rx.lock:
            got = dict(rx.ids)
    finally:
        rx.close()
    return {
        "spool": bool(spool),
        "spans_ended": st["spans_ended"],
        "live": st["spans_exported"],
        "replayed": st["spans_replayed"],
        "spooled": st["spans_spooled"],
        "received_unique": len(got),
        "duplicates": sum(c - 1 for c in got.values() if c > 1),
        "dropped_queue_full": st["dropped_queue_full"],
        "dropped_export_failed": st["dropped_export_failed"],
        "dropped_shutdown": st["dropped_shutdown"] + st["close_dropped"],
        "spool_left": st["spool_left"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("driver")
    ap.add_argument("--spans", type=int, default=21000)
    ap.add_argument("--rate", type=float, default=1500)
    ap.add_argument("--delay-ms", type=int, default=3000)
    ap.add_argument("--drain-ms", type=int, default=120000)
    ap.add_argument("--no-spool", action="store_true")
    ap.add_argument("--spool-only", action="store_true")
    a = ap.parse_args()
    modes = [False] if a.no_spool else [True] if a.spool_only else [False,
                                                                    True]
    for spool in modes:
        print(json.dumps(run(a.driver, a.spans, a.rate, a.delay_ms,
                             a.drain_ms, spool)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
