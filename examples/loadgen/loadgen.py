#!/usr/bin/env python3
"""loadgen: the 6-worker P/D load generator, measuring client TTFT.

    python loadgen.py 6 5                      # workers, minutes
    python loadgen.py --workers 6 --minutes 5 --endpoint http://127.0.0.1:8000
    python loadgen.py --seconds 30 --endpoint URL --csv out.csv
    python loadgen.py --mode chat --conversations 8 --turns 5 --endpoint URL

Patterns (the published P/D load script; POST /v1/chat/completions,
temperature 0.7, an X-Request-ID header on every request), by worker:
  1, 6  long prompt, short output (50-75 tokens), 0.3 s pause
  2     long prompt, 150-249 tokens, 0.5 s pause
  3     mixed prompts cycling short/medium/long/very long, 0.4 s pause
  4     bursts of 4 concurrent long requests, then 3 s pause
  5     streaming, medium prompt, 100-199 tokens, 0.5 s pause
Workers beyond 6 repeat the cycle. The pattern also goes out in the
x-pdtrace-pattern header, which pd_proxy records on its request span.

Client TTFT (the ground truth the coordinator's true TTFT is checked
against) runs from just before the request is sent to the first non-empty
SSE data event for streaming requests, or the first body byte otherwise.

The summary lists failed requests by HTTP status code (0: no answer),
with their error types.

--mode chat runs multi-turn conversations whose later turns resend the
earlier context (so the prefix cache helps) and reports first-turn versus
later-turn TTFT and the speedup. Each request carries x-conversation-id,
x-turn-index (0 for the first turn) and, with --tenants a,b,..., an
x-tenant header (conversation i gets tenant i mod n; in the pattern mode,
worker i does). With --seed the
conversations' text is a function of the seed, so two runs send the same
conversations; --concurrency bounds how many run at once (default: all),
and with --all-turns every conversation runs all its turns, whatever
--seconds says.
"""
import argparse
import asyncio
import csv
import json
import math
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import aiohttp

# Prompt sizes in tokens (about 4 characters each).
SIZES = {"short": 60, "medium": 500, "long": 2000, "very_long": 4000}
PATTERNS = {
    1: "1-long-short", 2: "2-long-medium", 3: "3-mixed", 4: "4-burst",
    5: "5-stream", 6: "6-long-short",
}
LOREM = ("disaggregated serving splits prefill and decode across pools so "
         "that long prompts do not stall token generation while the kv "
         "cache moves between engines over a fast interconnect").split()


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(1, math.ceil(q / 100.0 * len(s)))
    return s[k - 1]


@dataclass
class Result:
    request_id: str
    pattern: str
    worker: int
    start_unix: float
    status: int
    client_ttft_ms: Optional[float]
    total_ms: float
    stream: bool
    prompt_tokens: int
    output_tokens: Optional[int]
    error: str = ""
    turn: int = 0
    conversation: str = ""
    tenant: str = ""


@dataclass
class Stats:
    results: List[Result] = field(default_factory=list)

    def ok(self, r: Result) -> bool:
        return r.status == 200 and not r.error


class Client:
    def __init__(self, args, session: aiohttp.ClientSession):
        self.args = args
        self.session = session
        self.url = args.endpoint.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/v1/chat/completions"
        self.stats = Stats()
        self.rng = random.Random(args.seed)

    def text(self, tokens: int, rng: Optional[random.Random] = None,
             head: Optional[str] = None) -> str:
        # A unique head keeps independent requests from sharing a prefix.
        rng = rng or self.rng
        words = [head or "req-%s" % uuid.uuid4().hex[:12]]
        n = 1
        while n * 4 < tokens * 4:
            words.append(rng.choice(LOREM))
            n += 1.4
        return " ".join(words)[: tokens * 4]

    async def send(self, pattern: str, worker: int, messages: List[Dict],
                   max_tokens: int, stream: bool, turn: int = 0,
                   conversation: str = "", tenant: str = "") -> Result:
        rid = "lg-%s" % uuid.uuid4().hex
        body = {"model": self.args.model, "messages": messages,
                "max_tokens": max_tokens, "temperature": 0.7,
                "stream": stream}
        headers = {"X-Request-ID": rid, "x-pdtrace-pattern": pattern,
                   "Content-Type": "application/json"}
        if conversation:
            headers["x-conversation-id"] = conversation
            headers["x-turn-index"] = str(turn)
        if not tenant and self.args.tenants and not conversation:
            tenant = self.args.tenants[(worker - 1) % len(self.args.tenants)]
        if tenant:
            headers["x-tenant"] = tenant
        prompt_tokens = sum(len(m["content"]) for m in messages) // 4
        payload = json.dumps(body).encode()
        start_unix = time.time()
        t0 = time.monotonic_ns()
        ttft = None
        status = 0
        error = ""
        out_tokens = None
        try:
            async with self.session.post(self.url, data=payload,
                                         headers=headers) as r:
                status = r.status
                if stream and status == 200:
                    buf = b""
                    n = 0
                    async for chunk in r.content.iter_any():
                        if ttft is None:
                            buf += chunk
                            while ttft is None:
                                i = buf.find(b"\n\n")
                                if i < 0:
                                    break
                                ev, buf = buf[:i], buf[i + 2:]
                                if has_token(ev):
                                    ttft = (time.monotonic_ns() - t0) / 1e6
                        n += chunk.count(b"data: {")
                    out_tokens = max(0, n)
                else:
                    data = b""
                    async for chunk in r.content.iter_any():
                        if ttft is None and chunk:
                            ttft = (time.monotonic_ns() - t0) / 1e6
                        data += chunk
                    if status == 200:
                        try:
                            out_tokens = json.loads(data)["usage"][
                                "completion_tokens"]
                        except (ValueError, KeyError, TypeError):
                            pass
                    else:
                        try:
                            error = json.loads(data)["error"]["type"]
                        except (ValueError, KeyError, TypeError):
                            error = "http_%d" % status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            error = type(e).__name__
        total = (time.monotonic_ns() - t0) / 1e6
        res = Result(rid, pattern, worker, start_unix, status,
                     ttft if status == 200 else None, total, stream,
                     prompt_tokens, out_tokens, error, turn, conversation,
                     tenant)
        self.stats.results.append(res)
        return res


def has_token(event: bytes) -> bool:
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            continue
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        for c in doc.get("choices") or ():
            if c.get("text") or (c.get("delta") or {}).get("content"):
                return True
    return False


async def worker(client: Client, w: int, deadline: float) -> None:
    kind = (w - 1) % 6 + 1
    pattern = PATTERNS[kind]
    rng = random.Random((client.args.seed or 0) * 100 + w)
    cycle = ["short", "medium", "long", "very_long"]
    i = 0
    while time.monotonic() < deadline:
        if kind in (1, 6):
            await client.send(pattern, w, user(client.text(SIZES["long"])),
                              rng.randint(50, 75), False)
            pause = 0.3
        elif kind == 2:
            await client.send(pattern, w, user(client.text(SIZES["long"])),
                              rng.randint(150, 249), False)
            pause = 0.5
        elif kind == 3:
            size = cycle[i % 4]
            await client.send(pattern, w, user(client.text(SIZES[size])),
                              rng.randint(50, 150), False)
            pause = 0.4
        elif kind == 4:
            await asyncio.gather(*(
                client.send(pattern, w, user(client.text(SIZES["long"])),
                            rng.randint(50, 100), False)
                for _ in range(4)))
            pause = 3.0
        else:
            await client.send(pattern, w, user(client.text(SIZES["medium"])),
                              rng.randint(100, 199), True)
            pause = 0.5
        i += 1
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))


def user(text: str) -> List[Dict]:
    return [{"role": "user", "content": text}]


async def conversation(client: Client, c: int, turns: int,
                       deadline: float, gate: asyncio.Semaphore) -> None:
    args = client.args
    seeded = args.seed is not None
    rng = random.Random((args.seed or 0) * 1000 + c)
    cid = "conv-%s-%d" % (args.seed if seeded else uuid.uuid4().hex[:8], c)
    tenants = args.tenants or []
    tenant = tenants[(c - 1) % len(tenants)] if tenants else ""
    async with gate:
        messages = [{"role": "system", "content": client.text(
            800, rng, cid if seeded else None)}]
        for turn in range(turns):
            if not args.all_turns and time.monotonic() >= deadline:
                return
            messages.append({"role": "user", "content": client.text(
                rng.randint(60, 200), rng, "turn-%d" % turn)})
            res = await client.send("chat", c, list(messages),
                                    rng.randint(30, 80), True, turn, cid,
                                    tenant)
            if res.status != 200:
                return
            messages.append({"role": "assistant", "content": client.text(
                res.output_tokens or 40, rng, "answer-%d" % turn)})
            await asyncio.sleep(args.think_s)


async def progress(client: Client, start: float, deadline: float,
                   every: float) -> None:
    while True:
        await asyncio.sleep(every)
        res = client.stats.results
        ok = [r for r in res if client.stats.ok(r)]
        ttfts = [r.client_ttft_ms for r in ok if r.client_ttft_ms]
        print("loadgen: %5.0fs  %d requests, %d ok, %d failed, client TTFT "
              "p50 %.1f ms" % (time.monotonic() - start, len(res), len(ok),
                               len(res) - len(ok),
                               percentile(ttfts, 50)), file=sys.stderr,
              flush=True)


def summary(stats: Stats, mode: str) -> Dict:
    out: Dict = {"patterns": {}}
    res = stats.results
    by: Dict[str, List[Result]] = {}
    for r in res:
        by.setdefault(r.pattern, []).append(r)
    for name in sorted(by):
        rs = by[name]
        ok = [r for r in rs if stats.ok(r)]
        t = [r.client_ttft_ms for r in ok if r.client_ttft_ms is not None]
        out["patterns"][name] = {
            "requests": len(rs), "success_rate": len(ok) / len(rs),
            "ttft_p50_ms": percentile(t, 50), "ttft_p95_ms": percentile(t, 95),
            "ttft_p99_ms": percentile(t, 99)}
    ok = [r for r in res if stats.ok(r)]
    t = [r.client_ttft_ms for r in ok if r.client_ttft_ms is not None]
    failures: Dict[str, Dict[str, int]] = {}
    for r in res:
        if not stats.ok(r):
            by_type = failures.setdefault(str(r.status), {})
            key = r.error or "-"
            by_type[key] = by_type.get(key, 0) + 1
    out["failures"] = failures
    out["requests"] = len(res)
    out["success_rate"] = len(ok) / len(res) if res else math.nan
    out["ttft_p50_ms"] = percentile(t, 50)
    out["ttft_p95_ms"] = percentile(t, 95)
    out["ttft_p99_ms"] = percentile(t, 99)
    if mode == "chat":
        first = [r.client_ttft_ms for r in ok
                 if r.turn == 0 and r.client_ttft_ms is not None]
        later = [r.client_ttft_ms for r in ok
                 if r.turn > 0 and r.client_ttft_ms is not None]
        f = sum(first) / len(first) if first else math.nan
        lt = sum(later) / len(later) if later else math.nan
        out["first_turn_avg_ttft_ms"] = f
        out["later_turn_avg_ttft_ms"] = lt
        out["speedup"] = f / lt if later and lt > 0 else math.nan
    return out


def print_summary(s: Dict, mode: str) -> None:
    print("\n== loadgen summary ==")
    print("requests %d, success %.1f%%, client TTFT p50 %.1f / p95 %.1f / "
          "p99 %.1f ms" % (s["requests"], 100 * s["success_rate"],
                           s["ttft_p50_ms"], s["ttft_p95_ms"],
                           s["ttft_p99_ms"]))
    fails = s.get("failures") or {}
    if fails:
        print("failures by status code:")
        for code in sorted(fails, key=int):
            kinds = fails[code]
            print("  %s%s: %d (%s)" % (
                code, " (no answer)" if code == "0" else "",
                sum(kinds.values()),
                ", ".join("%s %d" % (k, n) for k, n in sorted(kinds.items()))))
    else:
        print("failures: none")
    print("%-16s %8s %8s %10s %10s %10s" % ("pattern", "requests", "ok%",
                                            "p50 ms", "p95 ms", "p99 ms"))
    for name, p in s["patterns"].items():
        print("%-16s %8d %7.1f%% %10.1f %10.1f %10.1f" % (
            name, p["requests"], 100 * p["success_rate"], p["ttft_p50_ms"],
            p["ttft_p95_ms"], p["ttft_p99_ms"]))
    if mode == "chat":
        print("first-turn avg TTFT %.1f ms, later-turn avg TTFT %.1f ms, "
              "speedup %.2fx" % (s["first_turn_avg_ttft_ms"],
                                 s["later_turn_avg_ttft_ms"], s["speedup"]))


def write_csv(path: str, stats: Stats) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request_id", "pattern", "worker", "turn", "start_unix",
                    "status", "client_ttft_ms", "total_ms", "stream",
                    "prompt_tokens", "output_tokens", "error",
                    "conversation", "tenant"])
        for r in stats.results:
            w.writerow([r.request_id, r.pattern, r.worker, r.turn,
                        "%.6f" % r.start_unix, r.status,
                        "" if r.client_ttft_ms is None
                        else "%.3f" % r.client_ttft_ms,
                        "%.3f" % r.total_ms, int(r.stream), r.prompt_tokens,
                        "" if r.output_tokens is None else r.output_tokens,
                        r.error, r.conversation, r.tenant])


async def run(args) -> Dict:
    duration = args.seconds if args.seconds is not None else args.minutes * 60
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(
            timeout=timeout,
            connector=aiohttp.TCPConnector(limit=0)) as session:
        client = Client(args, session)
        start = time.monotonic()
        deadline = start + duration
        prog = asyncio.ensure_future(progress(client, start, deadline,
                                              args.progress_every))
        try:
            if args.mode == "chat":
                gate = asyncio.Semaphore(args.concurrency or
                                         args.conversations)
                tasks = [conversation(client, c + 1, args.turns, deadline,
                                      gate)
                         for c in range(args.conversations)]
            else:
                tasks = [worker(client, w + 1, deadline)
                         for w in range(args.workers)]
            await asyncio.gather(*tasks)
        finally:
            prog.cancel()
    s = summary(client.stats, args.mode)
    if args.csv:
        write_csv(args.csv, client.stats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=1)
    return s


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pos_workers", nargs="?", type=int, metavar="WORKERS",
                   help="number of workers (as --workers)")
    p.add_argument("pos_minutes", nargs="?", type=float, metavar="MINUTES",
                   help="run time in minutes (as --minutes)")
    p.add_argument("--endpoint", default="http://127.0.0.1:8000")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--seconds", type=float, default=None,
                   help="run time in seconds (wins over --minutes)")
    p.add_argument("--mode", choices=("patterns", "chat"),
                   default="patterns")
    p.add_argument("--conversations", type=int, default=6)
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct")
    p.add_argument("--csv", help="write one row per request here")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--request-timeout", type=float, default=120.0)
    p.add_argument("--progress-every", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=0,
                   help="chat: conversations at once (0: all)")
    p.add_argument("--all-turns", action="store_true",
                   help="chat: run every turn of every conversation, past "
                        "--seconds")
    p.add_argument("--think-s", type=float, default=0.2,
                   help="chat: pause between a conversation's turns")
    p.add_argument("--tenants", type=lambda v: [
        x.strip() for x in v.split(",") if x.strip()], default=None,
        help="comma-separated tenants sent in x-tenant (by conversation "
             "in chat mode, by worker otherwise)")
    a = p.parse_args(argv)
    if a.conversations < 1 or a.turns < 1 or a.concurrency < 0 or \
            a.think_s < 0:
        p.error("--conversations and --turns must be at least 1, "
                "--concurrency and --think-s not negative")
    for pos, name, default in (("pos_workers", "workers", 6),
                               ("pos_minutes", "minutes", 5.0)):
        v, named = getattr(a, pos), getattr(a, name)
        if v is not None and named is not None and v != named:
            p.error("%s given twice: %s and --%s %s" % (name, v, name, named))
        setattr(a, name, v if v is not None else
                named if named is not None else default)
    if a.workers < 1:
        p.error("workers must be at least 1")
    if a.minutes <= 0 and a.seconds is None:
        p.error("minutes must be positive")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    s = asyncio.run(run(args))
    print_summary(s, args.mode)
    return 0 if s["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
