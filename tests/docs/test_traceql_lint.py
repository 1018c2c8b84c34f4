#!/usr/bin/env python3
"""Checks every TraceQL query shipped in docs/ and docs/dashboards/.

Each query (```traceql blocks of the markdown files, panel targets and
Tempo template variables of the dashboards) must:

- name only attributes listed in the attribute index of docs/spans.md,
  in the right scope, and on the span its spanset selects;
- compare a double attribute with a float literal (500.0) and an int
  attribute with an integer literal: Tempo matches nothing across the two;
- compare strings with strings and booleans with true/false;
- write numbers with digits on both sides of the point (0.5, not .5);
- filter only on span names and services we (or vLLM) emit.

The self-tests feed deliberately bad queries and expect each rule to fire.
Pure Python, no build needed. Runs under pytest, or alone:
`python3 tests/docs/test_traceql_lint.py` (exits non-zero on failure).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import traceql_lint as tl  # noqa: E402

DOCS = tl.DOCS
DASHBOARD = os.path.join(DOCS, "dashboards", "pd-coordinator-metrics.json")
DECODE = '{resource.service.name="llm-d-pd-proxy" && name="llm_d.pd_proxy.decode"'


def index():
    return tl.load_index()


# ---- the shipped queries -----------------------------------------------------------

def test_index_is_readable_and_typed():
    idx = index()
    assert idx["llm_d.pd_proxy.true_ttft_ms"] == ("double", {"request", "decode"})
    assert idx["http.response.status_code"][0] == "int"
    assert idx["llm_d.pd_proxy.disaggregation_enabled"][0] == "bool"
    assert idx["service.name"] == ("string", {"resource"})
    for a in ("gen_ai.request.stream", "llm_d.pd_proxy.decode.streaming",
              "llm_d.pd_proxy.first_token_observed", "llm_d.pd_proxy.assembled"):
        assert idx[a][0] == "bool", a
    assert idx["llm_d.pd_proxy.passthrough_reason"][0] == "string"
    every_ms = [a for a in idx if a.endswith("_ms")]
    assert len(every_ms) == 8
    assert all(idx[a][0] == "double" for a in every_ms), "every _ms value is a double"


def test_shipped_queries_are_found():
    found = tl.shipped_queries()
    files = {w.split(" ")[0] for w, _ in found}
    assert os.path.join("docs", "traceql.md") in files
    assert any(f.endswith("pd-coordinator-metrics.json") for f in files)
    assert len(found) >= 30, "only %d queries found" % len(found)


def test_every_shipped_query_passes():
    idx = index()
    bad = []
    for where, q in tl.shipped_queries():
        for p in tl.lint(q, idx):
            bad.append("%s: %s\n    %s" % (where, p, q))
    assert not bad, "TraceQL problems:\n" + "\n".join(bad)


def test_published_dashboard_queries_pass():
    """The published dashboard description's queries (kept unchanged in
    seed_queries.traceql) are right for our attribute types and spans."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed_queries.traceql")
    with open(path, encoding="utf-8") as f:
        qs = [line.strip() for line in f if line.strip()]
    assert len(qs) == 12
    idx = index()
    bad = ["%s: %s" % (q, p) for q in qs for p in tl.lint(q, idx)]
    assert not bad, "\n".join(bad)


def test_no_query_hides_in_an_untagged_block():
    bad = []
    for d, _, files in os.walk(DOCS):
        for n in files:
            if n.endswith(".md"):
                with open(os.path.join(d, n), encoding="utf-8") as f:
                    for q in tl.untagged_traceql_blocks(f.read()):
                        bad.append("%s: %s" % (n, q))
    assert not bad, "TraceQL outside ```traceql blocks (not checked): " + "; ".join(bad)


def test_dashboard_shape():
    with open(DASHBOARD, encoding="utf-8") as f:
        d = json.load(f)
    assert d["time"] == {"from": "now-1h", "to": "now"}
    assert d["refresh"] == "30s"
    names = [v["name"] for v in d["templating"]["list"]]
    assert "model" in names
    model = [v for v in d["templating"]["list"] if v["name"] == "model"][0]
    assert model["multi"] and model["includeAll"]
    panels = [p for p in d["panels"] if p["type"] != "row"]
    for p in panels:
        units = {p.get("fieldConfig", {}).get("defaults", {}).get("unit")}
        for o in p.get("fieldConfig", {}).get("overrides", []):
            units |= {x["value"] for x in o.get("properties", []) if x["id"] == "unit"}
        assert len(units) == 1 and None not in units, \
            "panel %r has units %s, want exactly one" % (p["title"], units)
    # Every query that reads our spans filters by the model variable.
    for where, q in tl.dashboard_queries(d):
        if "llm-d-pd-proxy" in q:
            assert 'span.gen_ai.request.model=~"$model"' in q, where


# ---- the rules fire on bad queries ---------------------------------------------------

def problems(q):
    return tl.lint(q, index())


def test_rule_integer_literal_on_double():
    p = problems(DECODE + " && span.llm_d.pd_proxy.kv_transfer_overhead_ms > 10}")
    assert any("integer literal compared with a double" in x for x in p), p
    p = problems("{ 500 < .llm_d.pd_proxy.true_ttft_ms }")
    assert any("integer literal compared with a double" in x for x in p), p
    assert not problems(DECODE + " && span.llm_d.pd_proxy.kv_transfer_overhead_ms > 10.0}")


def test_rule_float_literal_on_int_and_other_mismatches():
    assert any("float literal" in x for x in
               problems('{name="llm_d.pd_proxy.request" && span.http.response.status_code >= 500.0}'))
    assert not problems('{name="llm_d.pd_proxy.request" && span.http.response.status_code >= 500}')
    assert problems('{span.llm_d.pd_proxy.disaggregation_enabled="true"}')
    assert problems('{span.llm_d.pd_proxy.connector=true}')
    assert problems('{span.llm_d.pd_proxy.true_ttft_ms=~"1.*"}')


def test_rule_point_five():
    p = problems(DECODE + "} | quantile_over_time(span.llm_d.pd_proxy.true_ttft_ms, .5, 0.95)")
    assert any("number .5" in x for x in p), p
    assert problems(DECODE + "} | quantile_over_time(span.llm_d.pd_proxy.true_ttft_ms, 5.)")
    assert not problems(DECODE + "} | quantile_over_time(span.llm_d.pd_proxy.true_ttft_ms, 0.5, 0.95)")


def test_rule_unknown_attribute():
    p = problems(DECODE + "} | select(span.llm_d.pd_proxy.coordinator_overhead_ms)")
    assert any("no such attribute" in x for x in p), p
    assert problems('{resource.service.nam="llm-d-pd-proxy"}')
    assert problems('{.llm_d.pd_proxy.ttft_ms > 1.0}')
    # Known attributes in the wrong place.
    assert problems('{span.service.name="llm-d-pd-proxy"}')
    assert problems('{resource.llm_d.pd_proxy.connector="nixlv2"}')
    assert problems('{name="llm_d.pd_proxy.prefill" && span.llm_d.pd_proxy.true_ttft_ms > 1.0}')
    assert problems(DECODE + " && span.llm_d.pd_proxy.concurrent_pd=false}")
    assert problems(DECODE + "} | avg_over_time(span.llm_d.pd_proxy.connector)")


def test_rule_names_and_syntax():
    assert problems('{name="llm_d.pd_proxy.prefil"}')
    assert problems('{resource.service.name="pd-proxy"}')
    assert problems('{name="llm_d.pd_proxy.request"')
    assert problems(DECODE + "} | frobnicate(span.llm_d.pd_proxy.true_ttft_ms)")
    assert problems(DECODE + " && bogus}")


def test_good_queries_pass():
    for q in [
        DECODE + "} | select(span.llm_d.pd_proxy.true_ttft_ms)",
        DECODE + "} | by(span.llm_d.pd_proxy.connector) | rate()",
        '{resource.service.name="vllm-decode" && name="llm_request"} | quantile_over_time(span.gen_ai.latency.time_to_first_token, 0.5)',
        '{span.llm_d.pd_proxy.disaggregation_enabled=true && span.gen_ai.request.model=~"$model"}',
        '{name="llm_d.pd_proxy.request"} >> {resource.service.name="vllm-decode" && name="llm_request"}',
        '{name="llm_d.pd_proxy.request" && status=error && duration > 2s}',
    ]:
        assert not problems(q), (q, problems(q))


def test_markdown_extraction():
    text = ("x\n```traceql\n// one\n{name=\"a\"}\n| select(span.b)\n\n# two\n"
            "{name=\"c\"}\n{name=\"d\"}\n```\n```json\n{\"a\": 1}\n```\n")
    assert tl.markdown_queries(text) == ['{name="a"} | select(span.b)',
                                         '{name="c"}', '{name="d"}']
    assert tl.untagged_traceql_blocks("```\n{name=\"x\"}\n```\n") == ['{name="x"}']


def main():
    tests = [(n, f) for n, f in sorted(globals().items())
             if n.startswith("test_") and callable(f)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print("PASS", name)
        except AssertionError as e:
            failed += 1
            print("FAIL", name + ":", e)
        except Exception as e:  # noqa: BLE001 - report and go on
            failed += 1
            print("ERROR", name + ":", repr(e))
    print("%d tests, %d failed" % (len(tests), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
