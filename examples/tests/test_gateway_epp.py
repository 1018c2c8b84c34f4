"""Unit tests of the gateway's endpoint picker: prompt text, chained block
hashes, the per-server LRU, prefix scoring, routing and the selective P/D
decision (examples/gateway/epp.py; no network, no tracing)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "gateway"))
import epp  # noqa: E402

BS = 64


def text(n_blocks, tag="a"):
    """n_blocks full blocks whose contents differ by block and tag."""
    return "".join(("%s%05d" % (tag, i)).ljust(BS, ".")
                   for i in range(n_blocks))


# ---- prompt text -----------------------------------------------------------

def test_prompt_text_chat_turns_extend_the_previous_turn():
    t1 = [{"role": "system", "content": "be brief"},
          {"role": "user", "content": "hello"}]
    t2 = t1 + [{"role": "assistant", "content": "hi"},
               {"role": "user", "content": [{"type": "text", "text": "more"}]}]
    a = epp.prompt_text({"messages": t1}, True)
    b = epp.prompt_text({"messages": t2}, True)
    assert a == "system: be brief\nuser: hello\n"
    assert b.startswith(a) and b.endswith("user: more\n")


def test_prompt_text_completions_forms():
    assert epp.prompt_text({"prompt": "abc"}, False) == "abc"
    assert epp.prompt_text({"prompt": ["a", "b"]}, False) == "a\nb"
    assert epp.prompt_text({"prompt": [1, 2, 3]}, False) == "1 2 3"


@pytest.mark.parametrize("body,chat,msg", [
    ([], True, "not a JSON object"),
    ({}, True, "messages must be"),
    ({"messages": []}, True, "messages must be"),
    ({"messages": ["x"]}, True, "messages[0] is not an object"),
    ({"messages": [{"content": "x"}]}, True, "role"),
    ({"messages": [{"role": "user", "content": 5}]}, True,
     "neither a string nor a list"),
    ({"messages": [{"role": "user", "content": [{"text": 1}]}]}, True,
     "text is not a string"),
    ({}, False, "prompt must be"),
    ({"prompt": [1, "a"]}, False, "prompt must be"),
    ({"prompt": [True]}, False, "prompt must be"),
])
def test_prompt_text_rejects_bad_bodies(body, chat, msg):
    with pytest.raises(epp.BadRequest) as e:
        epp.prompt_text(body, chat)
    assert msg in str(e.value)


# ---- block hashes ----------------------------------------------------------

def test_block_hashes_are_chained_and_skip_the_partial_block():
    h = epp.block_hashes(text(3) + "tail", BS)
    assert len(h) == 3 and len(set(h)) == 3
    # same block contents at another position hash differently (chained)
    same = "x" * (2 * BS)
    h2 = epp.block_hashes(same, BS)
    assert h2[0] != h2[1]
    # a change in block 0 changes every later hash
    other = "Z" + text(3)[1:]
    h3 = epp.block_hashes(other, BS)
    assert all(a != b for a, b in zip(h, h3))
    # a longer prompt with the same start shares the leading hashes
    assert epp.block_hashes(text(5), BS)[:3] == \
        epp.block_hashes(text(3), BS)
    assert epp.block_hashes("short", BS) == []


def test_block_hashes_depend_on_the_model_seed():
    assert epp.block_hashes(text(2), BS, "m1") != \
        epp.block_hashes(text(2), BS, "m2")
    with pytest.raises(ValueError):
        epp.block_hashes("x", 0)


# ---- LRU and scores --------------------------------------------------------

def test_lru_is_bounded_and_evicts_least_recently_routed():
    lru = epp.BlockLRU(4)
    h = epp.block_hashes(text(6), BS)
    lru.add(h[:4])
    lru.add(h[:1])            # h0 becomes the most recent
    lru.add(h[4:5])           # evicts h1, the least recent
    assert len(lru) == 4
    assert h[0] in lru and h[1] not in lru and h[4] in lru
    # longest *prefix*: h1 missing stops the match at 1 block
    assert lru.matched(h) == 1
    with pytest.raises(ValueError):
        epp.BlockLRU(0)


def test_scores_are_longest_prefix_over_total_blocks():
    pool = epp.Pool(["d1:1", "d2:2"])
    h = epp.block_hashes(text(8), BS)
    pool.caches["d1:1"].add(h[:6])
    pool.caches["d2:2"].add(h[:2] + h[3:8])   # a hole at block 2
    s = pool.scores(h)
    assert s["d1:1"] == (6, 0.75)
    assert s["d2:2"] == (2, 0.25)
    assert pool.scores([]) == {"d1:1": (0, 0.0), "d2:2": (0, 0.0)}
    assert epp.format_scores(s) == "d1:1=0.750,d2:2=0.250"


def test_pool_rejects_duplicates():
    with pytest.raises(ValueError):
        epp.Pool(["a:1", "a:1"])


# ---- routing ---------------------------------------------------------------

def test_round_robin_ignores_the_cache():
    p = epp.Picker(["d1:1", "d2:2", "d3:3"], [], "round-robin")
    h = p.hashes(text(4))
    got = []
    for _ in range(6):
        r = p.pick(h, 4 * BS)
        p.learn(r, h)
        got.append(r.decode)
    assert got == ["d1:1", "d2:2", "d3:3"] * 2


def test_prefix_aware_follows_the_conversation():
    p = epp.Picker(["d1:1", "d2:2", "d3:3"], ["p1:1", "p2:2"],
                   "prefix-aware")
    # three new conversations spread over the three servers
    convs = [text(4, tag) for tag in "abc"]
    first = []
    for c in convs:
        h = p.hashes(c)
        r = p.pick(h, len(c))
        assert r.decision.cache_hit_ratio == 0.0
        p.learn(r, h)
        first.append(r.decode)
    assert sorted(first) == ["d1:1", "d2:2", "d3:3"]
    # later turns extend the prompt: each goes back to its server
    for c, d in zip(convs, first):
        longer = c + text(4, "z")
        h = p.hashes(longer)
        r = p.pick(h, len(longer))
        assert r.decode == d
        assert r.decision.cache_hit_ratio == 0.5
        assert r.decode_scores[d] == (4, 0.5)
        p.learn(r, h)


def test_prefix_aware_ties_go_to_the_least_loaded():
    p = epp.Picker(["d1:1", "d2:2"], [], "prefix-aware")
    p.decode.inflight["d1:1"] = 3
    h = p.hashes(text(2))
    assert p.pick(h, 2 * BS).decode == "d2:2"
    assert p.pick(h, 2 * BS).decode == "d2:2"


def test_prefill_is_scored_too():
    p = epp.Picker(["d:1"], ["p1:1", "p2:2"], "prefix-aware")
    h = p.hashes(text(4))
    p.prefill.caches["p2:2"].add(h)
    r = p.pick(h, 4 * BS)
    assert r.prefill == "p2:2" and r.decision.decision == epp.PD


# ---- selective P/D ---------------------------------------------------------

def test_decide_threshold_on_uncached_bytes():
    d = epp.decide(1000, 0.5, 600, True)
    assert (d.decision, d.reason, d.uncached_input_bytes) == \
        (epp.DECODE_ONLY, epp.REASON_SHORT, 500)
    d = epp.decide(1000, 0.4, 600, True)
    assert (d.decision, d.reason, d.uncached_input_bytes) == \
        (epp.PD, epp.REASON_LONG, 600)   # equal to the threshold: P/D
    assert epp.decide(10, 0.0, 0, True).decision == epp.PD
    assert epp.decide(0, 0.0, 0, True).decision == epp.PD
    d = epp.decide(5000, 0.0, 0, False)
    assert (d.decision, d.reason) == (epp.DECODE_ONLY, epp.REASON_NO_PREFILL)


@pytest.mark.parametrize("args", [(-1, 0.0, 0, True), (1, 0.0, -1, True),
                                  (1, 1.5, 0, True), (1, -0.1, 0, True)])
def test_decide_rejects_bad_inputs(args):
    with pytest.raises(ValueError):
        epp.decide(*args)


def test_cached_conversation_goes_decode_only():
    """Turn 1 of a long prompt needs prefill; turn 2 adds a few bytes to
    a prompt the decode server holds, so it skips prefill."""
    p = epp.Picker(["d:1"], ["p:1"], "prefix-aware", pd_threshold=300)
    t1 = text(20)
    h1 = p.hashes(t1)
    r1 = p.pick(h1, len(t1))
    assert r1.decision.decision == epp.PD and r1.prefill == "p:1"
    p.learn(r1, h1)
    t2 = t1 + text(2, "n")
    h2 = p.hashes(t2)
    r2 = p.pick(h2, len(t2))
    assert r2.decision.decision == epp.DECODE_ONLY
    assert r2.prefill is None
    assert r2.decision.cache_hit_ratio == pytest.approx(20 / 22)


@pytest.mark.parametrize("kw", [dict(routing="random"), dict(decode=[]),
                                dict(pd_threshold=-1), dict(block_size=0),
                                dict(lru_blocks=0)])
def test_picker_rejects_bad_configuration(kw):
    args = dict(decode=["d:1"], prefill=[], routing="prefix-aware")
    args.update(kw)
    with pytest.raises(ValueError):
        epp.Picker(**args)
