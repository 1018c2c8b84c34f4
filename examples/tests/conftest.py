"""Fixtures for the end-to-end tests (see e2e_stack.py)."""
import pytest

from e2e_stack import Stack


@pytest.fixture
def make_stack(tmp_path):
    made = []

    def make(**kw):
        d = tmp_path / ("stack%d" % len(made))
        d.mkdir()
        s = Stack(d, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
