#!/usr/bin/env python3
"""A small TraceQL reader for checking the queries libpdtrace ships.

It does not implement TraceQL. It finds the parts a query's correctness
against our spans depends on:

- attribute references (`span.x`, `resource.x`, unscoped `.x`), with the
  spanset they appear in and the comparison (operator and literal) they
  take part in, if any;
- the span name and service each spanset filters on;
- the pipeline stages (`| select(...)`, `| by(...)`, aggregates) and the
  attributes they read;
- every number literal.

Attribute types come from the attribute index in docs/spans.md (a table
with the columns attribute | type | spans).

Used by tests/docs/test_traceql_lint.py (pure Python, no build needed) and
tests/integration/test_seed_queries.py (which evaluates queries over spans
the library exported).
"""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
SPANS_MD = os.path.join(DOCS, "spans.md")

TYPES = ("string", "int", "double", "bool")
NUMERIC = ("int", "double")
# Short names used in the index's spans column, and the span names they mean.
SPAN_NAMES = {
    "request": "llm_d.pd_proxy.request",
    "prefill": "llm_d.pd_proxy.prefill",
    "decode": "llm_d.pd_proxy.decode",
    "llm_request": "llm_request",
    # The example gateway and its endpoint picker (docs/gateway.md).
    "gateway": "gateway.request",
    "epp_scorer": "llm_d.epp.scorer.prefix_cache",
    "epp_pick": "llm_d.epp.profile_handler.pick",
}
SERVICES = {"llm-d-pd-proxy", "vllm-prefill", "vllm-decode",
            "gateway-api-inference-extension", "llm-d-inference-scheduler"}
COMPARE_OPS = ("=~", "!~", "!=", ">=", "<=", "=", ">", "<")
# Pipeline functions whose attribute argument must be a number.
NUMERIC_AGGREGATES = {"avg_over_time", "min_over_time", "max_over_time",
                      "sum_over_time", "quantile_over_time",
                      "histogram_over_time", "avg", "min", "max", "sum"}
INTRINSICS = {"name", "status", "kind", "duration", "statusMessage",
              "rootName", "rootServiceName", "traceDuration", "nestedSetLeft",
              "nestedSetRight", "nestedSetParent"}
FUNCTIONS = NUMERIC_AGGREGATES | {"select", "by", "rate", "count_over_time",
                                 "count", "coalesce", "compare", "topk",
                                 "bottomk"}
KEYWORDS = {"true", "false", "nil", "error", "ok", "unset", "server",
            "client", "internal", "producer", "consumer", "unspecified"}


class QueryError(ValueError):
    """A query this reader cannot take apart."""


# ---- the attribute index ---------------------------------------------------

def load_index(path=SPANS_MD):
    """{attribute: (type, {span short names})} from the "Attribute index"
    table of docs/spans.md. Raises ValueError when the table is missing
    or malformed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## Attribute index\n(.*?)(?=^## |\Z)", text,
                  flags=re.S | re.M)
    if not m:
        raise ValueError("%s has no '## Attribute index' section" % path)
    index = {}
    header_seen = False
    for line in m.group(1).splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:3] == ["attribute", "type", "spans"]:
            header_seen = True
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        if not header_seen or len(cells) < 3:
            raise ValueError("attribute index: unexpected row %r" % line)
        name = cells[0].strip("`")
        typ = cells[1]
        spans = {s.strip() for s in cells[2].split(",") if s.strip()}
        if typ not in TYPES:
            raise ValueError("attribute index: %s has unknown type %r" % (name, typ))
        unknown = spans - set(SPAN_NAMES) - {"resource"}
        if unknown:
            raise ValueError("attribute index: %s on unknown spans %s" % (name, sorted(unknown)))
        if name in index:
            raise ValueError("attribute index: %s listed twice" % name)
        index[name] = (typ, spans)
    if not index:
        raise ValueError("attribute index in %s is empty" % path)
    return index


# ---- finding queries ---------------------------------------------------------

def split_block(block):
    """Queries of one code block: comment lines (// or #) and blank lines
    separate queries; a line starting with | continues the previous one."""
    queries, cur = [], []
    for raw in block.splitlines():
        line = raw.strip()
        if not line or line.startswith("//") or line.startswith("#"):
            if cur:
                queries.append(" ".join(cur))
                cur = []
            continue
        if line.startswith("|") and cur:
            cur.append(line)
        else:
            if cur:
                queries.append(" ".join(cur))
            cur = [line]
    if cur:
        queries.append(" ".join(cur))
    return queries


FENCE = re.compile(r"^```([A-Za-z0-9_-]*)[^\n]*\n(.*?)^```", flags=re.S | re.M)


def markdown_queries(text):
    """Queries in ```traceql blocks of a markdown text."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang == "traceql":
            out += split_block(body)
    return out


def untagged_traceql_blocks(text):
    """Fenced blocks not tagged traceql that still hold a TraceQL query."""
    bad = []
    for lang, body in FENCE.findall(text):
        if lang == "traceql":
            continue
        for line in body.splitlines():
            s = line.strip()
            if re.match(r"^\{\s*(resource|span)?\.|^\{\s*name\s*=", s) and "}" in s:
                bad.append(s)
    return bad


def is_tempo(ds):
    if isinstance(ds, dict):
        return ds.get("type") == "tempo"
    return isinstance(ds, str) and "tempo" in ds.lower()


def dashboard_queries(dash):
    """(where, query) of every TraceQL query in a Grafana dashboard: panel
    targets with a query field, and Tempo template variables."""
    out = []

    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            q = t.get("query")
            if isinstance(q, str) and q.strip():
                out.append(("panel %r target %s" % (p.get("title"), t.get("refId")), q))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query" or not is_tempo(v.get("datasource")):
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and q.strip():
            out.append(("variable %r" % v.get("name"), q))
    return out


def shipped_queries(docs=DOCS):
    """(file:where, query) of every TraceQL query under docs/."""
    out = []
    for d, _, files in os.walk(docs):
        for n in sorted(files):
            path = os.path.join(d, n)
            rel = os.path.relpath(path, os.path.dirname(docs))
            if n.endswith(".md"):
                with open(path, encoding="utf-8") as f:
                    out += [(rel, q) for q in markdown_queries(f.read())]
            elif n.endswith(".json") and os.path.basename(d) == "dashboards":
                with open(path, encoding="utf-8") as f:
                    dash = json.load(f)
                out += [("%s %s" % (rel, w), q) for w, q in dashboard_queries(dash)]
    return out


# ---- taking a query apart ------------------------------------------------------

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<duration>\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)\b)
  | (?P<number>\d+\.\d*|\.\d+|\d+)
  | (?P<attr>(?:span|resource|event|link|instrumentation)\.[A-Za-z0-9_.\-]*[A-Za-z0-9_]
              |(?<![\w.])\.[A-Za-z_][A-Za-z0-9_.\-]*[A-Za-z0-9_])
  | (?P<colon>(?:span|trace|event|link|instrumentation):[A-Za-z]+)
  | (?P<var>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
  | (?P<op>=~|!~|!=|>=|<=|&&|\|\||>>|<<|!>>|!<<|[=<>!~|{}(),*/+\-%^])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.X)


def tokenize(q):
    toks, pos = [], 0
    while pos < len(q):
        m = TOKEN.match(q, pos)
        if not m:
            raise QueryError("cannot read %r at offset %d" % (q[pos:pos + 20], pos))
        kind = m.lastgroup
        if kind != "ws":
            toks.append((kind, m.group()))
        pos = m.end()
    return toks


class Ref:
    """One attribute reference."""

    def __init__(self, scope, name, spanset, where):
        self.scope = scope          # "span", "resource" or "" (unscoped)
        self.name = name
        self.spanset = spanset      # index of the spanset filter, or None
        self.where = where          # "filter", "select", "by", or a function
        self.op = None
        self.literal = None         # (kind, text) of the compared literal

    def __repr__(self):
        s = (self.scope + "." if self.scope else ".") + self.name
        if self.op:
            s += " %s %s" % (self.op, self.literal[1])
        return s


class Query:
    def __init__(self, text):
        self.text = text
        self.tokens = tokenize(text)
        self.refs = []
        self.spansets = []          # [{"name": .., "service": .., "conds": [..]}]
        self.numbers = [t for k, t in self.tokens if k == "number"]
        self.stages = []            # function names after |
        self._parse()

    def _parse(self):
        toks = self.tokens
        depth_brace = 0
        spanset = None
        func_stack = []
        i = 0
        while i < len(toks):
            kind, text = toks[i]
            if kind == "op" and text == "{":
                if depth_brace:
                    raise QueryError("nested { in " + self.text)
                depth_brace = 1
                spanset = len(self.spansets)
                self.spansets.append({"name": None, "service": None, "conds": []})
            elif kind == "op" and text == "}":
                if not depth_brace:
                    raise QueryError("unbalanced } in " + self.text)
                depth_brace = 0
            elif kind == "op" and text == "(":
                prev = toks[i - 1] if i else ("", "")
                func_stack.append(prev[1] if prev[0] == "ident" else "(")
                if prev[0] == "ident" and not depth_brace:
                    self.stages.append(prev[1])
            elif kind == "op" and text == ")":
                if not func_stack:
                    raise QueryError("unbalanced ) in " + self.text)
                func_stack.pop()
            elif kind == "attr":
                if text.startswith("."):
                    scope, name = "", text[1:]
                else:
                    scope, name = text.split(".", 1)
                funcs = [f for f in func_stack if f != "("]
                where = "filter" if depth_brace else (funcs[-1] if funcs else "pipeline")
                ref = Ref(scope, name, spanset if depth_brace else None, where)
                lit = self._comparison(i)
                if lit:
                    ref.op, ref.literal = lit
                self.refs.append(ref)
                if depth_brace and ref.op == "=" and ref.literal[0] == "string":
                    val = ref.literal[1][1:-1]
                    if scope == "resource" and name == "service.name":
                        self.spansets[spanset]["service"] = val
                if depth_brace:
                    self.spansets[spanset]["conds"].append(ref)
            elif kind == "ident" and text == "name" and depth_brace:
                lit = self._comparison(i)
                if lit and lit[0] == "=" and lit[1][0] == "string":
                    self.spansets[spanset]["name"] = lit[1][1][1:-1]
            i += 1
        if depth_brace or func_stack:
            raise QueryError("unbalanced brackets in " + self.text)
        if not self.spansets:
            raise QueryError("no spanset filter {...} in " + self.text)

    def _comparison(self, i):
        """(op, (kind, text)) when token i is compared with a literal."""
        toks = self.tokens
        lit_kinds = ("string", "number", "duration", "var")
        if i + 2 < len(toks) and toks[i + 1][0] == "op" and toks[i + 1][1] in COMPARE_OPS:
            k, t = toks[i + 2]
            if k in lit_kinds or (k == "ident" and t in ("true", "false", "nil")):
                return toks[i + 1][1], (k if k != "ident" else "bool", t)
            if k == "op" and t == "-" and i + 3 < len(toks) and toks[i + 3][0] == "number":
                return toks[i + 1][1], ("number", "-" + toks[i + 3][1])
        if i >= 2 and toks[i - 1][0] == "op" and toks[i - 1][1] in COMPARE_OPS:
            k, t = toks[i - 2]
            if k in lit_kinds or (k == "ident" and t in ("true", "false")):
                flip = {">": "<", "<": ">", ">=": "<=", "<=": ">="}
                op = toks[i - 1][1]
                return flip.get(op, op), (k if k != "ident" else "bool", t)
        return None


def literal_type(lit):
    kind, text = lit
    if kind == "string":
        return "string"
    if kind == "bool":
        return "bool" if text in ("true", "false") else "nil"
    if kind == "number":
        return "double" if "." in text else "int"
    if kind == "duration":
        return "duration"
    return "var"


# ---- the rules -------------------------------------------------------------------

def lint(q, index):
    """Problems (strings) with one query; [] when it is fine."""
    try:
        query = q if isinstance(q, Query) else Query(q)
    except QueryError as e:
        return ["unreadable: %s" % e]
    bad = []
    for n in query.numbers:
        if n.startswith(".") or n.endswith("."):
            bad.append("number %s: write it with digits on both sides of "
                       "the point (0.5, 5.0)" % n)
    for kind, text in query.tokens:
        if kind == "ident" and text not in INTRINSICS | KEYWORDS | FUNCTIONS:
            bad.append("unknown word %s" % text)
    for ss in query.spansets:
        if ss["name"] is not None and ss["name"] not in SPAN_NAMES.values():
            bad.append("span name %r is not one we emit" % ss["name"])
        if ss["service"] is not None and ss["service"] not in SERVICES:
            bad.append("service %r is not one of %s" % (ss["service"], sorted(SERVICES)))
    for ref in query.refs:
        entry = index.get(ref.name)
        if entry is None:
            bad.append("%r: no such attribute in docs/spans.md" % ref)
            continue
        typ, spans = entry
        if ref.scope == "resource" and "resource" not in spans:
            bad.append("%r: not a resource attribute" % ref)
        if ref.scope == "span" and spans == {"resource"}:
            bad.append("%r: a resource attribute, write resource.%s" % (ref, ref.name))
        # The attribute must be on the span the spanset selects.
        if ref.spanset is not None:
            sname = query.spansets[ref.spanset]["name"]
        elif len(query.spansets) == 1:
            sname = query.spansets[0]["name"]
        else:
            sname = None
        if sname and "resource" not in spans:
            short = [k for k, v in SPAN_NAMES.items() if v == sname]
            if short and short[0] not in spans:
                bad.append("%r: not on span %s (only on %s)" % (ref, sname, ", ".join(sorted(spans))))
        if ref.where in NUMERIC_AGGREGATES and typ not in NUMERIC:
            bad.append("%r: %s() needs a number, the attribute is %s" % (ref, ref.where, typ))
        if ref.op is None:
            continue
        lt = literal_type(ref.literal)
        if lt in ("var", "nil"):
            continue
        if ref.op in ("=~", "!~"):
            if typ != "string":
                bad.append("%r: regex match on a %s attribute" % (ref, typ))
            elif lt != "string":
                bad.append("%r: regex match needs a string" % ref)
            continue
        if typ == "double" and lt == "int":
            bad.append("%r: integer literal compared with a double attribute; "
                       "Tempo matches nothing, write %s.0" % (ref, ref.literal[1]))
        elif typ == "int" and lt == "double":
            bad.append("%r: float literal compared with an int attribute" % ref)
        elif (typ in NUMERIC) != (lt in NUMERIC) or (typ not in NUMERIC and typ != lt):
            bad.append("%r: %s literal compared with a %s attribute" % (ref, lt, typ))
    return bad
