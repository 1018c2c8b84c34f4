"""Shared fixtures: tracers that export OTLP JSON lines to a temporary file,
and a reader that turns that file back into spans."""
import pytest

import pdtrace
from otlp_spans import read_spans


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
