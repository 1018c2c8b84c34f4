#!/usr/bin/env python3
"""Loopback OTLP/HTTP trace sink for the libpdtrace integration tests.

Listens on 127.0.0.1 (port 0 by default: the kernel picks one), accepts
``POST /v1/traces`` with a protobuf (or JSON) ``ExportTraceServiceRequest``,
optionally gzip- or zstd-compressed as ``Content-Encoding`` says, decodes it
with the official ``opentelemetry-proto`` classes and appends every span as
one JSON line to the output file. Answers 200 with an empty
``ExportTraceServiceResponse``.

The chosen port is printed on stdout as the first line, then stdout is
flushed, so a parent process can read it.

Span line format (see span_to_dict)::

    {"trace_id": hex, "span_id": hex, "parent_span_id": hex or "",
     "trace_state": str, "flags": int, "name": str, "kind": int,
     "kind_name": "SERVER", "start_time_unix_nano": int,
     "end_time_unix_nano": int,
     "status": {"code": int, "message": str},
     "attributes": {key: {"type": "string"|"int"|"double"|"bool"|"bytes"|
                                  "array"|"kvlist"|"empty",
                          "value": ...}},
     "events": [{"name", "time_unix_nano", "attributes"}],
     "links": [{"trace_id", "span_id", "trace_state", "flags", "attributes"}],
     "dropped_attributes_count", "dropped_events_count",
     "dropped_links_count",
     "resource": {"attributes": {...}, "dropped_attributes_count": int},
     "resource_schema_url": str,
     "scope": {"name", "version", "attributes"}, "scope_schema_url": str,
     "request_seq": int}

With --requests-log, one JSON line per HTTP request is also written:
path, content type and encoding, body sizes, span count, answer status.
With --raw-dir, each request body is saved as received (before
decompression) as NNNNNN.bin (plus NNNNNN.json holding its headers).
"""

import argparse
import base64
import gzip
import io
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

try:
    import zstandard
except ImportError:  # zstd bodies are then answered with 415
    zstandard = None

MAX_BODY = 64 * 1024 * 1024
MAX_DECODED = 256 * 1024 * 1024

KIND_NAMES = {
    0: "UNSPECIFIED",
    1: "INTERNAL",
    2: "SERVER",
    3: "CLIENT",
    4: "PRODUCER",
    5: "CONSUMER",
}


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def any_value_to_typed(v):
    """AnyValue -> {"type": ..., "value": ...}, keeping the value's type."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return {"type": "string", "value": v.string_value}
    if which == "bool_value":
        return {"type": "bool", "value": v.bool_value}
    if which == "int_value":
        return {"type": "int", "value": v.int_value}
    if which == "double_value":
        return {"type": "double", "value": v.double_value}
    if which == "bytes_value":
        return {"type": "bytes", "value": base64.b64encode(v.bytes_value).decode("ascii")}
    if which == "array_value":
        return {"type": "array", "value": [any_value_to_typed(x) for x in v.array_value.values]}
    if which == "kvlist_value":
        return {"type": "kvlist", "value": attributes_to_dict(v.kvlist_value.values)}
    return {"type": "empty", "value": None}


def attributes_to_dict(kvs):
    out = {}
    for kv in kvs:
        out[kv.key] = any_value_to_typed(kv.value)
    return out


def span_to_dict(span, resource, resource_schema_url, scope, scope_schema_url):
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "trace_state": span.trace_state,
        "flags": span.flags,
        "name": span.name,
        "kind": int(span.kind),
        "kind_name": KIND_NAMES.get(int(span.kind), str(int(span.kind))),
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "status": {"code": int(span.status.code), "message": span.status.message},
        "attributes": attributes_to_dict(span.attributes),
        "dropped_attributes_count": span.dropped_attributes_count,
        "events": [
            {
                "name": e.name,
                "time_unix_nano": e.time_unix_nano,
                "attributes": attributes_to_dict(e.attributes),
                "dropped_attributes_count": e.dropped_attributes_count,
            }
            for e in span.events
        ],
        "dropped_events_count": span.dropped_events_count,
        "links": [
            {
                "trace_id": l.trace_id.hex(),
                "span_id": l.span_id.hex(),
                "trace_state": l.trace_state,
                "flags": l.flags,
                "attributes": attributes_to_dict(l.attributes),
            }
            for l in span.links
        ],
        "dropped_links_count": span.dropped_links_count,
        "resource": {
            "attributes": attributes_to_dict(resource.attributes),
            "dropped_attributes_count": resource.dropped_attributes_count,
        },
        "resource_schema_url": resource_schema_url,
        "scope": {
            "name": scope.name,
            "version": scope.version,
            "attributes": attributes_to_dict(scope.attributes),
        },
        "scope_schema_url": scope_schema_url,
    }


def request_to_span_dicts(req):
    out = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append(span_to_dict(span, rs.resource, rs.schema_url, ss.scope, ss.schema_url))
    return out


def decompress(body, encoding):
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity", "none"):
        return body
    if enc == "gzip":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as f:
                data = f.read(MAX_DECODED + 1)
        except (OSError, EOFError) as e:
            raise BadRequest(400, "bad gzip body: %s" % e)
    elif enc == "zstd":
        if zstandard is None:
            raise BadRequest(415, "zstd not available (pip install zstandard)")
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body))
            data = reader.read(MAX_DECODED + 1)
            # A single read may stop at a frame boundary; drain the rest.
            while len(data) <= MAX_DECODED:
                more = reader.read(MAX_DECODED + 1 - len(data))
                if not more:
                    break
                data += more
        except zstandard.ZstdError as e:
            raise BadRequest(400, "bad zstd body: %s" % e)
    else:
        raise BadRequest(415, "unsupported Content-Encoding %r" % encoding)
    if len(data) > MAX_DECODED:
        raise BadRequest(413, "decoded body too large")
    return data


def decode_export_request(body, content_type):
    ctype = (content_type or "").split(";")[0].strip().lower()
    req = ExportTraceServiceRequest()
    try:
        if ctype == "application/json":
            json_format.Parse(body.decode("utf-8"), req)
        else:
            req.ParseFromString(body)
    except Exception as e:  # DecodeError, ParseError, UnicodeDecodeError
        raise BadRequest(400, "cannot decode ExportTraceServiceRequest: %s" % e)
    return req, ctype


class Sink:
    def __init__(self, out_path, requests_log=None, raw_dir=None):
        self.out_path = out_path
        self.requests_log = requests_log
        self.raw_dir = raw_dir
        self.lock = threading.Lock()
        self.seq = 0
        # Create (truncate) the output files so readers can open them at once.
        open(out_path, "w").close()
        if requests_log:
            open(requests_log, "w").close()
        if raw_dir:
            os.makedirs(raw_dir, exist_ok=True)

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def save_raw(self, seq, body, headers):
        if not self.raw_dir:
            return
        base = os.path.join(self.raw_dir, "%06d" % seq)
        with open(base + ".bin", "wb") as f:
            f.write(body)
        with open(base + ".json", "w") as f:
            json.dump(dict(headers.items()), f)

    def write_spans(self, seq, spans):
        lines = []
        for s in spans:
            s["request_seq"] = seq
            lines.append(json.dumps(s, sort_keys=True) + "\n")
        with self.lock:
            with open(self.out_path, "a") as f:
                f.writelines(lines)
                f.flush()

    def log_request(self, record):
        if not self.requests_log:
            return
        with self.lock:
            with open(self.requests_log, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
                f.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pdtrace-sink/1"

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def _answer(self, status, body=b"", ctype="application/x-protobuf"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise BadRequest(400, "truncated chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    # Trailers up to the empty line.
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise BadRequest(413, "body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(16)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest(411, "Content-Length required")
        n = int(length)
        if n < 0 or n > MAX_BODY:
            raise BadRequest(413, "body too large")
        return self.rfile.read(n)

    def do_GET(self):
        # Readiness probe.
        if self.path == "/healthz":
            self._answer(200, b"ok\n", "text/plain")
        else:
            self._answer(404, b"not found\n", "text/plain")

    def do_POST(self):
        sink = self.server.sink
        seq = sink.next_seq()
        record = {
            "seq": seq,
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "user_agent": self.headers.get("User-Agent"),
        }
        # Both output files are written before the answer goes out, so a
        # client that got its answer finds its spans and its record there.
        try:
            if self.path.split("?")[0] != "/v1/traces":
                raise BadRequest(404, "unknown path %s" % self.path)
            body = self._read_body()
            record["body_len"] = len(body)
            sink.save_raw(seq, body, self.headers)
            data = decompress(body, self.headers.get("Content-Encoding"))
            record["decoded_len"] = len(data)
            req, ctype = decode_export_request(data, self.headers.get("Content-Type"))
            spans = request_to_span_dicts(req)
            record["spans"] = len(spans)
            sink.write_spans(seq, spans)
            if ctype == "application/json":
                answer = (200, b"{}", "application/json")
            else:
                answer = (200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")
        except BadRequest as e:
            record["error"] = e.message
            answer = (e.status, e.message.encode() + b"\n", "text/plain")
        except ValueError as e:
            record["error"] = str(e)
            answer = (400, b"bad request\n", "text/plain")
        record["status"] = answer[0]
        sink.log_request(record)
        if answer[0] != 200:
            self.close_connection = True
        self._answer(*answer)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="span JSON-lines output file")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    ap.add_argument("--requests-log", help="per-request JSON-lines log file")
    ap.add_argument("--raw-dir", help="directory to save raw request bodies in")
    args = ap.parse_args(argv)

    srv = Server(("127.0.0.1", args.port), Handler)
    srv.sink = Sink(args.out, args.requests_log, args.raw_dir)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.write("%d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.1)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
