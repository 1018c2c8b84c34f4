#!/usr/bin/env python3
"""A loopback OTLP/HTTP sink for JSON-encoded traces: every POST /v1/traces
body (an ExportTraceServiceRequest in OTLP JSON, as a Collector's otlphttp
exporter sends with `encoding: json`) is appended to --out as one line, the
same format as libpdtrace's console exporter."""
import argparse
import gzip
import json

from aiohttp import web


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = open(args.out, "a", encoding="utf-8")

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        try:
            doc = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="expected OTLP JSON")
        out.write(json.dumps(doc, separators=(",", ":")) + "\n")
        out.flush()
        return web.json_response({})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
