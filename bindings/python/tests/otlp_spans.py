"""Reads spans back from an OTLP JSON-lines file (the console exporter's
output) for the binding tests."""
import json
import os
from typing import Any, Dict, List


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
