#!/usr/bin/env python3
"""pd_proxy: a prefill/decode coordinator traced with libpdtrace.

    python pd_proxy.py --port 8000 \\
        --prefill-url http://localhost:8100/v1/completions \\
        --decode-url http://localhost:8200/v1/completions \\
        [--connector nixlv2|lmcache|shared-storage|sglang] \\
        [--rate-limit RPS] [--max-concurrent N] [--no-access-log]

A Quart app (served by Hypercorn) whose upstream calls go through aiohttp
client sessions. Routes: POST /v1/completions, POST /v1/chat/completions,
GET /v1/models, GET /health, and GET /metrics: the tracer's Prometheus
metrics (true TTFT and its stages per connector, model and mode).

Upstream URLs: --prefill-url and --decode-url take a server's base URL
(http://host:8100) or one of its endpoint URLs (http://host:8100/v1,
.../v1/completions, .../v1/chat/completions): the endpoint part is
dropped and each request goes to the same path on that server, so a
request to /v1/chat/completions goes to the chat path whichever endpoint
was named. The resolved routes are printed at startup, and the first 404
from an upstream that never answered anything else is logged at once with
the URL that was called. Several --prefill-url are used round-robin.

Without --prefill-url the proxy is a routing sidecar, like the Go sidecar:
the prefill goes to the host:port named in x-prefiller-host-port (a
comma-separated list or repeated header: later entries are tried when the
earlier cannot be connected to), checked against --allowed-prefillers
when that is given; a request without the header goes straight to decode
and is traced in decode-only mode (reason "no prefiller").

Flows (docs/upstreams.md):
  nixlv2   prefill with kv_transfer_params {do_remote_decode: true, ...},
           stream false, max_tokens 1; then decode with the client's body
           plus the kv_transfer_params the prefill returned.
  lmcache, shared-storage
           prefill with max_tokens 1 (KV goes to the shared store), then
           the unmodified body to decode.
  sglang   the same body to prefill and decode at once, with
           bootstrap_host, bootstrap_port and bootstrap_room; a streamed
           prefill answer is read as a stream.

True TTFT for every request: the decode leg is always streamed (stream
true, stream_options.include_usage true) and the first token (mark F) is
the first chunk that carries generated text. When the client asked for a
non-streamed answer, the proxy assembles from the chunks the
OpenAI-compatible body the decode server would have sent (id, object,
created, model, choices with text or message and finish_reason, usage).
Requests the assembler cannot reproduce faithfully (n > 1, best_of > 1,
logprobs, echo, tools) are passed through unstreamed, and so is every
non-streamed request with --no-assemble; their spans say
llm_d.pd_proxy.assembled=false with llm_d.pd_proxy.passthrough_reason, and
llm_d.pd_proxy.first_token_observed=false: true_ttft_ms, decode_ttft_ms
and tpot_ms are then absent rather than wrong. A streamed client that did
not ask for include_usage does not get the usage chunk the proxy asked for.

Token counts: gen_ai.usage.input_tokens, gen_ai.usage.output_tokens and
gen_ai.usage.cache_read.input_tokens come from the decode answer's usage,
else from the prefill answer's (input and cached), else output tokens are
the chunks counted.

Hostile clients: the traced request begins before the body is read; a
body over --max-body-bytes (default 32 MiB) is answered 413, one that has
not arrived within --body-timeout seconds (default 30) 408, invalid JSON
or a non-boolean "stream" 400, all as JSON errors and recorded on the
request span. A prefill answer that is not a JSON object gives 502
invalid_response. Repeated traceparent or tracestate header lines are all
passed to the library (joined with commas), so a duplicated traceparent is
rejected as W3C Trace Context requires and the request starts a new trace.

Tracing: each completion request is a libpdtrace P/D request begun at
arrival (mark A), so time spent in the rate limiter or waiting for a
concurrency slot shows as queue_ms. Both legs get traceparent, tracestate
and x-request-id. An upstream failure gives the client a JSON error with
502, 503 or 504; each leg's span status follows that leg's own outcome.
The client's traffic pattern, when sent in the x-pdtrace-pattern header,
is recorded as llm_d.pd_proxy.load_pattern. One access-log line per
request goes to standard output (method, path, status, true TTFT, total;
--no-access-log turns it off).

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
import re
import sys
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, Tuple

import aiohttp
from quart import Quart, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

import pdtrace
from pdtrace import Leg, Mode

log = logging.getLogger("pd_proxy")
P = "llm_d.pd_proxy."
CONNECTORS = ("nixlv2", "lmcache", "shared-storage", "sglang")
ROUTES = ("/v1/completions", "/v1/chat/completions")
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0


def now_ns() -> int:
    return time.monotonic_ns()


def upstream_base(url: str) -> str:
    """The server base URL of an upstream given as a base URL or as one of
    its OpenAI endpoint URLs; raises ValueError for anything else."""
    u = urllib.parse.urlsplit(url.strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError("%r is not an http:// or https:// URL" % url)
    if u.query or u.fragment:
        raise ValueError("%r: an upstream URL takes no query or fragment"
                         % url)
    try:
        u.port
    except ValueError:
        raise ValueError("%r: bad port" % url) from None
    path = u.path.rstrip("/")
    for suffix in ROUTES + ("/v1",):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
            break
    return urllib.parse.urlunsplit((u.scheme, u.netloc, path, "", ""))


HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


def parse_hostport(value: str, header: str = "x-prefiller-host-port") -> str:
    """A server named by x-prefiller-host-port or x-decoder-host-port:
    host:port only."""
    m = HOSTPORT.match(value)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValueError("%s must be host:port, got %r"
                         % (header, value[:100]))
    return value


# Conversation and tenant headers (set by the gateway or the client).
H_DECODER = "x-decoder-host-port"
H_REASON = "x-pd-decision-reason"
H_CONVERSATION = "x-conversation-id"
H_TURN = "x-turn-index"
A_TURN = "llm_d.conversation.turn_index"
MAX_ID_LEN = 256
PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
REASON_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
NO_TENANT = "none"
OTHER_TENANT = "other"


def read_ids(hdrs, tenant_header: Optional[str]) -> Dict[str, Any]:
    """Conversation id, turn index, tenant and the gateway's P/D decision
    reason from the request headers; raises ValueError for a malformed
    value."""
    out: Dict[str, Any] = {}
    conv = hdrs.get(H_CONVERSATION)
    if conv is not None:
        if not PRINTABLE.match(conv) or len(conv) > MAX_ID_LEN:
            raise ValueError("%s must be 1-%d printable ASCII characters "
                             "without spaces" % (H_CONVERSATION, MAX_ID_LEN))
        out["conversation"] = conv
    turn = hdrs.get(H_TURN)
    if turn is not None:
        if not turn.isdigit() or len(turn) > 9:
            raise ValueError("%s must be a non-negative integer, not %r"
                             % (H_TURN, turn[:32]))
        out["turn"] = int(turn)
    if tenant_header:
        tenant = hdrs.get(tenant_header)
        if tenant is not None:
            tenant = tenant.strip()
            if not tenant or len(tenant) > MAX_ID_LEN or \
                    any(ord(c) < 0x20 or ord(c) == 0x7f for c in tenant):
                raise ValueError("%s must be 1-%d characters without "
                                 "control characters"
                                 % (tenant_header, MAX_ID_LEN))
            out["tenant"] = tenant
    reason = hdrs.get(H_REASON)
    if reason is not None:
        if not REASON_RE.match(reason):
            raise ValueError("%s must be 1-64 characters of letters, digits "
                             "and _.:-" % H_REASON)
        out["reason"] = reason
    return out


class UsageMetrics:
    """The proxy's own Prometheus counters, served on /metrics after the
    tracer's: requests, tokens and prefill/decode seconds per tenant (a
    configured set of tenants; any other is counted as "other", a request
    without the header as "none"), and prompt tokens, cached prompt tokens
    and true TTFT by conversation turn ("first", "later", or "none" for a
    request without x-turn-index)."""

    def __init__(self, tenants: Sequence[str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        try:
            from prometheus_client import disable_created_metrics
            disable_created_metrics()
        except ImportError:
            pass
        self.tenants = set(tenants)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "pd_proxy_tenant_requests", "Requests finished, by tenant and "
            "P/D decision.", ["tenant", "decision"], registry=r)
        self.tokens = Counter(
            "pd_proxy_tenant_tokens", "Tokens by tenant: input (prompt), "
            "cached_input (prompt tokens found in the prefix cache) and "
            "output.", ["tenant", "type"], registry=r)
        self.seconds = Counter(
            "pd_proxy_tenant_stage_seconds", "Seconds of prefill and decode "
            "legs, by tenant.", ["tenant", "stage"], registry=r)
        self.turn_tokens = Counter(
            "pd_proxy_turn_prompt_tokens", "Prompt tokens and cached prompt "
            "tokens by conversation turn; cached / prompt is the KV cache "
            "hit rate.", ["turn", "type"], registry=r)
        self.turn_ttft = Histogram(
            "pd_proxy_turn_true_ttft_seconds", "True TTFT by conversation "
            "turn.", ["turn"], registry=r,
            buckets=(.025, .05, .1, .15, .2, .3, .5, .75, 1, 1.5, 2.5, 5,
                     10))

    def tenant_label(self, tenant: Optional[str]) -> str:
        if tenant is None:
            return NO_TENANT
        return tenant if tenant in self.tenants else OTHER_TENANT

    def observe(self, ids: Dict[str, Any], decision: str,
                bd: Optional[pdtrace.Breakdown],
                usage: Dict[str, int]) -> None:
        t = self.tenant_label(ids.get("tenant"))
        self.requests.labels(t, decision).inc()
        for kw, typ in (("input_tokens", "input"),
                        ("cached_input_tokens", "cached_input"),
                        ("output_tokens", "output")):
            if usage.get(kw) is not None:
                self.tokens.labels(t, typ).inc(usage[kw])
        if bd is not None:
            if bd.prefill_ms is not None:
                self.seconds.labels(t, "prefill").inc(bd.prefill_ms / 1e3)
            if bd.decode_duration_ms is not None:
                self.seconds.labels(t, "decode").inc(
                    bd.decode_duration_ms / 1e3)
        turn = ids.get("turn")
        tl = "none" if turn is None else ("first" if turn == 0 else "later")
        if usage.get("input_tokens") is not None:
            self.turn_tokens.labels(tl, "prompt").inc(usage["input_tokens"])
            self.turn_tokens.labels(tl, "cached").inc(
                usage.get("cached_input_tokens") or 0)
        if bd is not None and bd.true_ttft_ms is not None:
            self.turn_ttft.labels(tl).observe(bd.true_ttft_ms / 1e3)

    def text(self) -> str:
        from prometheus_client import generate_latest
        return generate_latest(self.registry).decode()

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


def status_error(status: int, body: bytes, url: str) -> UpstreamError:
    msg = body[:500].decode("utf-8", "replace")
    if status == 503 or status == 429:
        return UpstreamError(503, "upstream_unavailable", msg, status)
    if status == 504:
        return UpstreamError(504, "timeout", msg, status)
    if status >= 500:
        return UpstreamError(502, "upstream_error", msg, status)
    if status == 404:
        return UpstreamError(404, "upstream_not_found",
                             "upstream answered 404 for POST %s" % url, 404)
    return UpstreamError(status, "upstream_client_error", msg, status)


def error_response(status: int, error_type: str, message: str,
                   request_id: str) -> Response:
    doc = {"error": {"message": message, "type": error_type, "code": status}}
    return Response(json.dumps(doc), status=status,
                    content_type="application/json",
                    headers={"x-request-id": request_id})


class BodyError(Exception):
    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


# ---- server-sent events ------------------------------------------------------

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SSESplitter:
    """Splits a byte stream into complete SSE events: feed() returns
    (raw event bytes including its blank line, data payload or None)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, chunk: bytes) -> List[Tuple[bytes, Optional[bytes]]]:
        self.buf += chunk
        out = []
        while True:
            m = _EVENT_END.search(self.buf)
            if m is None:
                return out
            raw, self.buf = self.buf[:m.end()], self.buf[m.end():]
            lines = []
            for line in re.split(rb"\r\n|\n|\r", raw[:m.start()]):
                if line.startswith(b"data:"):
                    v = line[5:]
                    lines.append(v[1:] if v.startswith(b" ") else v)
            out.append((raw, b"\n".join(lines) if lines else None))

    def rest(self) -> bytes:
        rest, self.buf = self.buf, b""
        return rest


def event_doc(data: Optional[bytes]) -> Optional[Dict[str, Any]]:
    if data is None or data.strip() in (b"", b"[DONE]"):
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def chunk_tokens(doc: Dict[str, Any]) -> int:
    """Choices of one chunk that carry generated output."""
    n = 0
    for c in doc.get("choices") or ():
        if not isinstance(c, dict):
            continue
        if c.get("text"):
            n += 1
            continue
        d = c.get("delta")
        if isinstance(d, dict) and (d.get("content") or
                                    d.get("reasoning_content") or
                                    d.get("tool_calls")):
            n += 1
    return n


def passthrough_reason(body: Dict[str, Any], enabled: bool) -> Optional[str]:
    """Why a non-streamed request cannot be assembled from a stream, or
    None when it can."""
    if not enabled:
        return "disabled"
    n = body.get("n")
    if n is not None and n != 1:
        return "n>1"
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        return "best_of"
    for k in ("logprobs", "top_logprobs", "prompt_logprobs"):
        v = body.get(k)
        if v is not None and v is not False:
            return "logprobs"
    if body.get("echo"):
        return "echo"
    if body.get("tools") or body.get("functions"):
        return "tools"
    return None


class Assembler:
    """Builds the non-streamed completions or chat completions body from
    the chunks of the same answer streamed."""

    CHUNK_KEYS = ("id", "object", "created", "model", "choices", "usage")

    def __init__(self, chat: bool):
        self.chat = chat
        self.head: Dict[str, Any] = {}
        self.extra: Dict[str, Any] = {}
        self.choices: Dict[int, Dict[str, Any]] = {}
        self.usage: Optional[Dict[str, Any]] = None
        self.error: Optional[Any] = None
        self.chunks = 0

    def feed(self, doc: Dict[str, Any]) -> int:
        if "error" in doc and "choices" not in doc:
            self.error = doc["error"]
            return 0
        self.chunks += 1
        for k in ("id", "created", "model"):
            if k in doc and k not in self.head:
                self.head[k] = doc[k]
        for k, v in doc.items():
            if k not in self.CHUNK_KEYS and v is not None:
                self.extra[k] = v
        if isinstance(doc.get("usage"), dict):
            self.usage = doc["usage"]
        for c in doc.get("choices") or ():
            if not isinstance(c, dict):
                continue
            i = c.get("index", 0)
            st = self.choices.setdefault(i, {
                "text": [], "reasoning": [], "role": None,
                "finish_reason": None, "other": {}})
            if self.chat:
                d = c.get("delta") or {}
                if d.get("role"):
                    st["role"] = d["role"]
                if d.get("content"):
                    st["text"].append(d["content"])
                if d.get("reasoning_content"):
                    st["reasoning"].append(d["reasoning_content"])
            elif c.get("text"):
                st["text"].append(c["text"])
            if c.get("finish_reason") is not None:
                st["finish_reason"] = c["finish_reason"]
            for k, v in c.items():
                if k not in ("index", "delta", "text", "finish_reason"):
                    if v is not None or k not in st["other"]:
                        st["other"][k] = v
        return chunk_tokens(doc)

    def body(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {
            "id": self.head.get("id"),
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.head.get("created", int(time.time())),
            "model": self.head.get("model"),
        }
        choices = []
        for i in sorted(self.choices):
            st = self.choices[i]
            c: Dict[str, Any] = {"index": i}
            if self.chat:
                msg: Dict[str, Any] = {"role": st["role"] or "assistant",
                                       "content": "".join(st["text"])}
                if st["reasoning"]:
                    msg["reasoning_content"] = "".join(st["reasoning"])
                c["message"] = msg
            else:
                c["text"] = "".join(st["text"])
            c.update(st["other"])
            c["finish_reason"] = st["finish_reason"]
            choices.append(c)
        doc["choices"] = choices
        doc.update(self.extra)
        if self.usage is not None:
            doc["usage"] = self.usage
        return doc


def usage_counts(decode: Optional[Dict[str, Any]],
                 prefill: Optional[Dict[str, Any]]) -> Dict[str, int]:
    """Keyword arguments for Request.finish(): input, output and cached
    prompt tokens from decode's usage, else (input, cached) prefill's."""

    def num(u, key, sub=None):
        if not isinstance(u, dict):
            return None
        if sub is not None:
            u = u.get(sub)
            if not isinstance(u, dict):
                return None
        v = u.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and \
            v >= 0 else None

    out = {}
    for kw, key, sub, fallback in (
            ("input_tokens", "prompt_tokens", None, True),
            ("output_tokens", "completion_tokens", None, False),
            ("cached_input_tokens", "cached_tokens",
             "prompt_tokens_details", True)):
        v = num(decode, key, sub)
        if v is None and fallback:
            v = num(prefill, key, sub)
        if v is not None:
            out[kw] = v
    return out


class Ctx:
    """One client request as the handler sees it."""

    __slots__ = ("req", "rid", "path", "arrival", "stream", "chat",
                 "decode_sent", "prefill_usage", "logged", "ids",
                 "decision")

    def __init__(self, req: pdtrace.Request, path: str, arrival: int):
        self.req = req
        self.rid = req.id or ""
        self.path = path
        self.arrival = arrival
        self.stream = False
        self.chat = path.endswith("/chat/completions")
        self.decode_sent = False
        self.prefill_usage: Optional[Dict[str, Any]] = None
        self.logged = False
        self.ids: Dict[str, Any] = {}
        self.decision = "pd"


class Proxy:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prefill_bases = [upstream_base(u) for u in args.prefill_url]
        self.decode_bases = [upstream_base(u) for u in args.decode_url]
        self.rr_prefill = itertools.cycle(range(max(1,
                                                    len(self.prefill_bases))))
        self.rr_decode = itertools.cycle(range(len(self.decode_bases)))
        self.allowed = set(args.allowed_prefillers or ())
        self.limiter = Limiter(args.rate_limit, args.max_concurrent,
                               args.max_queue)
        self.allowed_decoders = set(args.allowed_decoders or ())
        self.usage_metrics = UsageMetrics(args.tenants or ())
        self.tracer: Optional[pdtrace.Tracer] = None
        self.prefill_session: Optional[aiohttp.ClientSession] = None
        self.decode_session: Optional[aiohttp.ClientSession] = None
        self.trace_errors = 0
        self.answered: set = set()  # upstream bases that answered non-404
        self.warned_404: set = set()

    async def start(self) -> None:
        self.tracer = pdtrace.Tracer(
            metrics_tenants=(",".join(self.args.tenants)
                             if self.args.tenants else None))
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
            return getattr(e, "headers", None)

    def _trace_error(self, e: Exception) -> None:
        self.trace_errors += 1
        if self.trace_errors <= 10:
            log.warning("tracing: %s", e)

    def begin(self, arrival: int, hdrs) -> pdtrace.Request:
        """Begins the traced request at arrival, before the body is read.
        Every line of a repeated traceparent or tracestate header goes to
        the library, so a duplicated traceparent is refused there. A
        refused setting (a malformed x-request-id, say) is logged and the
        request goes on without it."""
        tp = hdrs.getlist("traceparent")
        ts = hdrs.getlist("tracestate")
        try:
            return self.tracer.request(
                ",".join(tp) if tp else None, ",".join(ts) if ts else None,
                arrival, request_id=hdrs.get("x-request-id") or None,
                connector=self.args.connector)
        except pdtrace.PdtraceError as e:
            if getattr(e, "request", None) is None:
                raise
            self._trace_error(e)
            return e.request

    def metrics(self) -> Response:
        return Response(self.tracer.metrics() + self.usage_metrics.text(),
                        status=200,
                        content_type=pdtrace.METRICS_CONTENT_TYPE)

    # -- outcome ---------------------------------------------------------
    def access(self, ctx: Ctx, status: int,
               bd: Optional[pdtrace.Breakdown]) -> None:
        if ctx.logged or self.args.no_access_log:
            return
        ctx.logged = True
        ttft = bd.true_ttft_ms if bd is not None else None
        total = bd.total_ms if bd is not None and bd.total_ms is not None \
            else (now_ns() - ctx.arrival) / 1e6
        sys.stdout.write(
            "pd_proxy: POST %s %d ttft_ms=%s total_ms=%.1f request_id=%s\n"
            % (ctx.path, status, "-" if ttft is None else "%.1f" % ttft,
               total, ctx.rid or "-"))
        sys.stdout.flush()

    def end(self, ctx: Ctx, status: int, error_type: Optional[str] = None,
            **kw) -> None:
        """Ends and frees the traced request, then logs its access line."""
        bd = None
        try:
            bd = ctx.req.finish(status, error_type, **kw)
        except pdtrace.PdtraceError as e:
            self._trace_error(e)
            bd = getattr(e, "breakdown", None)
        ctx.req.free()
        if status < 400:
            # Prefix-cache hits are the prefill's when there was one: the
            # decode side only pulls what the prefill computed.
            usage = dict(kw)
            pre = ctx.prefill_usage
            if isinstance(pre, dict):
                details = pre.get("prompt_tokens_details")
                cached = details.get("cached_tokens") \
                    if isinstance(details, dict) else None
                if isinstance(cached, int) and not isinstance(cached, bool):
                    usage["cached_input_tokens"] = cached
            self.usage_metrics.observe(ctx.ids, ctx.decision, bd, usage)
        self.access(ctx, status, bd)

    def fail(self, ctx: Ctx, status: int, error_type: str,
             message: str) -> Response:
        self.end(ctx, status, error_type)
        return error_response(status, error_type, message, ctx.rid)

    def observed(self, ctx: Ctx, first: bool) -> None:
        """llm_d.pd_proxy.first_token_observed on the request span and, when
        it exists, the decode span."""
        attrs = {P + "first_token_observed": first}
        self.t(ctx.req.set_attributes, attrs)
        if ctx.decode_sent:
            self.t(ctx.req.set_attributes, attrs, Leg.DECODE)

    def note_status(self, leg: str, base: str, url: str, status: int) -> None:
        """Says at once, and once, that an upstream that has never answered
        anything else answers 404: the URL is most likely wrong."""
        if status != 404:
            self.answered.add(base)
            return
        if base in self.answered or url in self.warned_404:
            return
        self.warned_404.add(url)
        flag = "--prefill-url" if leg == "prefill" else "--decode-url"
        log.error("%s upstream answered 404 Not Found for POST %s: check "
                  "%s (give the server's base URL, e.g. http://host:8100, "
                  "or its /v1/completions endpoint)", leg, url, flag)

    # -- request body ------------------------------------------------------
    async def read_body(self) -> bytes:
        limit = self.args.max_body_bytes
        clen = request.content_length
        if clen is not None and clen > limit:
            raise BodyError(413, "body_too_large",
                            "request body of %d bytes is over the limit of "
                            "%d bytes" % (clen, limit))
        buf = bytearray()

        async def collect():
            async for chunk in request.body:
                buf.extend(chunk)
                if len(buf) > limit:
                    raise RequestEntityTooLarge()

        try:
            await asyncio.wait_for(collect(), self.args.body_timeout)
        except RequestEntityTooLarge:
            raise BodyError(413, "body_too_large",
                            "request body is over the limit of %d bytes"
                            % limit) from None
        except asyncio.TimeoutError:
            raise BodyError(408, "body_timeout",
                            "request body not received within %g s"
                            % self.args.body_timeout) from None
        return bytes(buf)

    # -- the completion routes ----------------------------------------------
    async def completions(self, path: str, chat: bool) -> Response:
        arrival = now_ns()  # mark A
        hdrs = request.headers
        ctx = Ctx(self.begin(arrival, hdrs), path, arrival)
        req = ctx.req
        try:
            raw = await self.read_body()
        except BodyError as e:
            return self.fail(ctx, e.status, e.error_type, str(e))
        except BaseException:
            self.end(ctx, 499, "client_disconnected")
            raise
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            return self.fail(ctx, 400, "invalid_request",
                             "invalid JSON body: %s" % e)
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            return self.fail(ctx, 400, "invalid_request",
                             '"stream" must be true or false, got %s'
                             % json.dumps(stream)[:50])
        ctx.stream = stream
        reason = None if stream else passthrough_reason(
            body, not self.args.no_assemble)
        max_tokens = body.get("max_completion_tokens") or \
            body.get("max_tokens")
        attrs = {
            "http.request.method": "POST",
            "url.path": path,
            "gen_ai.operation.name": "chat" if chat else "text_completion",
            "gen_ai.request.stream": stream,
            P + "decode.streaming": reason is None,
        }
        if not stream:
            attrs[P + "assembled"] = reason is None
            if reason is not None:
                attrs[P + "passthrough_reason"] = reason
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            attrs["gen_ai.request.max_tokens"] = max_tokens
        pattern = hdrs.get("x-pdtrace-pattern")
        if pattern:
            attrs[P + "load_pattern"] = pattern
        try:
            ctx.ids = read_ids(hdrs, self.args.tenant_header)
        except ValueError as e:
            self.t(req.set_attributes, attrs)
            return self.fail(ctx, 400, "invalid_request", str(e))
        if "conversation" in ctx.ids:
            attrs["gen_ai.conversation.id"] = ctx.ids["conversation"]
        if "turn" in ctx.ids:
            attrs[A_TURN] = ctx.ids["turn"]
        self.t(req.set_attributes, attrs)
        if "tenant" in ctx.ids:
            # llm_d.tenant on the request span and the tenant label of the
            # library's request and token counters.
            self.t(req.set_tenant, ctx.ids["tenant"])
        model = body.get("model")
        if isinstance(model, str) and model:
            self.t(req.set_model, model)

        connector = self.args.connector
        try:
            candidates = self.prefillers(hdrs)
        except ValueError as e:
            return self.fail(ctx, 400, "invalid_request", str(e))
        except PermissionError as e:
            return self.fail(ctx, 403, "prefiller_not_allowed", str(e))
        try:
            decode_base = self.decoder(hdrs)
        except ValueError as e:
            return self.fail(ctx, 400, "invalid_request", str(e))
        except PermissionError as e:
            return self.fail(ctx, 403, "decoder_not_allowed", str(e))
        # The gateway's reason for its P/D decision, if it gave one.
        why = ctx.ids.get("reason")
        if not candidates:
            ctx.decision = "decode-only"
            self.t(req.set_mode, Mode.DECODE_ONLY, why or "no prefiller")
        elif connector == "sglang":
            self.t(req.set_mode, Mode.CONCURRENT, why)
        elif why:
            self.t(req.set_mode, Mode.SEQUENTIAL, why)

        if self.limiter.overloaded():
            return self.fail(ctx, 503, "overloaded",
                             "coordinator queue is full")
        try:
            await self.limiter.acquire()
        except BaseException:
            self.end(ctx, 499, "client_disconnected")
            raise
        released = False

        def release():
            nonlocal released
            if not released:
                released = True
                self.limiter.release()

        try:
            if not candidates:
                return await self._decode(ctx, decode_base, body, reason,
                                          release, None)
            if connector == "sglang":
                return await self._sglang(ctx, body, candidates[0],
                                          decode_base, reason, release)
            return await self._sequential(ctx, body, candidates,
                                          decode_base, reason, release)
        except UpstreamError as e:
            release()
            self.observed(ctx, False)
            return self.fail(ctx, e.client_status, e.error_type, str(e))
        except BaseException:
            release()
            req.free()  # recorded as abandoned
            raise

    def decoder(self, hdrs) -> str:
        """The decode base URL: the server x-decoder-host-port names (one
        host:port, checked against --allowed-decoders), else the next
        --decode-url."""
        v = hdrs.getlist(H_DECODER)
        if not v:
            if not self.decode_bases:
                raise ValueError("no %s header and no --decode-url"
                                 % H_DECODER)
            return self.decode_bases[next(self.rr_decode)]
        if len(v) > 1 or "," in v[0]:
            raise ValueError("%s must name one host:port" % H_DECODER)
        c = parse_hostport(v[0].strip(), H_DECODER)
        if self.allowed_decoders and c not in self.allowed_decoders:
            raise PermissionError("decoder %s is not in --allowed-decoders"
                                  % c)
        return "http://" + c

    def prefillers(self, hdrs) -> List[str]:
        """Prefill base URLs to try, in order; empty for decode-only."""
        if self.prefill_bases:
            return [self.prefill_bases[next(self.rr_prefill)]]
        out = []
        for v in hdrs.getlist("x-prefiller-host-port"):
            for c in v.split(","):
                c = c.strip()
                if not c:
                    continue
                parse_hostport(c)
                if self.allowed and c not in self.allowed:
                    raise PermissionError(
                        "prefiller %s is not in --allowed-prefillers" % c)
                out.append("http://" + c)
        return out

    # -- prefill -------------------------------------------------------------
    async def _prefill(self, ctx: Ctx, base: str, body: Dict[str, Any],
                       headers: Optional[Dict[str, str]]) -> Dict[str, Any]:
        """One prefill attempt (Ps already marked): its answer as a JSON
        object (a streamed answer is read as a stream: the last chunk's
        fields, with its usage and kv_transfer_params); records Pe and the
        leg's outcome; raises UpstreamError."""
        req = ctx.req
        url = base + ctx.path
        status = 0
        try:
            async with self.prefill_session.post(url, json=body,
                                                 headers=headers) as r:
                status = r.status
                self.note_status("prefill", base, url, status)
                if status >= 400:
                    raise status_error(status, await r.read(), url)
                ctype = r.headers.get("Content-Type", "")
                if "text/event-stream" in ctype:
                    doc = await self._read_stream(r)
                else:
                    data = await r.read()
                    try:
                        doc = json.loads(data)
                    except ValueError:
                        doc = None
                if not isinstance(doc, dict):
                    raise UpstreamError(502, "invalid_response",
                                        "prefill answered with something "
                                        "other than a JSON object", status)
        except UpstreamError as e:
            self.t(req.prefill_done, target=base, status=e.upstream_status,
                   error_type=e.error_type)
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            err = classify(e)
            err.upstream_status = status
            self.t(req.prefill_done, target=base, status=status,
                   error_type=err.error_type)
            raise err from None
        self.t(req.prefill_done, target=base, status=status)
        if isinstance(doc.get("usage"), dict):
            ctx.prefill_usage = doc["usage"]
        return doc

    @staticmethod
    async def _read_stream(r) -> Optional[Dict[str, Any]]:
        sse = SSESplitter()
        doc: Optional[Dict[str, Any]] = None
        async for chunk in r.content.iter_any():
            for _, data in sse.feed(chunk):
                d = event_doc(data)
                if d is None:
                    continue
                if doc is None:
                    doc = {}
                doc.update({k: v for k, v in d.items() if v is not None})
        for _, data in sse.feed(b"\n\n"):
            d = event_doc(data)
            if d is not None:
                doc = dict(doc or {}, **d)
        return doc

    async def _sequential(self, ctx, body, candidates, decode_base, reason,
                          release):
        connector = self.args.connector
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
        presp = None
        for i, base in enumerate(candidates):
            headers = self.t(ctx.req.send_prefill)
            try:
                presp = await self._prefill(ctx, base, pbody, headers)
                break
            except UpstreamError as e:
                if i + 1 < len(candidates) and \
                        e.error_type == "connection_refused":
                    continue  # the next prefiller named by the header
                raise
        dbody = body
        if connector == "nixlv2":
            kvp = presp.get("kv_transfer_params")
            if not isinstance(kvp, dict):
                raise UpstreamError(502, "invalid_response",
                                    "prefill returned no kv_transfer_params")
            dbody = dict(body)
            dbody["kv_transfer_params"] = kvp
        return await self._decode(ctx, decode_base, dbody, reason, release,
                                  None)

    async def _sglang(self, ctx, body, prefill_base, decode_base, reason,
                      release):
        b = dict(body)
        b["bootstrap_host"] = urllib.parse.urlsplit(prefill_base).hostname
        b["bootstrap_port"] = self.args.bootstrap_port
        b["bootstrap_room"] = random.getrandbits(63)
        pbody = dict(b)
        if pbody.get("stream"):
            so = pbody.get("stream_options")
            so = dict(so) if isinstance(so, dict) else {}
            so["include_usage"] = True
            pbody["stream_options"] = so
        headers = self.t(ctx.req.send_prefill)
        ptask = asyncio.ensure_future(self._prefill(ctx, prefill_base,
                                                    pbody, headers))
        try:
            return await self._decode(ctx, decode_base, b, reason, release,
                                      ptask)
        except BaseException:
            if not ptask.done():
                ptask.cancel()
            else:
                ptask.exception()  # retrieved: the decode error wins
            raise

    async def _settle_prefill(self, ptask) -> None:
        """Waits for a concurrent prefill; its own span has its outcome."""
        if ptask is None:
            return
        try:
            await asyncio.wait_for(ptask, self.args.upstream_timeout)
        except (UpstreamError, asyncio.TimeoutError, asyncio.CancelledError):
            pass

    # -- decode ----------------------------------------------------------
    async def _decode(self, ctx, base, body, reason, release, ptask):
        """Sends the decode leg: streamed unless passed through; streams it
        to a streaming client, assembles a body for the others."""
        req = ctx.req
        url = base + ctx.path
        dbody = body
        strip_usage = False
        if reason is None:
            dbody = dict(body)
            dbody["stream"] = True
            so = body.get("stream_options")
            so = dict(so) if isinstance(so, dict) else {}
            strip_usage = ctx.stream and not so.get("include_usage")
            so["include_usage"] = True
            dbody["stream_options"] = so
        headers = self.t(req.send_decode)
        ctx.decode_sent = True
        # The library mirrors only connector, model and
        # disaggregation_enabled onto the decode span: the stream flags go
        # on it here, as the Go sidecar does.
        leg_attrs: Dict[str, Any] = {
            "gen_ai.request.stream": ctx.stream,
            P + "decode.streaming": reason is None,
        }
        if not ctx.stream:
            leg_attrs[P + "assembled"] = reason is None
            if reason is not None:
                leg_attrs[P + "passthrough_reason"] = reason
        self.t(req.set_attributes, leg_attrs, Leg.DECODE)
        cm = self.decode_session.post(url, json=dbody, headers=headers)
        try:
            upstream = await cm.__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            err = classify(e)
            self.t(req.set_leg, Leg.DECODE, base, 0, err.error_type)
            await self._settle_prefill(ptask)
            raise err from None
        self.note_status("decode", base, url, upstream.status)
        if upstream.status >= 400:
            data = await upstream.read()
            await cm.__aexit__(None, None, None)
            err = status_error(upstream.status, data, url)
            self.t(req.set_leg, Leg.DECODE, base, upstream.status,
                   err.error_type)
            await self._settle_prefill(ptask)
            raise err
        ctype = upstream.headers.get("Content-Type", "application/json")
        if ctx.stream and "text/event-stream" in ctype:
            gen = self._relay(ctx, base, upstream, cm, strip_usage, release,
                              ptask)
            resp = Response(gen, status=200, content_type=ctype,
                            headers={"x-request-id": ctx.rid})
            resp.timeout = None
            return resp
        if "text/event-stream" in ctype:
            return await self._assemble(ctx, base, upstream, cm, release,
                                        ptask)
        return await self._passthrough(ctx, base, upstream, cm, release,
                                       ptask, ctype)

    async def _passthrough(self, ctx, base, upstream, cm, release, ptask,
                           ctype):
        """A whole unstreamed answer, forwarded as it is: no first token
        observed."""
        failure = None
        data = b""
        try:
            data = await upstream.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            failure = classify(e)
        finally:
            await cm.__aexit__(None, None, None)
            release()
        await self._settle_prefill(ptask)
        req = ctx.req
        if failure is not None:
            self.t(req.set_leg, Leg.DECODE, base, upstream.status,
                   failure.error_type)
            raise failure
        usage = None
        try:
            doc = json.loads(data)
            if isinstance(doc, dict) and isinstance(doc.get("usage"), dict):
                usage = doc["usage"]
        except ValueError:
            pass
        self.observed(ctx, False)
        self.end(ctx, 200, None, decode_target=base,
                 decode_status=upstream.status,
                 **usage_counts(usage, ctx.prefill_usage))
        return Response(data, status=200, content_type=ctype,
                        headers={"x-request-id": ctx.rid})

    async def _assemble(self, ctx, base, upstream, cm, release, ptask):
        """Reads decode's stream, marking the first token as it arrives,
        and answers the client with the assembled non-streamed body."""
        req = ctx.req
        asm = Assembler(ctx.chat)
        sse = SSESplitter()
        first = True
        n_tokens = 0
        last_ts = 0
        failure = None
        try:
            async for chunk in upstream.content.iter_any():
                new = 0
                for _, data in sse.feed(chunk):
                    doc = event_doc(data)
                    if doc is not None:
                        new += asm.feed(doc)
                if new:
                    ts = now_ns()
                    if first:
                        first = False
                        self.t(req.tokens, 1, ts)
                        new -= 1
                    n_tokens += new
                    last_ts = ts
            for _, data in sse.feed(b"\n\n"):
                doc = event_doc(data)
                if doc is not None:
                    asm.feed(doc)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            failure = classify(e)
        finally:
            await cm.__aexit__(None, None, None)
            release()
        await self._settle_prefill(ptask)
        if n_tokens > 0:
            self.t(req.tokens, n_tokens, last_ts)
        if failure is None and asm.error is not None:
            failure = UpstreamError(502, "upstream_error",
                                    "decode stream error: %s"
                                    % json.dumps(asm.error)[:300], 200)
        if failure is None and asm.chunks == 0:
            failure = UpstreamError(502, "invalid_response",
                                    "decode stream carried no chunk", 200)
        if failure is not None:
            self.t(req.set_leg, Leg.DECODE, base, upstream.status,
                   failure.error_type)
            self.observed(ctx, not first)
            return self.fail(ctx, failure.client_status, failure.error_type,
                             str(failure))
        body = json.dumps(asm.body())
        self.observed(ctx, not first)
        self.end(ctx, 200, None, decode_target=base,
                 decode_status=upstream.status,
                 **usage_counts(asm.usage, ctx.prefill_usage))
        return Response(body, status=200, content_type="application/json",
                        headers={"x-request-id": ctx.rid})

    async def _relay(self, ctx, base, upstream, cm, strip_usage, release,
                     ptask):
        """Forwards decode's stream event by event; marks F, L, usage and
        the end. The usage chunk the proxy asked for on the client's
        behalf is not forwarded."""
        req = ctx.req
        sse = SSESplitter()
        n_tokens = 0
        last_ts = 0
        first = True
        usage = None
        failure = None
        completed = False
        try:
            async for chunk in upstream.content.iter_any():
                out = []
                new = 0
                for raw, data in sse.feed(chunk):
                    doc = event_doc(data)
                    if doc is not None:
                        if isinstance(doc.get("usage"), dict):
                            usage = doc["usage"]
                            if strip_usage and not doc.get("choices"):
                                continue
                        new += chunk_tokens(doc)
                    out.append(raw)
                if out:
                    yield b"".join(out)
                if new:
                    ts = now_ns()
                    if first:
                        first = False
                        self.t(req.tokens, 1, ts)
                        new -= 1
                    n_tokens += new
                    last_ts = ts
            rest = sse.rest()
            if rest:
                yield rest
            completed = True
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            failure = classify(e)
        finally:
            await cm.__aexit__(None, None, None)
            release()
            await self._settle_prefill(ptask)
            if n_tokens > 0:
                self.t(req.tokens, n_tokens, last_ts)
            if completed or failure is not None:
                self.observed(ctx, not first)
                err = failure.error_type if failure is not None else None
                self.end(ctx, 200, err, decode_target=base,
                         decode_status=upstream.status, decode_error=err,
                         **usage_counts(usage, ctx.prefill_usage))
            else:
                req.free()  # the client went away (abandoned)
                self.access(ctx, 499, None)

    async def models(self) -> Response:
        url = self.decode_bases[0] + "/v1/models"
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
    app.config["BODY_TIMEOUT"] = None  # read_body() bounds it
    app.config["MAX_CONTENT_LENGTH"] = args.max_body_bytes
    proxy = Proxy(args)
    app.config["PD_PROXY"] = proxy

    @app.before_serving
    async def _start():
        await proxy.start()

    @app.after_serving
    async def _stop():
        await proxy.stop()

    @app.route("/v1/completions", methods=["POST"])
    async def _completions():
        return await proxy.completions("/v1/completions", chat=False)

    @app.route("/v1/chat/completions", methods=["POST"])
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
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Upstream URLs may be base URLs (http://host:8100) or "
               "endpoint URLs (http://host:8100/v1/completions); both "
               "routes go to the same server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--prefill-url", action="append", default=[],
                   help="prefill server (repeat for round-robin); none: "
                        "the x-prefiller-host-port header names it, and "
                        "without it requests go straight to decode")
    p.add_argument("--decode-url", action="append", default=[],
                   help="decode server (repeat for round-robin); a request "
                        "with x-decoder-host-port goes to the server it "
                        "names instead. Needed unless every request "
                        "carries that header")
    p.add_argument("--connector", choices=CONNECTORS, default="nixlv2")
    p.add_argument("--allowed-prefillers", type=lambda v: [
        x.strip() for x in v.split(",") if x.strip()], default=None,
        help="comma-separated host:port list that x-prefiller-host-port "
             "may name (default: any)")
    p.add_argument("--allowed-decoders", type=lambda v: [
        x.strip() for x in v.split(",") if x.strip()], default=None,
        help="comma-separated host:port list that x-decoder-host-port may "
             "name (default: any)")
    p.add_argument("--tenant-header", default="x-tenant",
                   help="request header naming the tenant, recorded as "
                        "llm_d.tenant ('' to ignore)")
    p.add_argument("--tenants", type=lambda v: [
        x.strip() for x in v.split(",") if x.strip()], default=None,
        help="comma-separated tenants that get their own label in "
             "/metrics; others are counted as 'other'")
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
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY,
                   help="larger request bodies get 413 (default 32 MiB)")
    p.add_argument("--body-timeout", type=float,
                   default=DEFAULT_BODY_TIMEOUT,
                   help="seconds allowed to receive a request body, else "
                        "408 (default 30)")
    p.add_argument("--no-assemble", action="store_true",
                   help="pass non-streamed requests through unstreamed "
                        "(no first-token mark for them)")
    p.add_argument("--no-access-log", action="store_true",
                   help="no per-request line on standard output")
    p.add_argument("--bootstrap-port", type=int, default=8998)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    for u in args.prefill_url + args.decode_url:
        try:
            upstream_base(u)
        except ValueError as e:
            p.error(str(e))
    for flag, lst in (("--allowed-prefillers", args.allowed_prefillers),
                      ("--allowed-decoders", args.allowed_decoders)):
        for c in lst or ():
            try:
                parse_hostport(c)
            except ValueError:
                p.error("%s: %r is not host:port" % (flag, c))
    if args.tenants and len(args.tenants) > 32:
        p.error("--tenants: at most 32 (each is a label value)")
    if args.tenants and any(t in (NO_TENANT, OTHER_TENANT)
                            for t in args.tenants):
        p.error("--tenants: %r and %r are reserved" % (NO_TENANT,
                                                      OTHER_TENANT))
    if args.max_body_bytes <= 0 or args.body_timeout <= 0:
        p.error("--max-body-bytes and --body-timeout must be positive")
    return args


def describe(args: argparse.Namespace) -> str:
    lines = ["pd_proxy listening on %s:%d (connector %s)" % (
        args.host, args.port, args.connector)]
    for leg, urls in (("prefill", args.prefill_url),
                      ("decode", args.decode_url)):
        for u in urls:
            base = upstream_base(u)
            lines.append("  %-7s %s -> POST %s/v1/completions, %s/v1/chat/"
                         "completions" % (leg, u, base, base))
    if not args.decode_url:
        lines.append("  decode from x-decoder-host-port%s" % (
            " (allowed: %s)" % ",".join(args.allowed_decoders)
            if args.allowed_decoders else ""))
    if not args.prefill_url:
        lines.append("  prefill from x-prefiller-host-port%s; decode-only "
                     "without it" % (
                         " (allowed: %s)" % ",".join(args.allowed_prefillers)
                         if args.allowed_prefillers else ""))
    return "\n".join(lines)


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
    print(describe(args), flush=True)

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
