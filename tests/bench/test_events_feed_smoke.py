"""The change-feed benchmark at tiny sizes: it runs, every poll in the steady state finds
nothing new, and its numbers are sane. Never a timing threshold: the machine is shared."""

from __future__ import annotations

import math

import pytest

from bench import events_feed

pytestmark = pytest.mark.slow


def test_events_feed_smoke() -> None:
    points = events_feed.run([200, 400], samples=5)
    assert [p.size for p in points] == [200, 400]
    for point in points:
        assert point.live_tasks > 0
        assert point.poll.n == 5 and point.floor.n == 5 and point.full.n == 5
        assert math.isfinite(point.ratio_p50) and point.ratio_p50 > 0
    assert "poll/floor" in events_feed.render(points)
