"""The endpoint picker's logic, free of HTTP and tracing: prompt text,
prefix-cache scoring and the selective P/D decision.

Prefix-cache scoring follows the shape of llm-d's prefix scorer: the prompt
is cut into blocks of ``block_size`` bytes (64 by default, about 16 tokens),
each block's hash chains the previous one (so a block only matches when
everything before it matches too), and every server keeps a bounded LRU of
the block hashes the gateway routed to it. A server's score is the number
of leading blocks it holds divided by the prompt's number of blocks. A
trailing partial block is not hashed.

Selective P/D: the part of the prompt the decode server does not hold is
``(1 - cache_hit_ratio) * user_input_bytes`` bytes; below ``pd_threshold``
the request goes decode-only, otherwise prefill then decode.
"""
import collections
import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

DEFAULT_BLOCK_SIZE = 64
DEFAULT_LRU_BLOCKS = 32768

PD = "pd"
DECODE_ONLY = "decode-only"
# Reasons, a fixed vocabulary so that dashboards can group by them.
REASON_SHORT = "uncached_input_below_threshold"
REASON_LONG = "uncached_input_at_or_above_threshold"
REASON_NO_PREFILL = "no_prefill_servers"

ROUTING_MODES = ("round-robin", "prefix-aware")


class BadRequest(ValueError):
    """The request body cannot be routed; the message says why."""


def _text(content: Any, where: str) -> str:
    """The text of an OpenAI message content: a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    out.append(t)
                elif t is not None:
                    raise BadRequest("%s[%d].text is not a string"
                                     % (where, i))
            else:
                raise BadRequest("%s[%d] is neither a string nor an object"
                                 % (where, i))
        return "".join(out)
    raise BadRequest("%s is neither a string nor a list" % where)


def prompt_text(body: Any, chat: bool) -> str:
    """The user input the scorer hashes: for chat, every message as
    ``role: content`` on its own line (so a later turn that resends the
    conversation starts with the same text as the turn before); for
    completions, the prompt. Raises BadRequest for a body that has none."""
    if not isinstance(body, dict):
        raise BadRequest("body is not a JSON object")
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise BadRequest("messages must be a non-empty list")
        lines = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise BadRequest("messages[%d] is not an object" % i)
            role = m.get("role")
            if not isinstance(role, str):
                raise BadRequest("messages[%d].role is not a string" % i)
            lines.append("%s: %s\n" % (role, _text(m.get("content"),
                                                   "messages[%d].content" % i)))
        return "".join(lines)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return "\n".join(prompt)
        if all(isinstance(p, int) and not isinstance(p, bool)
               for p in prompt):
            return " ".join(str(p) for p in prompt)
    raise BadRequest("prompt must be a string, a list of strings or a list "
                     "of token ids")


def block_hashes(text: str, block_size: int = DEFAULT_BLOCK_SIZE,
                 seed: str = "") -> List[bytes]:
    """Chained hashes of the full ``block_size``-byte blocks of ``text``
    (UTF-8). ``seed`` (the model name) starts the chain, so the same prompt
    sent to two models never matches."""
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    data = text.encode("utf-8", "surrogatepass")
    prev = hashlib.blake2b(seed.encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()
    out = []
    for off in range(0, len(data) - block_size + 1, block_size):
        prev = hashlib.blake2b(prev + data[off:off + block_size],
                               digest_size=16).digest()
        out.append(prev)
    return out


class BlockLRU:
    """The block hashes one server is believed to hold, least recently
    routed first, at most ``capacity`` of them."""

    def __init__(self, capacity: int = DEFAULT_LRU_BLOCKS) -> None:
        if capacity <= 0:
            raise ValueError("LRU capacity must be positive")
        self.capacity = capacity
        self._d: "collections.OrderedDict[bytes, None]" = \
            collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, h: bytes) -> bool:
        return h in self._d

    def matched(self, hashes: Sequence[bytes]) -> int:
        """Number of leading blocks held."""
        n = 0
        for h in hashes:
            if h not in self._d:
                break
            n += 1
        return n

    def add(self, hashes: Sequence[bytes]) -> None:
        for h in hashes:
            if h in self._d:
                self._d.move_to_end(h)
            else:
                self._d[h] = None
        while len(self._d) > self.capacity:
            self._d.popitem(last=False)


@dataclass
class Pool:
    """Servers of one role (decode or prefill): their caches, in-flight
    counts and round-robin cursor."""
    servers: List[str]
    lru_blocks: int = DEFAULT_LRU_BLOCKS
    caches: Dict[str, BlockLRU] = field(init=False)
    inflight: Dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if len(set(self.servers)) != len(self.servers):
            raise ValueError("a server is listed twice: %s"
                             % ",".join(self.servers))
        self.caches = {s: BlockLRU(self.lru_blocks) for s in self.servers}
        self.inflight = {s: 0 for s in self.servers}
        self._rr = itertools.cycle(range(len(self.servers))) \
            if self.servers else None

    def scores(self, hashes: Sequence[bytes]) -> Dict[str, Tuple[int, float]]:
        """server -> (matched leading blocks, score in [0, 1])."""
        total = len(hashes)
        out = {}
        for s in self.servers:
            m = self.caches[s].matched(hashes)
            out[s] = (m, m / total if total else 0.0)
        return out

    def next_rr(self) -> str:
        assert self._rr is not None
        return self.servers[next(self._rr)]

    def pick(self, routing: str,
             scores: Dict[str, Tuple[int, float]]) -> str:
        """round-robin: the next server in turn. prefix-aware: the
        highest score; among equals the fewest requests in flight, then
        round-robin order (so new conversations spread out)."""
        if not self.servers:
            raise ValueError("no servers")
        rr = self.next_rr()
        if routing == "round-robin":
            return rr
        start = self.servers.index(rr)
        order = self.servers[start:] + self.servers[:start]
        return max(order, key=lambda s: (scores[s][0],
                                         -self.inflight[s],
                                         -order.index(s)))


@dataclass
class Decision:
    decision: str             # PD or DECODE_ONLY
    reason: str
    cache_hit_ratio: float    # the chosen decode server's score
    pd_threshold: int
    user_input_bytes: int
    uncached_input_bytes: int


def decide(user_input_bytes: int, cache_hit_ratio: float,
           pd_threshold: int, have_prefill: bool) -> Decision:
    """Selective P/D: decode-only when the uncached part of the input is
    below the threshold (a threshold of 0 always disaggregates), or when
    there is no prefill server."""
    if user_input_bytes < 0 or pd_threshold < 0:
        raise ValueError("byte counts must not be negative")
    if not 0.0 <= cache_hit_ratio <= 1.0:
        raise ValueError("cache_hit_ratio must be in [0, 1]")
    uncached = int(round((1.0 - cache_hit_ratio) * user_input_bytes))
    if not have_prefill:
        d, why = DECODE_ONLY, REASON_NO_PREFILL
    elif uncached < pd_threshold:
        d, why = DECODE_ONLY, REASON_SHORT
    else:
        d, why = PD, REASON_LONG
    return Decision(d, why, cache_hit_ratio, pd_threshold, user_input_bytes,
                    uncached)


@dataclass
class Route:
    decode: str
    prefill: Optional[str]
    decision: Decision
    total_blocks: int
    decode_scores: Dict[str, Tuple[int, float]]
    prefill_scores: Dict[str, Tuple[int, float]]


class Picker:
    """Scores both pools, picks the servers and takes the decision; then
    remembers that the chosen servers now hold the prompt's blocks."""

    def __init__(self, decode: Sequence[str], prefill: Sequence[str],
                 routing: str = "prefix-aware", pd_threshold: int = 0,
                 block_size: int = DEFAULT_BLOCK_SIZE,
                 lru_blocks: int = DEFAULT_LRU_BLOCKS) -> None:
        if routing not in ROUTING_MODES:
            raise ValueError("routing must be one of %s, not %r"
                             % (", ".join(ROUTING_MODES), routing))
        if not decode:
            raise ValueError("at least one decode server is needed")
        if pd_threshold < 0:
            raise ValueError("pd_threshold must not be negative")
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.routing = routing
        self.pd_threshold = pd_threshold
        self.block_size = block_size
        self.decode = Pool(list(decode), lru_blocks)
        self.prefill = Pool(list(prefill), lru_blocks)

    def hashes(self, text: str, model: str = "") -> List[bytes]:
        return block_hashes(text, self.block_size, model)

    def score(self, hashes: Sequence[bytes]):
        return self.decode.scores(hashes), self.prefill.scores(hashes)

    def pick(self, hashes: Sequence[bytes], user_input_bytes: int,
             scores=None) -> Route:
        ds, ps = scores if scores is not None else self.score(hashes)
        d = self.decode.pick(self.routing, ds)
        dec = decide(user_input_bytes, ds[d][1], self.pd_threshold,
                     bool(self.prefill.servers))
        p = None
        if dec.decision == PD:
            p = self.prefill.pick(self.routing, ps)
        return Route(d, p, dec, len(hashes), ds, ps)

    def learn(self, route: Route, hashes: Sequence[bytes]) -> None:
        """After routing: the decode server (and the prefill server, if
        any) now hold the prompt's KV blocks."""
        self.decode.caches[route.decode].add(hashes)
        if route.prefill is not None:
            self.prefill.caches[route.prefill].add(hashes)


def format_scores(scores: Dict[str, Tuple[int, float]]) -> str:
    """``host:port=0.750`` for each server, comma-separated."""
    return ",".join("%s=%.3f" % (s, v[1]) for s, v in scores.items())
