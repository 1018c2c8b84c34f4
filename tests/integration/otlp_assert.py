"""Assertions on spans recorded by sink.py, following docs/spans.md.

Typical use::

    spans = load_spans(path)
    reqs = find_pd_requests(spans)
    for r in reqs:
        check_pd_request(r, traceparent=tp, mode="sequential",
                         breakdown=printed["breakdown"])

Every check raises AssertionError with a message naming the span and the
attribute at fault.
"""

import json
import math
import os
from collections import defaultdict

PREFIX = "llm_d.pd_proxy."
REQUEST_SPAN = PREFIX + "request"
PREFILL_SPAN = PREFIX + "prefill"
DECODE_SPAN = PREFIX + "decode"

KIND_INTERNAL = 1
KIND_SERVER = 2
KIND_CLIENT = 3

STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2

# Summary attributes (names without the prefix), all doubles in milliseconds.
DURATIONS = (
    "queue_ms",
    "prefill_duration_ms",
    "kv_transfer_overhead_ms",
    "decode_ttft_ms",
    "true_ttft_ms",
    "decode_duration_ms",
    "total_duration_ms",
    "tpot_ms",
)
# Other attributes that, when present on both, must agree between the request
# span and the decode span.
SHARED = ("request_id", "connector", "concurrent_pd", "disaggregation_enabled")

DEFAULT_SERVICE_NAME = "llm-d-pd-proxy"
SCOPE_NAME = "libpdtrace"

# Tolerances, in milliseconds.
FORMULA_TOL_MS = 1e-6   # between attributes computed from the same marks
SPAN_TOL_MS = 0.002     # between attributes and span start/end timestamps
BREAKDOWN_TOL_MS = 1e-6  # between printed and exported values


# --------------------------------------------------------------------------
# Loading and navigation


def load_spans(path):
    """Spans (dicts) from a sink output file; [] if it does not exist yet."""
    if not os.path.exists(path):
        return []
    spans = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                spans.append(json.loads(line))
    return spans


def attr(span, key, default=None):
    """Plain value of the span's attribute key."""
    tv = span["attributes"].get(key)
    return default if tv is None else tv["value"]


def attr_type(span, key):
    tv = span["attributes"].get(key)
    return None if tv is None else tv["type"]


def pd(span, name, default=None):
    """Plain value of the prefixed attribute llm_d.pd_proxy.<name>."""
    return attr(span, PREFIX + name, default)


def has_pd(span, name):
    return (PREFIX + name) in span["attributes"]


def resource_attr(span, key, default=None):
    tv = span["resource"]["attributes"].get(key)
    return default if tv is None else tv["value"]


def span_label(span):
    rid = pd(span, "request_id")
    return "%s[%s%s]" % (span["name"], span["span_id"], " request_id=%s" % rid if rid is not None else "")


def duration_ms(span):
    return (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e6


def gap_ms(later_ns, earlier_ns):
    return (later_ns - earlier_ns) / 1e6


def group_by_trace(spans):
    out = defaultdict(list)
    for s in spans:
        out[s["trace_id"]].append(s)
    return dict(out)


def children_index(spans):
    """(trace_id, parent_span_id) -> [child spans]."""
    idx = defaultdict(list)
    for s in spans:
        idx[(s["trace_id"], s["parent_span_id"])].append(s)
    return idx


def build_tree(spans):
    """Nested {"span": s, "children": [...]} for each root of each trace.

    A root is a span whose parent is absent or not among the spans given
    (e.g. a request span whose parent is the caller's inbound span).
    """
    ids = {(s["trace_id"], s["span_id"]) for s in spans}
    idx = children_index(spans)

    def node(s):
        kids = sorted(idx.get((s["trace_id"], s["span_id"]), []), key=lambda c: c["start_time_unix_nano"])
        return {"span": s, "children": [node(c) for c in kids]}

    roots = [s for s in spans if not s["parent_span_id"] or (s["trace_id"], s["parent_span_id"]) not in ids]
    return [node(s) for s in sorted(roots, key=lambda s: s["start_time_unix_nano"])]


def check_unique_span_ids(spans):
    seen = {}
    for s in spans:
        key = (s["trace_id"], s["span_id"])
        assert key not in seen, "span id %s appears twice (%s and %s)" % (s["span_id"], seen[key]["name"], s["name"])
        seen[key] = s
    for s in spans:
        assert len(s["trace_id"]) == 32 and s["trace_id"] != "0" * 32, "%s: bad trace id %r" % (span_label(s), s["trace_id"])
        assert len(s["span_id"]) == 16 and s["span_id"] != "0" * 16, "%s: bad span id %r" % (span_label(s), s["span_id"])
        assert s["parent_span_id"] == "" or len(s["parent_span_id"]) == 16, "%s: bad parent id" % span_label(s)


class PDRequest:
    """One P/D request: its request span with the prefill and decode children."""

    def __init__(self, request, prefills, decodes, others):
        self.request = request
        self.prefills = sorted(prefills, key=lambda s: s["start_time_unix_nano"])
        self.decodes = decodes
        self.others = others

    @property
    def request_id(self):
        return pd(self.request, "request_id")

    @property
    def trace_id(self):
        return self.request["trace_id"]

    @property
    def decode(self):
        assert len(self.decodes) == 1, "%s: expected exactly one decode child, found %d" % (
            span_label(self.request), len(self.decodes))
        return self.decodes[0]

    @property
    def prefill(self):
        """The final prefill attempt, or None."""
        return self.prefills[-1] if self.prefills else None

    def __repr__(self):
        return "PDRequest(%s, prefills=%d, decodes=%d)" % (span_label(self.request), len(self.prefills), len(self.decodes))


def find_pd_requests(spans):
    """A PDRequest for every request span, in start-time order.

    Requests may share a trace (e.g. one inbound traceparent for several
    requests), so children are found by parent span id, not by trace.
    """
    idx = children_index(spans)
    out = []
    for s in spans:
        if s["name"] != REQUEST_SPAN:
            continue
        kids = idx.get((s["trace_id"], s["span_id"]), [])
        out.append(PDRequest(
            s,
            [k for k in kids if k["name"] == PREFILL_SPAN],
            [k for k in kids if k["name"] == DECODE_SPAN],
            [k for k in kids if k["name"] not in (PREFILL_SPAN, DECODE_SPAN)],
        ))
    out.sort(key=lambda r: r.request["start_time_unix_nano"])
    return out


def by_request_id(reqs):
    """request_id -> PDRequest; fails on a missing or duplicate request_id."""
    out = {}
    for r in reqs:
        rid = r.request_id
        assert rid is not None, "%s has no %srequest_id" % (span_label(r.request), PREFIX)
        assert rid not in out, "request_id %r exported on more than one request span" % rid
        out[rid] = r
    return out


def parse_traceparent(tp):
    parts = tp.strip().split("-")
    assert len(parts) >= 4, "bad traceparent %r" % tp
    return parts[1].lower(), parts[2].lower()


# --------------------------------------------------------------------------
# docs/spans.md: span names, kinds, tree


def check_structure(r, traceparent=None, mode=None):
    req = r.request
    lab = span_label(req)
    assert req["kind"] == KIND_SERVER, "%s: kind %s, want SERVER" % (lab, req["kind_name"])
    if traceparent:
        tid, pid = parse_traceparent(traceparent)
        assert req["trace_id"] == tid, "%s: trace id %s, want the inbound %s" % (lab, req["trace_id"], tid)
        assert req["parent_span_id"] == pid, "%s: parent %r, want the inbound span %s" % (lab, req["parent_span_id"], pid)
    elif traceparent is not None:
        # traceparent == "": no inbound context, the request span is a root.
        assert req["parent_span_id"] == "", "%s: has parent %s without an inbound traceparent" % (lab, req["parent_span_id"])

    dec = r.decode
    assert dec["kind"] == KIND_CLIENT, "%s: kind %s, want CLIENT" % (span_label(dec), dec["kind_name"])
    for p in r.prefills:
        assert p["kind"] == KIND_CLIENT, "%s: kind %s, want CLIENT" % (span_label(p), p["kind_name"])
    for c in r.prefills + r.decodes:
        assert c["trace_id"] == req["trace_id"], "%s: trace id differs from its request span" % span_label(c)
        assert c["parent_span_id"] == req["span_id"], "%s: not a child of %s" % (span_label(c), lab)

    if mode == "decode-only":
        assert not r.prefills, "%s: decode-only request has %d prefill span(s)" % (lab, len(r.prefills))
    elif mode in ("sequential", "concurrent"):
        assert r.prefills, "%s: %s request has no prefill span" % (lab, mode)

    # Span.flags bits 8-9 (CONTEXT_HAS_IS_REMOTE, CONTEXT_IS_REMOTE): when
    # present, the parent is remote only for the request span with an
    # inbound traceparent.
    for s, remote in [(req, bool(traceparent))] + [(c, False) for c in r.prefills + r.decodes]:
        if s["flags"] & 0x100 and (s is not req or traceparent is not None):
            assert bool(s["flags"] & 0x200) == remote, "%s: flags 0x%x, parent is%s remote" % (
                span_label(s), s["flags"], "" if remote else " not")

    # Children lie within the request span.
    for c in r.prefills + r.decodes:
        assert c["start_time_unix_nano"] >= req["start_time_unix_nano"], "%s starts before its request span" % span_label(c)
        assert c["end_time_unix_nano"] <= req["end_time_unix_nano"] + int(SPAN_TOL_MS * 1e6), \
            "%s ends after its request span" % span_label(c)
    for s in [req] + r.prefills + r.decodes:
        assert s["end_time_unix_nano"] >= s["start_time_unix_nano"], "%s ends before it starts" % span_label(s)
        assert s["start_time_unix_nano"] > 0, "%s has no start time" % span_label(s)


# --------------------------------------------------------------------------
# docs/spans.md: timing attributes and formulas


def _close(a, b, tol):
    return abs(a - b) <= tol


def check_duration_types(span):
    for name in DURATIONS:
        key = PREFIX + name
        if key not in span["attributes"]:
            continue
        t = span["attributes"][key]["type"]
        v = span["attributes"][key]["value"]
        assert t == "double", "%s: %s is %s, want double" % (span_label(span), key, t)
        assert isinstance(v, float) and math.isfinite(v), "%s: %s = %r is not finite" % (span_label(span), key, v)
        assert v >= 0.0, "%s: %s = %r is negative" % (span_label(span), key, v)


def durations_of(span):
    """{name: value} of the summary attributes present on span."""
    return {n: pd(span, n) for n in DURATIONS if has_pd(span, n)}


def check_mirrored(r):
    """Summary attributes on the request span are mirrored onto decode."""
    req, dec = r.request, r.decode
    for name in DURATIONS:
        key = PREFIX + name
        a = req["attributes"].get(key)
        b = dec["attributes"].get(key)
        assert (a is None) == (b is None), "%s: present on %s but not on %s" % (
            key, span_label(req if a is not None else dec), span_label(dec if a is not None else req))
        if a is not None:
            assert a == b, "%s differs: request %r, decode %r" % (key, a, b)
    for name in SHARED:
        key = PREFIX + name
        a = req["attributes"].get(key)
        b = dec["attributes"].get(key)
        if a is not None and b is not None:
            assert a == b, "%s differs: request %r, decode %r" % (key, a, b)


def check_formulas(r, mode=None):
    """Recompute every formula of docs/spans.md from what is present.

    Marks are recovered from span timestamps: A = request start, Ps/Pe = the
    final prefill attempt's start/end, Ds = decode start, E = decode end and
    request end. F and L are not span boundaries; F is checked through
    true_ttft - decode_ttft == Ds - A, L through L <= E.
    """
    req, dec = r.request, r.decode
    pre = r.prefill
    for s in [req, dec] + r.prefills:
        check_duration_types(s)
    d = durations_of(req)
    lab = span_label(req)

    def need(*names):
        for n in names:
            assert n in d, "%s: %s%s missing" % (lab, PREFIX, n)

    def absent(*names):
        for n in names:
            assert n not in d, "%s: %s%s = %r must be omitted (%s)" % (lab, PREFIX, n, d[n], mode)

    # Mode-specific presence.
    concurrent = pd(req, "concurrent_pd", False)
    if mode == "sequential":
        need("queue_ms", "prefill_duration_ms", "kv_transfer_overhead_ms", "decode_ttft_ms",
             "true_ttft_ms", "decode_duration_ms", "total_duration_ms")
        assert not concurrent, "%s: concurrent_pd set on a sequential request" % lab
        if has_pd(req, "disaggregation_enabled"):
            assert pd(req, "disaggregation_enabled") is True, "%s: disaggregation_enabled is not true" % lab
    elif mode == "concurrent":
        need("queue_ms", "prefill_duration_ms", "decode_ttft_ms", "true_ttft_ms",
             "decode_duration_ms", "total_duration_ms")
        assert attr_type(req, PREFIX + "concurrent_pd") == "bool" and concurrent is True, \
            "%s: concurrent_pd must be bool true" % lab
        absent("kv_transfer_overhead_ms")
    elif mode == "decode-only":
        need("decode_ttft_ms", "true_ttft_ms", "decode_duration_ms", "total_duration_ms")
        absent("queue_ms", "prefill_duration_ms", "kv_transfer_overhead_ms")
        assert attr_type(req, PREFIX + "disaggregation_enabled") == "bool" and \
            pd(req, "disaggregation_enabled") is False, "%s: disaggregation_enabled must be bool false" % lab
        reason = pd(req, "reason")
        assert isinstance(reason, str) and reason, "%s: decode-only request without a reason" % lab
    if concurrent:
        absent("kv_transfer_overhead_ms")

    # Attribute-only formulas.
    parts = ("queue_ms", "prefill_duration_ms", "kv_transfer_overhead_ms", "decode_ttft_ms")
    if "true_ttft_ms" in d and all(p in d for p in parts):
        s = sum(d[p] for p in parts)
        assert _close(d["true_ttft_ms"], s, FORMULA_TOL_MS), \
            "%s: true_ttft_ms %r != queue + prefill + kv_transfer + decode_ttft = %r" % (lab, d["true_ttft_ms"], s)
    if "true_ttft_ms" in d and "total_duration_ms" in d:
        assert d["true_ttft_ms"] <= d["total_duration_ms"] + FORMULA_TOL_MS, "%s: true_ttft > total_duration" % lab
    if "decode_ttft_ms" in d and "decode_duration_ms" in d:
        assert d["decode_ttft_ms"] <= d["decode_duration_ms"] + FORMULA_TOL_MS, "%s: decode_ttft > decode_duration" % lab
    if "decode_duration_ms" in d and "total_duration_ms" in d:
        assert d["decode_duration_ms"] <= d["total_duration_ms"] + FORMULA_TOL_MS, "%s: decode_duration > total_duration" % lab

    out_tokens = attr(req, "gen_ai.usage.output_tokens")
    if out_tokens is None:
        out_tokens = attr(dec, "gen_ai.usage.output_tokens")
    if "tpot_ms" in d:
        assert out_tokens is not None and out_tokens >= 2, \
            "%s: tpot_ms present with output_tokens %r (needs >= 2)" % (lab, out_tokens)
        if "decode_duration_ms" in d and "decode_ttft_ms" in d:
            # L - F = tpot * (n - 1) and L <= E, so it fits in E - F.
            lf = d["tpot_ms"] * (out_tokens - 1)
            assert lf <= d["decode_duration_ms"] - d["decode_ttft_ms"] + SPAN_TOL_MS, \
                "%s: tpot_ms * (output_tokens - 1) = %r exceeds E - F" % (lab, lf)
    elif out_tokens is not None and out_tokens >= 2 and mode is not None:
        raise AssertionError("%s: tpot_ms missing with output_tokens = %r" % (lab, out_tokens))

    # Formulas against span timestamps.
    A = req["start_time_unix_nano"]
    Ds = dec["start_time_unix_nano"]
    E = dec["end_time_unix_nano"]

    def near(name, want_ms, what):
        if name in d:
            assert _close(d[name], want_ms, SPAN_TOL_MS), \
                "%s: %s = %r, but %s = %r ms" % (lab, name, d[name], what, want_ms)

    near("total_duration_ms", duration_ms(req), "request span duration")
    near("decode_duration_ms", duration_ms(dec), "decode span duration")
    assert _close(gap_ms(req["end_time_unix_nano"], E), 0.0, SPAN_TOL_MS), \
        "%s: request span ends %r ms away from the decode span's end (E)" % (lab, gap_ms(req["end_time_unix_nano"], E))
    if pre is not None:
        Ps, Pe = pre["start_time_unix_nano"], pre["end_time_unix_nano"]
        near("queue_ms", gap_ms(Ps, A), "prefill start - request start")
        near("prefill_duration_ms", duration_ms(pre), "prefill span duration")
        near("kv_transfer_overhead_ms", gap_ms(Ds, Pe), "decode start - prefill end")
        if not concurrent and "kv_transfer_overhead_ms" in d:
            assert Ds >= Pe, "%s: sequential decode starts before prefill ends" % lab
    if "true_ttft_ms" in d and "decode_ttft_ms" in d:
        # F - A - (F - Ds) = Ds - A
        near_val = d["true_ttft_ms"] - d["decode_ttft_ms"]
        want = gap_ms(Ds, A)
        assert _close(near_val, want, SPAN_TOL_MS), \
            "%s: true_ttft - decode_ttft = %r, but decode start - request start = %r ms" % (lab, near_val, want)


# --------------------------------------------------------------------------
# Resource and scope


def check_resource(span, service_name=DEFAULT_SERVICE_NAME, pid=None, host_name=None):
    lab = span_label(span)
    res = span["resource"]["attributes"]

    def typed(key, t):
        assert key in res, "%s: resource attribute %s missing" % (lab, key)
        assert res[key]["type"] == t, "%s: resource %s is %s, want %s" % (lab, key, res[key]["type"], t)
        return res[key]["value"]

    if service_name is not None:
        assert typed("service.name", "string") == service_name, \
            "%s: service.name %r, want %r" % (lab, res["service.name"]["value"], service_name)
    assert typed("telemetry.sdk.name", "string") == "libpdtrace", "%s: telemetry.sdk.name is not libpdtrace" % lab
    assert typed("telemetry.sdk.language", "string"), "%s: empty telemetry.sdk.language" % lab
    assert typed("telemetry.sdk.version", "string"), "%s: empty telemetry.sdk.version" % lab
    p = typed("process.pid", "int")
    assert p > 0, "%s: process.pid %r" % (lab, p)
    if pid is not None:
        assert p == pid, "%s: process.pid %r, want %r" % (lab, p, pid)
    h = typed("host.name", "string")
    assert h, "%s: empty host.name" % lab
    if host_name is not None:
        assert h == host_name, "%s: host.name %r, want %r" % (lab, h, host_name)


def check_scope(span, version=None):
    lab = span_label(span)
    assert span["scope"]["name"] == SCOPE_NAME, "%s: scope name %r, want %r" % (lab, span["scope"]["name"], SCOPE_NAME)
    assert span["scope"]["version"], "%s: empty scope version" % lab
    if version is not None:
        assert span["scope"]["version"] == version, "%s: scope version %r, want %r" % (lab, span["scope"]["version"], version)


# --------------------------------------------------------------------------
# Printed breakdown vs exported attributes


def check_breakdown(r, breakdown, tol=BREAKDOWN_TOL_MS):
    """The breakdown a program printed equals what was exported.

    Keys absent from the printed breakdown must be absent on the span too.
    """
    got = durations_of(r.request)
    lab = span_label(r.request)
    for k, v in breakdown.items():
        assert k in got, "%s: printed %s = %r but not exported" % (lab, k, v)
        assert _close(got[k], float(v), tol), "%s: %s exported %r, printed %r" % (lab, k, got[k], v)
    for k in got:
        if k in DURATIONS:
            assert k in breakdown, "%s: %s exported (%r) but not printed" % (lab, k, got[k])


# --------------------------------------------------------------------------
# Everything


def check_pd_request(r, traceparent=None, mode=None, breakdown=None, service_name=DEFAULT_SERVICE_NAME,
                     pid=None, host_name=None, scope_version=None):
    check_structure(r, traceparent=traceparent, mode=mode)
    check_formulas(r, mode=mode)
    check_mirrored(r)
    for s in [r.request] + r.prefills + r.decodes:
        check_resource(s, service_name=service_name, pid=pid, host_name=host_name)
        check_scope(s, version=scope_version)
        assert s["status"]["code"] in (STATUS_UNSET, STATUS_OK, STATUS_ERROR), "%s: bad status code" % span_label(s)
    if breakdown is not None:
        check_breakdown(r, breakdown)


def assert_no_unknown_fields(msg, path="ExportTraceServiceRequest"):
    """Fails if any message in the tree kept fields its schema does not know,
    i.e. the encoder used a field number or wire type the schema lacks."""
    from google.protobuf import unknown_fields  # protobuf >= 4.22

    n = len(unknown_fields.UnknownFieldSet(msg))
    assert n == 0, "%s: %d unknown field(s)" % (path, n)
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        if repeated:
            for i, m in enumerate(value):
                assert_no_unknown_fields(m, "%s.%s[%d]" % (path, fd.name, i))
        else:
            assert_no_unknown_fields(value, "%s.%s" % (path, fd.name))
