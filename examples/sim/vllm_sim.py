#!/usr/bin/env python3
"""vllm_sim: an OpenAI-compatible vLLM stand-in for prefill/decode tests.

Serves POST /v1/completions, POST /v1/chat/completions, GET /v1/models and
GET /health in one role, prefill or decode, with a timing model of
Llama-3.1-8B-Instruct on one H100-class GPU (every number is a flag):

  prefill      --prefill-base-ms 12 + --prefill-us-per-token 90 per prompt
               token not found in the prefix cache (about 11k tokens/s)
  prefix cache blocks of --block-tokens 16; a repeated prefix is not
               recomputed (vLLM automatic prefix caching); LRU of
               --cache-blocks 65536 blocks
  KV transfer  decode pulls the KV of the prompt tokens it does not hold
               in its own prefix cache before its first step, at the
               --kv-link profile's speed (128 KiB of KV per token for 32
               layers x 8 KV heads x 128 dims x fp16):
                 rdma  --kv-base-ms 2 + --kv-us-per-token 3 (~43 GB/s,
                       400 Gb/s RoCE; 2-8 ms for 100-2000 tokens)
                 tcp   --kv-base-ms 5 + --kv-us-per-token 7.5 (~17 GB/s
                       with more setup per transfer; 5-20 ms for 100-2000
                       tokens)
               the two flags override the profile's numbers
  decode       first step --decode-first-ms 14, then --tpot-ms 11 per
               token, growing by --tpot-batch-factor 0.02 per other
               running sequence (continuous batching)
  slots        --max-num-seqs concurrent sequences (default 16 prefill,
               64 decode); the rest wait, which shows as time in queue

--time-scale multiplies every delay (e.g. 0.2 for fast tests). Prompt
tokens are estimated as characters / 4. Every answer's usage reports
prompt_tokens_details.cached_tokens: the prompt tokens found in this
server's prefix cache (the KV the decode side already held, for a decode
that pulls KV).

Protocols (docs/upstreams.md): a prefill request carrying
kv_transfer_params.do_remote_decode answers with kv_transfer_params for the
decode side (nixlv2); a decode request carrying those params pulls the KV
(transfer delay) instead of prefilling; a decode request with
bootstrap_room (sglang, prefill running at the same time elsewhere) waits
as long as that prefill takes, then for the KV; a decode request with
neither (lmcache / shared storage, after the coordinator's prefill) loads
the KV from the shared store, except with --connector nixlv2 or sglang,
where such a request is decode-only: the decode server prefills the prompt
itself (with its prefix cache).

Each request is traced as vLLM does, with an `llm_request` SERVER span
created at finish, start = arrival, parented by the inbound traceparent,
with gen_ai.latency.* in seconds and gen_ai.request.id = x-request-id;
a decode that pulled KV adds llm_d.kv.pull_time (seconds),
llm_d.kv.pulled_tokens and
llm_d.kv.link (docs/spans.md).
Export follows the OTEL_* environment (service name vllm-prefill or
vllm-decode unless OTEL_SERVICE_NAME says otherwise).
"""
import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import sys
import time
import uuid

from aiohttp import web

import pdtrace

WORDS = ("the quick brown fox jumps over a lazy dog while tokens stream "
         "from the decode engine after prefill").split()


def now_ns():
    return time.monotonic_ns()


# KV link profiles: (setup ms per transfer, microseconds per token).
KV_LINKS = {"rdma": (2.0, 3.0), "tcp": (5.0, 7.5)}


class PrefixCache:
    """LRU set of prompt block hashes (chained, like vLLM's block hashes)."""

    def __init__(self, capacity, block_chars):
        self.capacity = capacity
        self.block_chars = block_chars
        self.blocks = collections.OrderedDict()

    def _hashes(self, text):
        h = hashlib.blake2b(digest_size=8)
        out = []
        for i in range(0, len(text) - self.block_chars + 1, self.block_chars):
            h.update(text[i:i + self.block_chars].encode("utf-8",
                                                           "surrogatepass"))
            out.append(h.copy().digest())
        return out

    def lookup_and_insert(self, text):
        """Returns the number of characters of `text` already cached, then
        caches all of its full blocks."""
        hashes = self._hashes(text)
        hit = 0
        for hsh in hashes:
            if hsh in self.blocks:
                hit += 1
                self.blocks.move_to_end(hsh)
            else:
                break
        for hsh in hashes[hit:]:
            self.blocks[hsh] = True
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        return hit * self.block_chars

    def contains(self, text):
        hashes = self._hashes(text)
        return bool(hashes) and all(h in self.blocks for h in hashes)


class Sim:
    def __init__(self, args):
        self.a = args
        self.scale = args.time_scale
        self.slots = asyncio.Semaphore(args.max_num_seqs)
        self.running = 0
        self.cache = PrefixCache(args.cache_blocks, args.block_tokens * 4)
        self.engine_id = uuid.uuid4().hex
        self.rng = random.Random(args.seed)
        service = os.environ.get("OTEL_SERVICE_NAME") or (
            "vllm-" + args.role)
        self.tracer = pdtrace.Tracer(service_name=service)
        self.served = 0

    async def sleep_ms(self, ms):
        if ms > 0:
            await asyncio.sleep(ms * self.scale / 1000.0)

    # ---- timing model ---------------------------------------------------
    def prefill_ms(self, new_tokens):
        return self.a.prefill_base_ms + new_tokens * \
            self.a.prefill_us_per_token / 1000.0

    def kv_ms(self, tokens):
        if tokens <= 0:
            return 0.0
        return self.a.kv_base_ms + tokens * self.a.kv_us_per_token / 1000.0

    def tpot_ms(self):
        return self.a.tpot_ms * (1.0 + self.a.tpot_batch_factor *
                                 max(0, self.running - 1))

    # ---- request handling -----------------------------------------------
    async def models(self, request):
        return web.json_response({"object": "list", "data": [{
            "id": self.a.model, "object": "model", "owned_by": "vllm-sim",
            "max_model_len": 131072}]})

    async def health(self, request):
        return web.Response(text="ok")

    async def completions(self, request):
        return await self.handle(request, chat=False)

    async def chat(self, request):
        return await self.handle(request, chat=True)

    @staticmethod
    def prompt_text(body, chat):
        if chat:
            parts = []
            for m in body.get("messages") or []:
                c = m.get("content", "")
                if isinstance(c, list):
                    c = " ".join(p.get("text", "") for p in c
                                 if isinstance(p, dict))
                parts.append("%s: %s\n" % (m.get("role", "user"), c))
            return "".join(parts)
        p = body.get("prompt", "")
        if isinstance(p, list):
            p = " ".join(str(x) for x in p)
        return str(p)

    async def handle(self, request, chat):
        arrival = now_ns()
        arrival_wall = time.time()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": {"message": "invalid JSON",
                                                "type": "BadRequestError"}},
                                     status=400)
        rid = request.headers.get("x-request-id") or "cmpl-" + \
            uuid.uuid4().hex
        span = self.tracer.start_span(
            "llm_request", pdtrace.SpanKind.SERVER,
            traceparent=request.headers.get("traceparent"),
            tracestate=request.headers.get("tracestate"), start_ns=arrival)
        span.set("gen_ai.request.id", rid)
        try:
            return await self._serve(request, body, chat, rid, arrival,
                                     arrival_wall, span)
        finally:
            span.free()

    async def _serve(self, request, body, chat, rid, arrival, arrival_wall,
                     span):
        a = self.a
        if a.error_rate > 0 and self.rng.random() < a.error_rate:
            span.set_status(pdtrace.StatusCode.ERROR, "injected error")
            span.end()
            return web.json_response(
                {"error": {"message": "injected failure",
                           "type": "InternalServerError"}}, status=500)
        if a.stall_s > 0:
            await asyncio.sleep(a.stall_s)
        text = self.prompt_text(body, chat)
        prompt_tokens = max(1, len(text) // 4)
        max_tokens = body.get("max_completion_tokens") or \
            body.get("max_tokens") or 16
        max_tokens = max(1, int(max_tokens))
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {})
                             .get("include_usage"))
        kvp = body.get("kv_transfer_params") or {}
        room = body.get("bootstrap_room")

        # queueing for a slot
        await self.slots.acquire()
        sched = now_ns()
        self.running += 1
        cached_tokens = 0
        pulled = None  # tokens whose KV came over the link, and the time
        try:
            # --- the work before the first token -------------------------
            if a.role == "decode" and kvp.get("do_remote_prefill"):
                # nixlv2: pull the KV computed by the prefill instance,
                # except the blocks this server already holds.
                hit_chars = self.cache.lookup_and_insert(text)
                cached_tokens = min(prompt_tokens, hit_chars // 4)
                n = prompt_tokens - cached_tokens
                pulled = (n, self.kv_ms(n))
                await self.sleep_ms(pulled[1])
            elif a.role == "decode" and room is not None:
                # sglang: the prefill runs at the same time on the prefill
                # instance; the KV arrives when it is done.
                hit_chars = self.cache.lookup_and_insert(text)
                new = prompt_tokens - min(prompt_tokens, hit_chars // 4)
                pulled = (prompt_tokens, self.kv_ms(prompt_tokens))
                await self.sleep_ms(self.prefill_ms(new) + pulled[1])
            elif a.role == "decode" and a.connector in ("nixlv2", "sglang"):
                # Decode-only: no prefill instance was involved; this
                # server computes the prompt itself.
                hit_chars = self.cache.lookup_and_insert(text)
                cached_tokens = min(prompt_tokens, hit_chars // 4)
                await self.sleep_ms(self.prefill_ms(prompt_tokens -
                                                    cached_tokens))
            elif a.role == "decode":
                # lmcache / shared storage: the coordinator's prefill left
                # the KV in the shared store; load it.
                await self.sleep_ms(self.kv_ms(prompt_tokens))
                cached_tokens = prompt_tokens
            else:
                hit_chars = self.cache.lookup_and_insert(text)
                cached_tokens = min(prompt_tokens, hit_chars // 4)
                await self.sleep_ms(self.prefill_ms(prompt_tokens -
                                                    cached_tokens))
            prefill_only = a.role == "prefill"
            out_tokens = 1 if prefill_only else max_tokens
            if not prefill_only:
                await self.sleep_ms(a.decode_first_ms)
            first = now_ns()

            cid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
            usage = {"prompt_tokens": prompt_tokens,
                     "completion_tokens": out_tokens,
                     "total_tokens": prompt_tokens + out_tokens,
                     "prompt_tokens_details": {
                         "cached_tokens": cached_tokens}}
            resp_kvp = None
            if prefill_only and kvp.get("do_remote_decode"):
                nblocks = (prompt_tokens + a.block_tokens - 1) // \
                    a.block_tokens
                resp_kvp = {"do_remote_prefill": True,
                            "do_remote_decode": False,
                            "remote_block_ids": list(range(nblocks)),
                            "remote_engine_id": self.engine_id,
                            "remote_host": a.host, "remote_port": a.port,
                            "tp_size": 1}
            words = self.words(text, out_tokens)
            if stream:
                resp = await self._stream(request, chat, cid, words,
                                           usage, include_usage, rid,
                                           prefill_only)
            else:
                for _ in range(out_tokens - 1):
                    await self.sleep_ms(self.tpot_ms())
                content = " ".join(words)
                doc = self._final_doc(chat, cid, content, usage, resp_kvp)
                resp = web.json_response(doc, headers={"x-request-id": rid})
            end = now_ns()
        finally:
            self.running -= 1
            self.slots.release()
        self.served += 1
        if pulled is not None:
            span.set_attributes({"llm_d.kv.pull_time": pulled[1] * self.scale / 1000.0,
                                 "llm_d.kv.pulled_tokens": pulled[0],
                                 "llm_d.kv.link": a.kv_link})
        span.set_attributes({
            "gen_ai.response.model": a.model,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.usage.prompt_tokens": prompt_tokens,
            "gen_ai.usage.completion_tokens": out_tokens,
            "gen_ai.latency.time_in_queue": (sched - arrival) / 1e9,
            "gen_ai.latency.time_to_first_token": (first - arrival) / 1e9,
            "gen_ai.latency.e2e": (end - arrival) / 1e9,
            "gen_ai.latency.time_in_model_prefill": 0.0
            if a.role == "decode" else (first - sched) / 1e9,
            "gen_ai.usage.cached_tokens": cached_tokens,
        })
        span.end(end)
        return resp

    def _final_doc(self, chat, cid, content, usage, kvp):
        created = int(time.time())
        if chat:
            doc = {"id": cid, "object": "chat.completion",
                   "created": created, "model": self.a.model,
                   "choices": [{"index": 0, "message": {
                       "role": "assistant", "content": content},
                       "finish_reason": "length"}],
                   "usage": usage}
        else:
            doc = {"id": cid, "object": "text_completion",
                   "created": created, "model": self.a.model,
                   "choices": [{"index": 0, "text": content,
                                "finish_reason": "length"}],
                   "usage": usage}
        if kvp is not None:
            doc["kv_transfer_params"] = kvp
        return doc

    def words(self, prompt, n):
        """The generated words: a function of the prompt (and --seed), so
        the same request streamed or not gives the same text."""
        h = hashlib.blake2b(("%s|%s" % (self.a.seed, prompt)).encode(
            "utf-8", "surrogatepass"), digest_size=8).digest()
        rng = random.Random(int.from_bytes(h, "big"))
        return [rng.choice(WORDS) for _ in range(n)]

    async def _stream(self, request, chat, cid, words, usage,
                      include_usage, rid, prefill_only):
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "x-request-id": rid})
        await resp.prepare(request)
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text, finish=None, role=False):
            if chat:
                delta = {"content": text}
                if role:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta,
                          "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish}
            return ("data: " + json.dumps({
                "id": cid, "object": obj, "created": created,
                "model": self.a.model, "choices": [choice]}) +
                "\n\n").encode()

        out_tokens = len(words)
        for i in range(out_tokens):
            if i > 0:
                await self.sleep_ms(self.tpot_ms())
            word = words[i] if i == 0 else " " + words[i]
            last = i == out_tokens - 1
            await resp.write(chunk(word, "length" if last else None,
                                   role=i == 0))
        if include_usage:
            await resp.write(("data: " + json.dumps({
                "id": cid, "object": obj, "created": created,
                "model": self.a.model, "choices": [],
                "usage": usage}) + "\n\n").encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=("prefill", "decode"), required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct")
    p.add_argument("--prefill-base-ms", type=float, default=12.0)
    p.add_argument("--prefill-us-per-token", type=float, default=90.0)
    p.add_argument("--kv-link", choices=sorted(KV_LINKS), default="rdma",
                   help="KV transfer profile (default rdma)")
    p.add_argument("--kv-base-ms", type=float, default=None)
    p.add_argument("--kv-us-per-token", type=float, default=None)
    p.add_argument("--connector", default=None,
                   choices=("nixlv2", "lmcache", "shared-storage", "sglang"),
                   help="the coordinator's connector: with nixlv2 or "
                        "sglang a decode request without KV parameters is "
                        "decode-only (default: it loads the shared store)")
    p.add_argument("--decode-first-ms", type=float, default=14.0)
    p.add_argument("--tpot-ms", type=float, default=11.0)
    p.add_argument("--tpot-batch-factor", type=float, default=0.02)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--block-tokens", type=int, default=16)
    p.add_argument("--cache-blocks", type=int, default=65536)
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply every delay (e.g. 0.2 for fast tests)")
    p.add_argument("--error-rate", type=float, default=0.0,
                   help="fraction of requests answered with HTTP 500")
    p.add_argument("--stall-s", type=float, default=0.0,
                   help="wait this long before serving (timeout tests)")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    base, per_token = KV_LINKS[a.kv_link]
    if a.kv_base_ms is None:
        a.kv_base_ms = base
    if a.kv_us_per_token is None:
        a.kv_us_per_token = per_token
    if a.kv_base_ms < 0 or a.kv_us_per_token < 0 or a.time_scale < 0:
        p.error("--kv-base-ms, --kv-us-per-token and --time-scale must not "
                "be negative")
    if a.max_num_seqs is None:
        a.max_num_seqs = 16 if a.role == "prefill" else 64
    return a


def main(argv=None):
    args = parse_args(argv)
    sim = Sim(args)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/completions", sim.completions)
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_get("/v1/models", sim.models)
    app.router.add_get("/health", sim.health)

    async def on_cleanup(app):
        try:
            sim.tracer.close(5)
        except pdtrace.PdtraceError as e:
            print("vllm_sim: tracer close: %s" % e, file=sys.stderr)

    app.on_cleanup.append(on_cleanup)
    print("vllm_sim %s listening on %s:%d" % (args.role, args.host,
                                              args.port), flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None,
                access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
