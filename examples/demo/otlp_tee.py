#!/usr/bin/env python3
"""otlp_tee: a loopback OTLP/HTTP receiver that forwards every trace export
to the user's backend and keeps a local copy for the demo's report.

    python otlp_tee.py --port PORT --forward URL --out spans.jsonl

Each POST /v1/traces (protobuf ExportTraceServiceRequest, uncompressed or
gzip) is answered 200 at once, appended to --out as one line of OTLP JSON
(the format of libpdtrace's console exporter, which dashboard.py reads),
and forwarded unchanged (with the exporter's headers, e.g. those of
OTEL_EXPORTER_OTLP_HEADERS) to --forward, the backend's full traces URL,
by a background task that retries 429/502/503/504 and connection failures
a few times. GET /stats tells how many exports were received, forwarded
and failed, and the last forwarding error.

The protobuf decoding below reads only the fields the report uses (wire
field numbers from the OTLP specification).
"""
import argparse
import asyncio
import gzip
import json
import ssl
import struct
from typing import Any, Dict, Iterator, List, Optional, Tuple

import aiohttp
from aiohttp import web

# ---- protobuf wire format ---------------------------------------------------


def _varint(b: bytes, i: int) -> Tuple[int, int]:
    shift = 0
    v = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(b: bytes) -> Iterator[Tuple[int, int, Any]]:
    """(field number, wire type, value): int for varint and fixed, bytes
    for length-delimited."""
    i = 0
    n = len(b)
    while i < n:
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            if i + 8 > n:
                raise ValueError("truncated fixed64")
            v = struct.unpack_from("<Q", b, i)[0]
            i += 8
        elif wt == 2:
            ln, i = _varint(b, i)
            if i + ln > n:
                raise ValueError("truncated field %d" % num)
            v = b[i:i + ln]
            i += ln
        elif wt == 5:
            if i + 4 > n:
                raise ValueError("truncated fixed32")
            v = struct.unpack_from("<I", b, i)[0]
            i += 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        yield num, wt, v


def any_value(b: bytes) -> Dict[str, Any]:
    for num, wt, v in fields(b):
        if num == 1 and wt == 2:
            return {"stringValue": v.decode("utf-8", "replace")}
        if num == 2 and wt == 0:
            return {"boolValue": bool(v)}
        if num == 3 and wt == 0:
            return {"intValue": str(v - (1 << 64) if v >= 1 << 63 else v)}
        if num == 4 and wt == 1:
            return {"doubleValue": struct.unpack("<d",
                                                 struct.pack("<Q", v))[0]}
        if num == 5 and wt == 2:
            return {"arrayValue": {"values": [
                any_value(x) for n2, w2, x in fields(v) if n2 == 1]}}
        if num == 6 and wt == 2:
            return {"kvlistValue": {"values": [
                key_value(x) for n2, w2, x in fields(v) if n2 == 1]}}
        if num == 7 and wt == 2:
            return {"bytesValue": v.hex()}
    return {}


def key_value(b: bytes) -> Dict[str, Any]:
    kv: Dict[str, Any] = {"key": "", "value": {}}
    for num, wt, v in fields(b):
        if num == 1 and wt == 2:
            kv["key"] = v.decode("utf-8", "replace")
        elif num == 2 and wt == 2:
            kv["value"] = any_value(v)
    return kv


def span(b: bytes) -> Dict[str, Any]:
    s: Dict[str, Any] = {"attributes": []}
    for num, wt, v in fields(b):
        if wt == 2 and num in (1, 2, 4):
            s[{1: "traceId", 2: "spanId", 4: "parentSpanId"}[num]] = v.hex()
        elif num == 3 and wt == 2:
            s["traceState"] = v.decode("utf-8", "replace")
        elif num == 5 and wt == 2:
            s["name"] = v.decode("utf-8", "replace")
        elif num == 6 and wt == 0:
            s["kind"] = v
        elif num == 7 and wt == 1:
            s["startTimeUnixNano"] = str(v)
        elif num == 8 and wt == 1:
            s["endTimeUnixNano"] = str(v)
        elif num == 9 and wt == 2:
            s["attributes"].append(key_value(v))
        elif num == 15 and wt == 2:
            st: Dict[str, Any] = {}
            for n2, w2, x in fields(v):
                if n2 == 2 and w2 == 2:
                    st["message"] = x.decode("utf-8", "replace")
                elif n2 == 3 and w2 == 0:
                    st["code"] = x
            s["status"] = st
    return s


def decode_request(b: bytes) -> Dict[str, Any]:
    """ExportTraceServiceRequest (protobuf) as OTLP JSON."""
    out: List[Dict[str, Any]] = []
    for num, wt, rs in fields(b):
        if num != 1 or wt != 2:
            continue
        doc: Dict[str, Any] = {"resource": {"attributes": []},
                               "scopeSpans": []}
        for n2, w2, v in fields(rs):
            if n2 == 1 and w2 == 2:
                doc["resource"]["attributes"] = [
                    key_value(x) for n3, w3, x in fields(v) if n3 == 1]
            elif n2 == 2 and w2 == 2:
                ss: Dict[str, Any] = {"scope": {}, "spans": []}
                for n3, w3, x in fields(v):
                    if n3 == 1 and w3 == 2:
                        for n4, w4, y in fields(x):
                            if n4 in (1, 2) and w4 == 2:
                                ss["scope"]["name" if n4 == 1 else
                                            "version"] = y.decode(
                                                "utf-8", "replace")
                    elif n3 == 2 and w3 == 2:
                        ss["spans"].append(span(x))
                doc["scopeSpans"].append(ss)
        out.append(doc)
    return {"resourceSpans": out}


# ---- the receiver and forwarder ----------------------------------------------

HOP = {"host", "content-length", "connection", "transfer-encoding",
       "keep-alive", "accept-encoding"}


class Tee:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = open(args.out, "a", encoding="utf-8")
        self.queue: "asyncio.Queue[Optional[Tuple[bytes, Dict[str, str]]]]" \
            = asyncio.Queue(maxsize=10000)
        self.stats = {"received": 0, "spans": 0, "forwarded": 0,
                      "failed": 0, "bad": 0, "last_error": "",
                      "forward_url": args.forward}
        self.session: Optional[aiohttp.ClientSession] = None
        self.worker: Optional[asyncio.Task] = None

    async def start(self, app: web.Application) -> None:
        ctx = None
        if self.args.cafile:
            ctx = ssl.create_default_context(cafile=self.args.cafile)
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.args.timeout),
            connector=aiohttp.TCPConnector(ssl=ctx) if ctx else None)
        self.worker = asyncio.ensure_future(self.forward_loop())

    async def stop(self, app: web.Application) -> None:
        # Drain what is queued, within a bound.
        await self.queue.put(None)
        try:
            await asyncio.wait_for(self.worker, self.args.drain_timeout)
        except asyncio.TimeoutError:
            self.worker.cancel()
        await self.session.close()
        self.out.close()

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        raw = body
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                raw = gzip.decompress(body)
            except OSError:
                self.stats["bad"] += 1
                return web.Response(status=400, text="bad gzip body")
        try:
            doc = decode_request(raw)
        except ValueError as e:
            self.stats["bad"] += 1
            return web.Response(status=400, text="bad protobuf: %s" % e)
        self.stats["received"] += 1
        self.stats["spans"] += sum(len(ss["spans"])
                                   for rs in doc["resourceSpans"]
                                   for ss in rs["scopeSpans"])
        self.out.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self.out.flush()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in HOP}
        try:
            self.queue.put_nowait((body, headers))
        except asyncio.QueueFull:
            self.stats["failed"] += 1
            self.stats["last_error"] = "forwarding queue full"
        return web.Response(status=200,
                            content_type="application/x-protobuf", body=b"")

    async def forward_loop(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            body, headers = item
            err = ""
            for attempt in range(4):
                try:
                    async with self.session.post(self.args.forward,
                                                 data=body,
                                                 headers=headers) as r:
                        await r.read()
                        if r.status < 300:
                            err = ""
                            break
                        err = "HTTP %d from %s" % (r.status,
                                                   self.args.forward)
                        if r.status not in (429, 502, 503, 504):
                            break
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    err = "%s: %s" % (self.args.forward,
                                      str(e) or type(e).__name__)
                await asyncio.sleep(0.2 * 2 ** attempt)
            if err:
                self.stats["failed"] += 1
                self.stats["last_error"] = err
            else:
                self.stats["forwarded"] += 1

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats, queued=self.queue.qsize()))

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--forward", required=True,
                   help="the backend's traces URL (.../v1/traces)")
    p.add_argument("--out", required=True)
    p.add_argument("--cafile", help="CA bundle for an https backend")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--drain-timeout", type=float, default=15.0)
    args = p.parse_args()
    tee = Tee(args)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", tee.traces)
    app.router.add_get("/stats", tee.get_stats)
    app.router.add_get("/health", tee.health)
    app.on_startup.append(tee.start)
    app.on_cleanup.append(tee.stop)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
