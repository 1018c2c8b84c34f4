"""A slow collector with the spool on: live delivery goes on, the overflow
goes to the spool and is replayed, and no span arrives twice.

Needs only pytest; the driver comes from PDTRACE_SPOOL_DRIVER (set by
meson). Bounded: about 20 s.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slow_collector  # noqa: E402

DRIVER = os.environ.get("PDTRACE_SPOOL_DRIVER", "")


@pytest.mark.skipif(not os.path.exists(DRIVER),
                    reason="PDTRACE_SPOOL_DRIVER not set")
def test_slow_collector_with_spool_keeps_live_delivery():
    # 2000 spans/s against at most 4 x 512 spans per 1.5 s in flight: the
    # queue fills up and the spool takes the overflow.
    r = slow_collector.run(DRIVER, spans=5000, rate=2000, delay_ms=1500,
                           drain_ms=60000, spool=True, timeout=120)
    print("\n[slow-collector]", r)
    assert r["spans_ended"] == 5000
    assert r["spooled"] > 0, r          # the queue was under pressure
    assert r["live"] > 0, r             # and live delivery went on
    # Nothing in flight was cut short: no span is sent twice, and every
    # span arrived, live or from the spool.
    assert r["duplicates"] == 0, r
    assert r["live"] + r["replayed"] == 5000, r
    assert r["received_unique"] == 5000, r
    assert r["dropped_queue_full"] == 0, r
    assert r["spool_left"] == 0, r
