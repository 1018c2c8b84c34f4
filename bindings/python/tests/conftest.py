"""Shared fixtures: tracers that export OTLP JSON lines to a temporary file,
and a reader that turns that file back into spans."""
import json
import os
from typing import Any, Dict, List

import pytest

import pdtrace


def _value(v: Dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return v["boolValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    return v


def read_spans(path: str) -> List[Dict[str, Any]]:
    """Every span in a console-exporter file, flattened: name, ids, kind,
    status, attrs (dict), events, resource (dict)."""
    spans = []
    if not os.path.exists(path):
        return spans
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            doc = json.loads(line)
            for rs in doc.get("resourceSpans", []):
                res = {a["key"]: _value(a["value"])
                       for a in rs.get("resource", {}).get("attributes", [])}
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        spans.append({
                            "name": s["name"],
                            "trace_id": s["traceId"],
                            "span_id": s["spanId"],
                            "parent": s.get("parentSpanId", ""),
                            "kind": s.get("kind"),
                            "start": int(s["startTimeUnixNano"]),
                            "end": int(s["endTimeUnixNano"]),
                            "status": s.get("status", {}),
                            "trace_state": s.get("traceState", ""),
                            "attrs": {a["key"]: _value(a["value"])
                                      for a in s.get("attributes", [])},
                            "events": [{
                                "name": e["name"],
                                "attrs": {a["key"]: _value(a["value"])
                                          for a in e.get("attributes", [])},
                            } for e in s.get("events", [])],
                            "resource": res,
                            "scope": ss.get("scope", {}),
                        })
    return spans


@pytest.fixture
def out_path(tmp_path):
    return str(tmp_path / "spans.jsonl")


@pytest.fixture
def make_tracer(out_path):
    """Opens console tracers writing to out_path (environment ignored unless
    asked); closes them all at teardown."""
    made = []

    def make(**kw):
        kw.setdefault("exporter", "console")
        kw.setdefault("console_path", out_path)
        kw.setdefault("ignore_environment", True)
        kw.setdefault("schedule_delay_ms", 50)
        t = pdtrace.Tracer(**kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close(5)


@pytest.fixture
def tracer(make_tracer):
    return make_tracer()


@pytest.fixture
def spans(out_path):
    """Call after flush/close: the spans exported so far."""
    return lambda: read_spans(out_path)
