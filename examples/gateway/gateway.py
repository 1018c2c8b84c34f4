#!/usr/bin/env python3
"""gateway: an inference gateway and endpoint picker (EPP) simulator in
front of one P/D proxy (pd_proxy or the Go sidecar), traced with
libpdtrace.

    python gateway.py --port 8080 --proxy-url http://127.0.0.1:8000 \\
        --decode 127.0.0.1:8200 --prefill 127.0.0.1:8100,127.0.0.1:8101 \\
        --routing prefix-aware --pd-threshold 512 --tenant-header x-tenant

For each POST /v1/chat/completions or /v1/completions it
  1. records ``gateway.request`` (SERVER, service
     ``gateway-api-inference-extension``), a child of the client's
     traceparent if there is one;
  2. scores the decode and prefill servers by the prompt prefix each one
     holds (``llm_d.epp.scorer.prefix_cache``, INTERNAL, service
     ``llm-d-inference-scheduler``);
  3. picks a decode server and, unless selective P/D chooses decode-only,
     a prefill server (``llm_d.epp.profile_handler.pick``, INTERNAL, same
     service, with ``decision``, ``cache_hit_ratio``, ``pd_threshold``,
     ``user_input_bytes``);
  4. forwards the request to the proxy with the gateway span's
     ``traceparent`` (so the proxy's ``llm_d.pd_proxy.request`` is its
     child), ``x-prefiller-host-port`` (absent for decode-only),
     ``x-decoder-host-port``, ``x-request-id``, the conversation headers
     and the tenant, and streams the answer back.

GET /health answers {"status": "ok", ...}; GET /v1/models is passed
through untraced. docs/gateway.md describes the headers, attributes and
scoring. Export follows the OTEL_* environment (OTLP/HTTP by default;
OTEL_TRACES_EXPORTER=console with PDTRACE_CONSOLE_PATH for JSON lines);
the two service names are options, not taken from OTEL_SERVICE_NAME.
"""
import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import uuid
from typing import Any, Dict, List, Optional

import aiohttp
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import epp  # noqa: E402

import pdtrace  # noqa: E402
from pdtrace import SpanKind, StatusCode  # noqa: E402

log = logging.getLogger("gateway")

GATEWAY_SERVICE = "gateway-api-inference-extension"
EPP_SERVICE = "llm-d-inference-scheduler"

# Headers the gateway sets towards the proxy.
H_PREFILLER = "x-prefiller-host-port"
H_DECODER = "x-decoder-host-port"
H_REASON = "x-pd-decision-reason"
H_REQUEST_ID = "x-request-id"
H_CONVERSATION = "x-conversation-id"
H_TURN = "x-turn-index"
H_TENANT = "x-tenant"

# Attributes of our own (documented in docs/gateway.md).
A_TURN = "llm_d.conversation.turn_index"
A_TENANT = "llm_d.tenant"
G = "llm_d.gateway."
S = "llm_d.epp.prefix_cache."

MAX_ID_LEN = 256
MAX_BODY = 32 * 1024 * 1024
# Not forwarded: hop-by-hop headers, those aiohttp sets itself, trace
# context (replaced by the gateway span's) and routing headers a client
# must not choose.
DROP = {"host", "content-length", "connection", "keep-alive",
        "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "traceparent", "tracestate", H_PREFILLER, H_DECODER, H_REASON,
        H_TENANT}
HOSTPORT = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$")
PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


class ClientError(Exception):
    def __init__(self, message: str, error_type: str = "invalid_request"):
        super().__init__(message)
        self.error_type = error_type


def host_ports(value: str, flag: str) -> List[str]:
    out = [v.strip() for v in value.split(",") if v.strip()]
    for v in out:
        if not HOSTPORT.match(v) or not 0 < int(v.rsplit(":", 1)[1]) < 65536:
            raise argparse.ArgumentTypeError(
                "%s: %r is not host:port" % (flag, v))
    return out


def error_body(status: int, error_type: str, message: str,
               request_id: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": error_type, "code": status}},
        status=status, headers={H_REQUEST_ID: request_id})


def read_ids(hdrs, tenant_header: Optional[str]) -> Dict[str, Any]:
    """Conversation id, turn index and tenant from the request headers.
    Raises ClientError for a malformed value."""
    out: Dict[str, Any] = {}
    conv = hdrs.get(H_CONVERSATION)
    if conv is not None:
        if not PRINTABLE.match(conv) or len(conv) > MAX_ID_LEN:
            raise ClientError("%s must be 1-%d printable ASCII characters "
                              "without spaces" % (H_CONVERSATION, MAX_ID_LEN))
        out["conversation"] = conv
    turn = hdrs.get(H_TURN)
    if turn is not None:
        if not turn.isdigit() or len(turn) > 9:
            raise ClientError("%s must be a non-negative integer, not %r"
                              % (H_TURN, turn[:32]))
        out["turn"] = int(turn)
    if tenant_header:
        tenant = hdrs.get(tenant_header)
        if tenant is not None:
            tenant = tenant.strip()
            if not tenant or len(tenant) > MAX_ID_LEN or \
                    any(ord(c) < 0x20 or ord(c) == 0x7f for c in tenant):
                raise ClientError("%s must be 1-%d characters without "
                                  "control characters"
                                  % (tenant_header, MAX_ID_LEN))
            out["tenant"] = tenant
    return out


class Gateway:
    def __init__(self, args: argparse.Namespace,
                 tracer: pdtrace.Tracer, epp_tracer: pdtrace.Tracer) -> None:
        self.args = args
        self.tracer = tracer
        self.epp_tracer = epp_tracer
        self.picker = epp.Picker(args.decode, args.prefill, args.routing,
                                 args.pd_threshold, args.block_size,
                                 args.lru_blocks)
        self.proxy = args.proxy_url.rstrip("/")
        self.session: Optional[aiohttp.ClientSession] = None
        self.requests = 0

    async def start(self, app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=self.args.upstream_timeout,
                                        connect=10)
        self.session = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0))

    async def stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    @staticmethod
    def _t(fn, *a, **kw):
        """A tracing call whose failure must not fail the request."""
        try:
            return fn(*a, **kw)
        except pdtrace.PdtraceError as e:
            log.debug("pdtrace: %s", e)
            return None

    async def health(self, request: web.Request) -> web.Response:
        p = self.picker
        return web.json_response({
            "status": "ok", "routing": p.routing,
            "pd_threshold": p.pd_threshold, "block_size": p.block_size,
            "proxy": self.proxy, "requests": self.requests,
            "decode": {s: {"cached_blocks": len(p.decode.caches[s]),
                           "inflight": p.decode.inflight[s]}
                       for s in p.decode.servers},
            "prefill": {s: {"cached_blocks": len(p.prefill.caches[s]),
                            "inflight": p.prefill.inflight[s]}
                        for s in p.prefill.servers},
        })

    async def models(self, request: web.Request) -> web.Response:
        assert self.session is not None
        try:
            async with self.session.get(self.proxy + "/v1/models") as r:
                data = await r.read()
                return web.Response(body=data, status=r.status,
                                    content_type=r.content_type)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return error_body(502, "proxy_unavailable", str(e) or
                              type(e).__name__, "")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self.completions(request, True)

    async def text(self, request: web.Request) -> web.StreamResponse:
        return await self.completions(request, False)

    async def completions(self, request: web.Request,
                          chat: bool) -> web.StreamResponse:
        self.requests += 1
        hdrs = request.headers
        span = self.tracer.start_span(
            "gateway.request", SpanKind.SERVER,
            traceparent=hdrs.get("traceparent"),
            tracestate=hdrs.get("tracestate"))
        try:
            return await self._completions(request, chat, span)
        except BaseException as e:
            # Cancelled (client gone) or a bug: the span says so.
            self._t(span.set, "error.type", type(e).__name__)
            self._t(span.set_status, StatusCode.ERROR, type(e).__name__)
            raise
        finally:
            span.free()  # ends it if not ended

    async def _completions(self, request: web.Request, chat: bool,
                           span: pdtrace.Span) -> web.StreamResponse:
        hdrs = request.headers
        rid = hdrs.get(H_REQUEST_ID) or ""
        if not rid or not PRINTABLE.match(rid) or len(rid) > MAX_ID_LEN:
            rid = "gw-" + uuid.uuid4().hex
        attrs: Dict[str, Any] = {
            "http.request.method": "POST",
            "url.path": request.path,
            "gen_ai.operation.name": "chat" if chat else "text_completion",
            G + "request_id": rid,
            G + "routing": self.picker.routing,
        }

        def fail(status: int, error_type: str, msg: str) -> web.Response:
            attrs["http.response.status_code"] = status
            attrs["error.type"] = error_type
            self._t(span.set_attributes, attrs)
            if status >= 500:
                self._t(span.set_status, StatusCode.ERROR, msg[:200])
            return error_body(status, error_type, msg, rid)

        try:
            ids = read_ids(hdrs, self.args.tenant_header)
        except ClientError as e:
            return fail(400, e.error_type, str(e))
        if "conversation" in ids:
            attrs["gen_ai.conversation.id"] = ids["conversation"]
        if "turn" in ids:
            attrs[A_TURN] = ids["turn"]
        if "tenant" in ids:
            attrs[A_TENANT] = ids["tenant"]
        if request.content_length is not None and \
                request.content_length > MAX_BODY:
            return fail(413, "body_too_large", "body over %d bytes"
                        % MAX_BODY)
        try:
            raw = await request.content.read(MAX_BODY + 1)
            if len(raw) > MAX_BODY:
                return fail(413, "body_too_large", "body over %d bytes"
                            % MAX_BODY)
            body = json.loads(raw)
            text = epp.prompt_text(body, chat)
        except (ValueError, UnicodeDecodeError) as e:
            return fail(400, "invalid_request", "invalid body: %s" % e)
        model = body.get("model")
        model = model if isinstance(model, str) else ""
        if model:
            attrs["gen_ai.request.model"] = model
        attrs["gen_ai.request.stream"] = bool(body.get("stream"))

        parent = span.headers()
        route = self._schedule(parent, text, model)
        attrs[G + "decode_target"] = route.decode
        attrs[G + "decision"] = route.decision.decision
        if route.prefill:
            attrs[G + "prefill_target"] = route.prefill

        out = {k.lower(): v for k, v in hdrs.items()
               if k.lower() not in DROP}
        out.update(parent)  # traceparent (+ tracestate) of gateway.request
        out[H_REQUEST_ID] = rid
        out[H_DECODER] = route.decode
        out[H_REASON] = route.decision.reason
        if route.prefill:
            out[H_PREFILLER] = route.prefill
        if "tenant" in ids:
            out[H_TENANT] = ids["tenant"]
        # Conversation headers pass through unchanged (already in out).

        pools = [(self.picker.decode, route.decode)]
        if route.prefill:
            pools.append((self.picker.prefill, route.prefill))
        for pool, s in pools:
            pool.inflight[s] += 1
        try:
            return await self._forward(request, span, attrs, out, raw, fail)
        finally:
            for pool, s in pools:
                pool.inflight[s] -= 1

    def _schedule(self, parent: Dict[str, str], text: str,
                  model: str) -> epp.Route:
        """The EPP's two spans: prefix scoring, then the P/D pick."""
        tp, ts = parent.get("traceparent"), parent.get("tracestate")
        picker = self.picker
        sc = self.epp_tracer.start_span("llm_d.epp.scorer.prefix_cache",
                                        SpanKind.INTERNAL, traceparent=tp,
                                        tracestate=ts)
        try:
            hashes = picker.hashes(text, model)
            scores = picker.score(hashes)
            best = max(v[0] for v in scores[0].values())
            self._t(sc.set_attributes, {
                S + "block_size": picker.block_size,
                S + "total_blocks": len(hashes),
                S + "decode_scores": epp.format_scores(scores[0]),
                S + "prefill_scores": epp.format_scores(scores[1]),
                S + "max_matched_blocks": best,
                S + "servers_with_hits": sum(
                    1 for pool in scores for v in pool.values() if v[0]),
            })
        finally:
            sc.free()
        pk = self.epp_tracer.start_span("llm_d.epp.profile_handler.pick",
                                        SpanKind.INTERNAL, traceparent=tp,
                                        tracestate=ts)
        try:
            user_bytes = len(text.encode("utf-8", "surrogatepass"))
            route = picker.pick(hashes, user_bytes, scores)
            d = route.decision
            attrs: Dict[str, Any] = {
                "decision": d.decision,
                "reason": d.reason,
                "cache_hit_ratio": float(d.cache_hit_ratio),
                "pd_threshold": d.pd_threshold,
                "user_input_bytes": d.user_input_bytes,
                "uncached_input_bytes": d.uncached_input_bytes,
                "routing": picker.routing,
                "decode_target": route.decode,
            }
            if route.prefill:
                attrs["prefill_target"] = route.prefill
            self._t(pk.set_attributes, attrs)
            picker.learn(route, hashes)
        finally:
            pk.free()
        return route

    async def _forward(self, request, span, attrs, out, raw,
                       fail) -> web.StreamResponse:
        assert self.session is not None
        url = self.proxy + request.path
        try:
            async with self.session.post(url, data=raw, headers=out) as r:
                attrs["http.response.status_code"] = r.status
                if r.status >= 500:
                    attrs["error.type"] = str(r.status)
                    self._t(span.set_status, StatusCode.ERROR,
                            "proxy answered %d" % r.status)
                resp = web.StreamResponse(status=r.status)
                for k in ("Content-Type", "Content-Encoding",
                          "Cache-Control", H_REQUEST_ID):
                    if k in r.headers:
                        resp.headers[k] = r.headers[k]
                resp.headers.setdefault(H_REQUEST_ID, out[H_REQUEST_ID])
                await resp.prepare(request)
                async for chunk in r.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                self._t(span.set_attributes, attrs)
                return resp
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            if "http.response.status_code" in attrs:
                # The answer had started: the client sees a cut stream.
                attrs["error.type"] = type(e).__name__
                self._t(span.set_attributes, attrs)
                self._t(span.set_status, StatusCode.ERROR, "proxy stream "
                        "broken: %s" % (str(e) or type(e).__name__))
                raise
            status = 504 if isinstance(e, asyncio.TimeoutError) else 502
            return fail(status, "proxy_unavailable",
                        "proxy %s: %s" % (self.proxy,
                                          str(e) or type(e).__name__))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Inference gateway + EPP simulator in front of one P/D "
        "proxy, traced with libpdtrace.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--proxy-url", required=True,
                   help="base URL of pd_proxy or the Go sidecar")
    p.add_argument("--decode", required=True, action="append",
                   help="decode servers host:port[,host:port...] "
                   "(repeatable)")
    p.add_argument("--prefill", action="append", default=[],
                   help="prefill servers host:port[,...] (repeatable; none: "
                   "every request is decode-only)")
    p.add_argument("--routing", choices=epp.ROUTING_MODES,
                   default="prefix-aware")
    p.add_argument("--pd-threshold", type=int, default=0,
                   help="decode-only when fewer uncached prompt bytes than "
                   "this (0: always prefill+decode)")
    p.add_argument("--block-size", type=int, default=epp.DEFAULT_BLOCK_SIZE,
                   help="prefix-cache block in bytes (64 = about 16 tokens)")
    p.add_argument("--lru-blocks", type=int, default=epp.DEFAULT_LRU_BLOCKS,
                   help="blocks remembered per server")
    p.add_argument("--tenant-header", default="x-tenant",
                   help="request header naming the tenant ('' to disable)")
    p.add_argument("--upstream-timeout", type=float, default=600.0,
                   help="seconds for one proxy call")
    p.add_argument("--service-name", default=GATEWAY_SERVICE)
    p.add_argument("--epp-service-name", default=EPP_SERVICE)
    a = p.parse_args(argv)
    try:
        a.decode = [s for v in a.decode for s in host_ports(v, "--decode")]
        a.prefill = [s for v in a.prefill
                     for s in host_ports(v, "--prefill")]
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if not a.decode:
        p.error("--decode: at least one host:port is needed")
    if not a.proxy_url.startswith(("http://", "https://")):
        p.error("--proxy-url must start with http:// or https://")
    for name in ("pd_threshold", "block_size", "lru_blocks"):
        v = getattr(a, name)
        if v < (0 if name == "pd_threshold" else 1):
            p.error("--%s: %d is out of range" % (name.replace("_", "-"), v))
    if not 0 < a.port < 65536:
        p.error("--port: %d is out of range" % a.port)
    if a.upstream_timeout <= 0:
        p.error("--upstream-timeout must be positive")
    try:
        epp.Picker(a.decode, a.prefill, a.routing, a.pd_threshold,
                   a.block_size, a.lru_blocks)
    except ValueError as e:
        p.error(str(e))
    return a


def make_app(args: argparse.Namespace, tracer: pdtrace.Tracer,
             epp_tracer: pdtrace.Tracer) -> web.Application:
    gw = Gateway(args, tracer, epp_tracer)
    app = web.Application(client_max_size=MAX_BODY)
    app["gateway"] = gw
    app.on_startup.append(gw.start)
    app.on_cleanup.append(gw.stop)
    app.router.add_post("/v1/chat/completions", gw.chat)
    app.router.add_post("/v1/completions", gw.text)
    app.router.add_get("/v1/models", gw.models)
    app.router.add_get("/health", gw.health)
    return app


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s gateway %(message)s")

    def tlog(level, msg):
        log.warning("pdtrace: %s", msg)

    tracer = pdtrace.Tracer(service_name=args.service_name, log=tlog)
    epp_tracer = pdtrace.Tracer(service_name=args.epp_service_name, log=tlog)
    app = make_app(args, tracer, epp_tracer)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        print("gateway listening on %s:%d -> %s, routing %s, decode %s, "
              "prefill %s, pd_threshold %d" % (
                  args.host, args.port, args.proxy_url, args.routing,
                  ",".join(args.decode), ",".join(args.prefill) or "-",
                  args.pd_threshold), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    try:
        asyncio.run(serve())
    finally:
        for t in (tracer, epp_tracer):
            try:
                t.close(timeout=5.0)
            except pdtrace.PdtraceError as e:
                log.warning("pdtrace close: %s", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
