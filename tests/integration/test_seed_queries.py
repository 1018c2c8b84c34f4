"""The published P/D coordinator dashboard's TraceQL queries, evaluated
over spans libpdtrace really exported.

tests/docs/seed_queries.traceql holds the queries of the dashboard
description, unchanged, one per line. The pd_demo C example sends
requests (nixlv2 and lmcache sequential, sglang concurrent, a
decode-only run) to the loopback sink; each query is then checked against
the decoded spans:

- its spanset filter (service, span name, attribute comparisons joined by
  &&) selects at least one exported span; every attribute it compares
  exists there with a type Tempo would match against the literal (a
  double against a float literal, an int against an integer literal,
  string and bool alike), and the value matches;
- every attribute its pipeline reads (select, by, aggregates) is on the
  selected spans with a usable type (by() on all of them).

This is not a TraceQL engine: it evaluates the one form the published
queries use. Queries on vLLM's own llm_request span are checked against
the attribute index of docs/spans.md instead, since vLLM emits them.

The docs/spans.md attribute index is also checked against the exported
spans: every exported attribute is listed, with the type it has on the
wire and on the spans the index names.
"""

import json
import os
import random
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from test_collector import PD_DEMO, need_pd_demo, random_traceparent

sys.path.insert(0, os.path.join(ROOT, "tests", "docs"))
import traceql_lint as tl  # noqa: E402

SEED_QUERIES = os.path.join(ROOT, "tests", "docs", "seed_queries.traceql")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"  # what pd_demo sets
VARIABLES = {"model": ".*"}                 # the dashboard's "All"
RUNS = [("nixlv2", "sequential"), ("lmcache", "sequential"),
        ("sglang", "concurrent"), ("nixlv2", "decode-only")]
# Copied from the request span onto the decode span by the library.
MIRRORED = {"llm_d.pd_proxy.connector", "llm_d.pd_proxy.disaggregation_enabled",
            "gen_ai.request.model", "gen_ai.request.stream",
            "llm_d.pd_proxy.decode.streaming"}
DECODE = "llm_d.pd_proxy.decode"
WIRE_TYPE = {"string": "string", "bool": "bool", "int": "int", "double": "double"}


def seed_queries():
    with open(SEED_QUERIES, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def is_vllm(q):
    return any(ss["service"] and ss["service"].startswith("vllm-") for ss in q.spansets)


def needs_mirror(q):
    """The query reads a mirrored attribute from the decode span."""
    if not any(ss["name"] == DECODE for ss in q.spansets):
        return False
    return any(r.name in MIRRORED for r in q.refs)


def params():
    return [pytest.param(text, id="q%02d" % i)
            for i, text in enumerate(seed_queries())]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Spans pd_demo exported, decoded by the sink (one sink per run)."""
    from conftest import SinkProc

    need_pd_demo()
    spans = []
    for n, (connector, mode) in enumerate(RUNS):
        tmp = tmp_path_factory.mktemp("seed%d" % n)
        sink = SinkProc(tmp)
        try:
            seed = 700 + n
            tp = random_traceparent(random.Random(seed))
            printed = run_pd_demo(sink.url, mode, connector, seed, tp)
            want = {p["request_id"] for p in printed}
            got = sink.wait_for(
                lambda s: want <= {a_value(x, "llm_d.pd_proxy.request_id")
                                   for x in s if x["name"] == DECODE},
                what="%d requests" % len(want))
            spans += got
        finally:
            sink.stop()
    return spans


def run_pd_demo(url, mode, connector, seed, tp):
    """Runs pd_demo for 4 requests; returns the lines it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_BSP_SCHEDULE_DELAY": "100"})
    args = [PD_DEMO, "--requests", "4", "--mode", mode, "--connector", connector,
            "--seed", str(seed), "--traceparent", tp]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, "pd_demo exited %d\n%s" % (proc.returncode, proc.stderr[-4000:])
    printed = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    assert len(printed) == 4, proc.stdout
    return printed


def a_value(span, key):
    tv = span["attributes"].get(key)
    return None if tv is None else tv["value"]


def typed(span, ref):
    """(type, value) of the attribute a reference names on span, or None."""
    if ref.scope in ("resource", ""):
        tv = span["resource"]["attributes"].get(ref.name)
        if tv is not None or ref.scope == "resource":
            return None if tv is None else (tv["type"], tv["value"])
    tv = span["attributes"].get(ref.name)
    return None if tv is None else (tv["type"], tv["value"])


def literal_value(lit):
    kind, text = lit
    if kind == "string":
        s = re.sub(r"\\(.)", r"\1", text[1:-1])
        return re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES[m.group(1)], s)
    if kind == "bool":
        return text == "true"
    if kind == "number":
        return float(text) if "." in text else int(text)
    raise AssertionError("literal %r is not one the published queries use" % (text,))


def why_not(span, ss):
    """None when span passes the spanset's conditions, else the reason."""
    if ss["name"] is not None and span["name"] != ss["name"]:
        return "name"
    for ref in ss["conds"]:
        if ref.op is None:
            raise AssertionError("bare attribute %r in a filter" % ref)
        got = typed(span, ref)
        if got is None:
            return "%s missing" % ref.name
        typ, val = got
        want = literal_value(ref.literal)
        lt = tl.literal_type(ref.literal)
        if ref.op in ("=~", "!~"):
            if typ != "string":
                return "%s is %s, not a string" % (ref.name, typ)
            hit = re.fullmatch(want, val) is not None
            if hit != (ref.op == "=~"):
                return "%s=%r does not match %r" % (ref.name, val, want)
            continue
        if WIRE_TYPE.get(typ) != lt:
            return "%s is %s on the wire, compared with a %s literal" % (ref.name, typ, lt)
        ok = {"=": val == want, "!=": val != want, ">": val > want, ">=": val >= want,
              "<": val < want, "<=": val <= want}[ref.op]
        if not ok:
            return "%s=%r fails %s %r" % (ref.name, val, ref.op, want)
    return None


@pytest.mark.parametrize("text", params())
def test_seed_query_matches_exported_spans(exported, text):
    q = tl.Query(text)
    assert "||" not in [t for _, t in q.tokens], "only && filters are evaluated here"
    assert len(q.spansets) == 1, "structural queries are not evaluated here"
    ss = q.spansets[0]
    if is_vllm(q):
        # vLLM emits these spans; check the query against what we document
        # of them.
        problems = tl.lint(q, tl.load_index())
        assert not problems, problems
        pytest.skip("selects vLLM's llm_request span; checked against docs/spans.md only")
    assert exported, "pd_demo exported nothing"
    reasons = {}
    selected = []
    for s in exported:
        r = why_not(s, ss)
        if r is None:
            selected.append(s)
        elif r != "name":
            reasons[r] = reasons.get(r, 0) + 1
    assert selected, "no exported span matches %s; closest misses: %s" % (text, reasons)
    for ref in q.refs:
        if ref.spanset is not None:
            continue
        got = [typed(s, ref) for s in selected]
        present = [g for g in got if g is not None]
        assert present, "%s: no selected span (%s) carries %s" % (
            text, sorted({s["name"] for s in selected}), ref.name)
        types = {g[0] for g in present}
        if ref.where in tl.NUMERIC_AGGREGATES or ref.where in ("select", "pipeline") \
                and ref.name.endswith("_ms"):
            assert types <= {"double"}, "%s: %s has types %s" % (text, ref.name, types)
        if ref.where == "by":
            assert len(present) == len(selected), "%s: %d of %d spans lack %s" % (
                text, len(selected) - len(present), len(selected), ref.name)


def test_seed_queries_are_the_published_ones():
    qs = seed_queries()
    assert len(qs) == 12
    assert sum(1 for q in qs if needs_mirror(tl.Query(q))) == 4
    assert all(not tl.lint(q, tl.load_index()) for q in qs), \
        [(q, tl.lint(q, tl.load_index())) for q in qs if tl.lint(q, tl.load_index())]


def test_evaluator_rejects_what_it_should(exported):
    """The evaluation can fail: wrong names, types and values select nothing."""
    dec = '{resource.service.name="llm-d-pd-proxy" && name="llm_d.pd_proxy.decode"'
    req = '{resource.service.name="llm-d-pd-proxy" && name="llm_d.pd_proxy.request"'
    for bad in [dec.replace("llm-d-pd-proxy", "other") + "}",
                dec.replace(".decode", ".decod") + "}",
                req + ' && span.llm_d.pd_proxy.connector="nope"}',
                req + " && span.llm_d.pd_proxy.true_ttft_ms > 0}",      # int vs double
                req + " && span.llm_d.pd_proxy.disaggregation_enabled=1}",
                req + ' && span.gen_ai.request.model=~"meta"}']:        # anchored
        ss = tl.Query(bad).spansets[0]
        assert not [s for s in exported if why_not(s, ss) is None], bad
    ss = tl.Query(req + " && span.llm_d.pd_proxy.true_ttft_ms > 0.0 && "
                  'span.gen_ai.request.model=~"%s"}' % re.escape(MODEL).replace("\\", "\\\\")
                  ).spansets[0]
    assert [s for s in exported if why_not(s, ss) is None]


def test_attribute_index_matches_exported_spans(exported):
    index = tl.load_index()
    short = {v: k for k, v in tl.SPAN_NAMES.items()}
    bad = []
    for s in exported:
        where = short.get(s["name"])
        for key, tv in s["attributes"].items():
            if key not in index:
                bad.append("%s: %s is exported but not in the index" % (s["name"], key))
                continue
            typ, spans = index[key]
            if tv["type"] != typ:
                bad.append("%s: %s is %s on the wire, %s in the index" % (s["name"], key, tv["type"], typ))
            if where and where not in spans:
                bad.append("%s: %s is exported on %s, index says %s" % (s["name"], key, where, sorted(spans)))
        for key, tv in s["resource"]["attributes"].items():
            if key in index and index[key][0] != tv["type"]:
                bad.append("resource %s is %s, index says %s" % (key, tv["type"], index[key][0]))
    assert not bad, "\n".join(sorted(set(bad)))
