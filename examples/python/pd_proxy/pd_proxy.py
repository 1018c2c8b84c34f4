#!/usr/bin/env python3
"""pd_proxy: a prefill/decode coordinator traced with libpdtrace.

    python pd_proxy.py --port 8000 --prefill-url URL [--prefill-url URL ...]
                       --decode-url URL [--connector nixlv2|lmcache|sglang]
                       [--rate-limit RPS] [--max-concurrent N]

A Quart app (served by Hypercorn) whose upstream calls go through aiohttp
client sessions. Routes: POST /v1/completions, POST /v1/chat/completions,
GET /v1/models, GET /health, and GET /metrics: the tracer's Prometheus
metrics (true TTFT and its stages per connector, model and mode).

Flows (docs/upstreams.md):
  nixlv2   prefill with kv_transfer_params {do_remote_decode: true, ...},
           stream false, max_tokens 1; then decode with the client's body
           plus the kv_transfer_params the prefill returned.
  lmcache  prefill with max_tokens 1 (KV goes to the shared store), then
           the unmodified body to decode.
  sglang   the same body to prefill and decode at once, with
           bootstrap_host, bootstrap_port and bootstrap_room.
Prefill URLs are used round-robin.

Tracing: each completion request is a libpdtrace P/D request begun at
arrival (mark A), so time spent in the rate limiter or waiting for a
concurrency slot shows as queue_ms: prefill_sent is marked when the prefill
is actually dispatched. The first token (F) is the first non-empty SSE data
event forwarded to the client, or the first body byte for non-streaming
responses. Both legs get traceparent, tracestate and x-request-id. An
upstream failure gives the client a JSON error with 502, 503 or 504, and the
spans status ERROR. The client's traffic pattern, when sent in the
x-pdtrace-pattern header, is recorded as llm_d.pd_proxy.load_pattern.
The tracing calls are the binding's batched ones: the request is begun
with its id, connector, model and attributes in one library call, each
leg's headers come with its SENT mark, and the outcome, usage and end go
in one call.

Export follows the OTEL_* environment (OTLP/HTTP by default;
OTEL_TRACES_EXPORTER=console with PDTRACE_CONSOLE_PATH for JSON lines;
OTEL_SDK_DISABLED=true to turn tracing off).
"""
import argparse
import asyncio
import copy
import itertools
import json
import logging
import random
import sys
import time
from typing import Any, Dict, Optional

import aiohttp
from quart import Quart, Response, request

import pdtrace
from pdtrace import Leg, Mode

log = logging.getLogger("pd_proxy")
P = "llm_d.pd_proxy."


def now_ns() -> int:
    return time.monotonic_ns()


class Limiter:
    """Token bucket (rate RPS, burst max(1, RPS)) in front of a FIFO
    max-concurrent gate. Waiting here is coordinator queueing."""

    def __init__(self, rate: float, max_concurrent: int, max_queue: int):
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()
        self.sem = asyncio.Semaphore(max_concurrent) if max_concurrent > 0 \
            else None
        self.max_queue = max_queue
        self.waiting = 0

    def overloaded(self) -> bool:
        return self.max_queue > 0 and self.waiting >= self.max_queue

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            if self.rate > 0:
                async with self.lock:  # FIFO among waiters
                    while True:
                        t = time.monotonic()
                        self.tokens = min(self.burst, self.tokens +
                                          (t - self.stamp) * self.rate)
                        self.stamp = t
                        if self.tokens >= 1.0:
                            self.tokens -= 1.0
                            break
                        await asyncio.sleep((1.0 - self.tokens) / self.rate)
            if self.sem is not None:
                await self.sem.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        if self.sem is not None:
            self.sem.release()


class UpstreamError(Exception):
    """A failed upstream leg: the status for the client and an error type."""

    def __init__(self, client_status: int, error_type: str, message: str,
                 upstream_status: int = 0):
        super().__init__(message)
        self.client_status = client_status
        self.error_type = error_type
        self.upstream_status = upstream_status


def classify(exc: BaseException) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError(504, "timeout", "upstream timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(502, "connection_refused",
                             "cannot connect to upstream: %s" % exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamError(502, "upstream_disconnected",
                             "upstream closed the connection")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError(502, "upstream_error", str(exc) or
                             type(exc).__name__)
    return UpstreamError(502, type(exc).__name__, str(exc))


def status_error(status: int, body: bytes) -> UpstreamError:
    msg = body[:500].decode("utf-8", "replace")
    if status == 503 or status == 429:
        return UpstreamError(503, "upstream_unavailable", msg, status)
    if status == 504:
        return UpstreamError(504, "timeout", msg, status)
    if status >= 500:
        return UpstreamError(502, "upstream_error", msg, status)
    return UpstreamError(status, "upstream_client_error", msg, status)


def error_response(status: int, error_type: str, message: str,
                   request_id: str) -> Response:
    doc = {"error": {"message": message, "type": error_type, "code": status}}
    return Response(json.dumps(doc), status=status,
                    content_type="application/json",
                    headers={"x-request-id": request_id})


class Proxy:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prefill_urls = [u.rstrip("/") for u in args.prefill_url]
        self.decode_urls = [u.rstrip("/") for u in args.decode_url]
        self.rr_prefill = itertools.cycle(range(len(self.prefill_urls)))
        self.rr_decode = itertools.cycle(range(len(self.decode_urls)))
        self.limiter = Limiter(args.rate_limit, args.max_concurrent,
                               args.max_queue)
        self.tracer: Optional[pdtrace.Tracer] = None
        self.prefill_session: Optional[aiohttp.ClientSession] = None
        self.decode_session: Optional[aiohttp.ClientSession] = None
        self.trace_errors = 0

    async def start(self) -> None:
        self.tracer = pdtrace.Tracer()
        timeout = aiohttp.ClientTimeout(total=None,
                                        connect=self.args.connect_timeout,
                                        sock_read=self.args.upstream_timeout)

        def session():
            return aiohttp.ClientSession(
                timeout=timeout, auto_decompress=False,
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))

        self.prefill_session = session()
        self.decode_session = session()

    async def stop(self) -> None:
        for s in (self.prefill_session, self.decode_session):
            if s is not None:
                await s.close()
        if self.tracer is not None:
            try:
                # close() waits for the exporter, off the event loop.
                await asyncio.get_running_loop().run_in_executor(
                    None, self.tracer.close, 10.0)
            except pdtrace.PdtraceError as e:
                log.warning("tracer close: %s", e)

    # -- tracing calls never break serving ------------------------------------
    def t(self, fn, *args, **kw) -> Any:
        try:
            return fn(*args, **kw)
        except pdtrace.PdtraceError as e:
            self._trace_error(e)
            return e.headers

    def _trace_error(self, e: Exception) -> None:
        self.trace_errors += 1
        if self.trace_errors <= 10:
            log.warning("tracing: %s", e)

    def begin(self, arrival: int, hdrs, **kw) -> pdtrace.Request:
        """Begins the traced request with everything known at once; a
        refused setting (a malformed x-request-id, say) is logged and the
        request goes on without it."""
        try:
            return self.tracer.request(hdrs.get("traceparent"),
                                       hdrs.get("tracestate"), arrival,
                                       request_id=hdrs.get("x-request-id")
                                       or None, **kw)
        except pdtrace.PdtraceError as e:
            if e.request is None:
                raise
            self._trace_error(e)
            return e.request

    def metrics(self) -> Response:
        return Response(self.tracer.metrics(), status=200,
                        content_type=pdtrace.METRICS_CONTENT_TYPE)

    # -- upstream calls ---------------------------------------------------
    async def post_json(self, session, url: str, body: Dict[str, Any],
                        headers: Dict[str, str]):
        """POST and read the whole answer; raises UpstreamError."""
        try:
            async with session.post(url, json=body, headers=headers) as r:
                data = await r.read()
                if r.status >= 400:
                    raise status_error(r.status, data)
                return r.status, data
        except UpstreamError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise classify(e) from None

    async def completions(self, path: str, chat: bool) -> Response:
        arrival = now_ns()  # mark A
        hdrs = request.headers
        connector = self.args.connector
        try:
            raw = await request.get_data()
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            req = self.begin(arrival, hdrs, connector=connector)
            self.t(req.finish, 400, "invalid_request")
            req.free()
            return error_response(400, "invalid_request",
                                  "invalid JSON body: %s" % e, req.id or "")
        stream = bool(body.get("stream"))
        max_tokens = body.get("max_completion_tokens") or \
            body.get("max_tokens")
        attrs = {
            "http.request.method": "POST",
            "url.path": path,
            "gen_ai.operation.name": "chat" if chat else "text_completion",
            "gen_ai.request.stream": stream,
            P + "decode.streaming": stream,
        }
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            attrs["gen_ai.request.max_tokens"] = max_tokens
        pattern = hdrs.get("x-pdtrace-pattern")
        if pattern:
            attrs[P + "load_pattern"] = pattern
        model = body.get("model")
        req = self.begin(arrival, hdrs, connector=connector,
                         model=model if isinstance(model, str) and model
                         else None, attributes=attrs)
        rid = req.id or ""
        if connector == "sglang":
            self.t(req.set_mode, Mode.CONCURRENT)

        if self.limiter.overloaded():
            self._finish(req, 503, "overloaded")
            return error_response(503, "overloaded",
                                  "coordinator queue is full", rid)
        await self.limiter.acquire()
        released = False

        def release():
            nonlocal released
            if not released:
                released = True
                self.limiter.release()

        try:
            prefill_url = self.prefill_urls[next(self.rr_prefill)]
            decode_url = self.decode_urls[next(self.rr_decode)]
            if connector == "sglang":
                resp = await self._sglang(req, body, path, prefill_url,
                                          decode_url, stream, release)
            else:
                resp = await self._sequential(req, body, path, prefill_url,
                                              decode_url, stream, connector,
                                              release)
            return resp
        except UpstreamError as e:
            release()
            self._finish(req, e.client_status, e.error_type)
            return error_response(e.client_status, e.error_type, str(e),
                                  rid)
        except BaseException:
            release()
            req.free()  # recorded as abandoned
            raise

    def _finish(self, req: pdtrace.Request, status: int,
                error_type: Optional[str]) -> None:
        self.t(req.finish, status, error_type)
        req.free()

    def _send_prefill(self, req, url: str, path: str, body: Dict[str, Any]):
        """Marks Ps now and returns the coroutine doing the prefill leg."""
        headers = self.t(req.send_prefill)
        return self._prefill(req, url, path, body, headers)

    async def _prefill(self, req, url: str, path: str, body: Dict[str, Any],
                       headers: Optional[Dict[str, str]]) -> Dict[str, Any]:
        try:
            status, data = await self.post_json(self.prefill_session,
                                                url + path, body, headers)
        except UpstreamError as e:
            self.t(req.prefill_done, target=url, status=e.upstream_status,
                   error_type=e.error_type)
            raise
        self.t(req.prefill_done, target=url, status=status)
        try:
            return json.loads(data)
        except ValueError:
            raise UpstreamError(502, "invalid_response",
                                "prefill answered with invalid JSON")

    async def _sequential(self, req, body, path, prefill_url, decode_url,
                          stream, connector, release):
        pbody = copy.copy(body)
        pbody["stream"] = False
        pbody.pop("stream_options", None)
        pbody["max_tokens"] = 1
        if "max_completion_tokens" in body or connector == "nixlv2":
            pbody["max_completion_tokens"] = 1
        if connector == "nixlv2":
            pbody["kv_transfer_params"] = {
                "do_remote_decode": True, "do_remote_prefill": False,
                "remote_engine_id": None, "remote_block_ids": None,
                "remote_host": None, "remote_port": None}
        presp = await self._send_prefill(req, prefill_url, path, pbody)
        dbody = body
        if connector == "nixlv2":
            kvp = presp.get("kv_transfer_params")
            if not isinstance(kvp, dict):
                raise UpstreamError(502, "invalid_response",
                                    "prefill returned no kv_transfer_params")
            dbody = dict(body)
            dbody["kv_transfer_params"] = kvp
        return await self._decode(req, decode_url, path, dbody, stream,
                                   release, None)

    async def _sglang(self, req, body, path, prefill_url, decode_url,
                      stream, release):
        b = dict(body)
        host = prefill_url.split("://", 1)[-1].split("/", 1)[0]
        b["bootstrap_host"] = host.rsplit(":", 1)[0]
        b["bootstrap_port"] = self.args.bootstrap_port
        b["bootstrap_room"] = random.getrandbits(63)
        ptask = asyncio.ensure_future(self._send_prefill(req, prefill_url,
                                                         path, b))
        try:
            return await self._decode(req, decode_url, path, b, stream,
                                      release, ptask)
        except BaseException:
            if not ptask.done():
                ptask.cancel()
            raise

    async def _decode(self, req, url, path, body, stream, release, ptask):
        """Sends the decode leg and streams its answer to the client."""
        headers = self.t(req.send_decode)
        cm = self.decode_session.post(url + path, json=body, headers=headers)
        try:
            upstream = await cm.__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            err = classify(e)
            self.t(req.set_leg, Leg.DECODE, url, 0, err.error_type)
            raise err from None
        if upstream.status >= 400:
            data = await upstream.read()
            await cm.__aexit__(None, None, None)
            err = status_error(upstream.status, data)
            self.t(req.set_leg, Leg.DECODE, url, upstream.status,
                   err.error_type)
            raise err
        ctype = upstream.headers.get("Content-Type", "application/json")
        rid = req.id or ""
        gen = self._relay(req, url, upstream, cm, stream, release, ptask)
        resp = Response(gen, status=200, content_type=ctype,
                        headers={"x-request-id": rid})
        resp.timeout = None
        return resp

    async def _relay(self, req, url, upstream, cm, stream, release, ptask):
        """Forwards the decode answer; marks F, L, usage and the end."""
        n_tokens = 0
        last_ts = 0
        first = True
        usage = None
        buf = b""
        body_parts = []
        failure = None
        completed = False
        try:
            async for chunk in upstream.content.iter_any():
                if not chunk:
                    continue
                if not stream:
                    body_parts.append(chunk)
                    yield chunk
                    ts = now_ns()
                    if first:
                        first = False
                        self.t(req.tokens, 0, ts)
                    last_ts = ts
                    continue
                # SSE: find complete events to see whether they carry tokens
                buf += chunk
                new_tokens = 0
                while True:
                    i = buf.find(b"\n\n")
                    if i < 0:
                        break
                    event, buf = buf[:i], buf[i + 2:]
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if not data or data == b"[DONE]":
                            continue
                        if b'"usage"' in data:
                            try:
                                u = json.loads(data).get("usage")
                                if u:
                                    usage = u
                            except ValueError:
                                pass
                        if first:
                            if self._has_token(data):
                                new_tokens += 1
                        elif b'"choices": []' not in data and \
                                b'"choices":[]' not in data:
                            new_tokens += 1
                yield chunk
                if new_tokens:
                    ts = now_ns()
                    if first:
                        first = False
                        self.t(req.tokens, 1, ts)
                        new_tokens -= 1
                    n_tokens += new_tokens
                    last_ts = ts
            completed = True
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            failure = classify(e)
        finally:
            await cm.__aexit__(None, None, None)
            release()
            if ptask is not None:
                try:
                    await asyncio.wait_for(ptask, self.args.upstream_timeout)
                except (UpstreamError, asyncio.TimeoutError,
                        asyncio.CancelledError) as e:
                    if failure is None and isinstance(e, UpstreamError):
                        failure = e
            if n_tokens > 0:
                self.t(req.tokens, n_tokens, last_ts)
            elif last_ts and not stream:
                self.t(req.last_token, last_ts)
            if not stream and body_parts:
                try:
                    usage = json.loads(b"".join(body_parts)).get("usage")
                except ValueError:
                    usage = None
            usage_kw = {}
            if isinstance(usage, dict):
                details = usage.get("prompt_tokens_details") or {}
                usage_kw = dict(
                    input_tokens=usage.get("prompt_tokens"),
                    output_tokens=usage.get("completion_tokens"),
                    cached_input_tokens=details.get("cached_tokens")
                    if isinstance(details, dict) else None)
            if completed or failure is not None:
                err = failure.error_type if failure is not None else None
                self.t(req.finish, 200, err, decode_target=url,
                       decode_status=upstream.status, decode_error=err,
                       **usage_kw)
            req.free()  # not completed: the client went away (abandoned)

    @staticmethod
    def _has_token(data: bytes) -> bool:
        try:
            doc = json.loads(data)
        except ValueError:
            return False
        for c in doc.get("choices") or ():
            if c.get("text"):
                return True
            d = c.get("delta") or {}
            if d.get("content") or d.get("reasoning_content") or \
                    d.get("tool_calls"):
                return True
        return False

    async def models(self) -> Response:
        url = self.decode_urls[0] + "/v1/models"
        try:
            async with self.decode_session.get(url) as r:
                data = await r.read()
                return Response(data, status=r.status,
                                content_type="application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            err = classify(e)
            return error_response(err.client_status, err.error_type,
                                  str(err), "")


def build_app(args: argparse.Namespace) -> Quart:
    app = Quart(__name__)
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024
    proxy = Proxy(args)
    app.config["PD_PROXY"] = proxy

    @app.before_serving
    async def _start():
        await proxy.start()

    @app.after_serving
    async def _stop():
        await proxy.stop()

    @app.post("/v1/completions")
    async def _completions():
        return await proxy.completions("/v1/completions", chat=False)

    @app.post("/v1/chat/completions")
    async def _chat():
        return await proxy.completions("/v1/chat/completions", chat=True)

    @app.get("/v1/models")
    async def _models():
        return await proxy.models()

    @app.get("/health")
    async def _health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def _metrics():
        return proxy.metrics()

    return app


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--prefill-url", action="append", required=True)
    p.add_argument("--decode-url", action="append", required=True)
    p.add_argument("--connector", choices=("nixlv2", "lmcache", "sglang"),
                   default="nixlv2")
    p.add_argument("--rate-limit", type=float, default=0.0,
                   help="requests per second admitted (0: no limit)")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="requests in flight upstream (0: no limit)")
    p.add_argument("--max-queue", type=int, default=0,
                   help="requests allowed to wait; more get 503 (0: no "
                        "limit)")
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--upstream-timeout", type=float, default=120.0,
                   help="seconds without upstream data before 504")
    p.add_argument("--bootstrap-port", type=int, default=8998)
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="pd_proxy %(levelname)s %(message)s")
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    app = build_app(args)
    cfg = Config()
    cfg.bind = ["%s:%d" % (args.host, args.port)]
    cfg.accesslog = None
    cfg.errorlog = "-"
    cfg.loglevel = args.log_level
    cfg.graceful_timeout = 5
    cfg.keep_alive_timeout = 75
    print("pd_proxy listening on %s:%d (%s, prefill %s, decode %s)" % (
        args.host, args.port, args.connector, ",".join(args.prefill_url),
        ",".join(args.decode_url)), flush=True)

    import signal
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(serve(app, cfg, shutdown_trigger=stop.wait))
    finally:
        loop.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
