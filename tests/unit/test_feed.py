"""The change feed's replay rule (`Last-Event-ID`): what a reconnecting client gets."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.ui import feed as feedmod
from bot.ui.feed import Feed, entered_stage


def publish(feed: Feed, n: int) -> None:
    changes: list[tuple[str, dict[str, Any]]] = [("audit", {"n": i}) for i in range(n)]
    asyncio.run(feed._publish(changes))


def test_replay_after_a_known_id_is_exactly_what_came_after() -> None:
    feed = Feed(store=None)  # type: ignore[arg-type]  # since() never reads the store
    publish(feed, 5)
    after = feed.since(f"{feed.boot}.2")
    assert after is not None and [e.seq for e in after] == [3, 4, 5]
    assert feed.since(f"{feed.boot}.5") == []
    assert feed.since(None) == [] and feed.since("") == []


def test_an_id_from_another_run_or_the_future_or_garbage_is_none() -> None:
    feed = Feed(store=None)  # type: ignore[arg-type]
    publish(feed, 3)
    assert feed.since("0.1") is None
    assert feed.since(f"{feed.boot}.9") is None
    assert feed.since(f"{feed.boot}.x") is None
    assert feed.since("nonsense") is None


def test_an_id_older_than_what_is_kept_is_none() -> None:
    feed = Feed(store=None)  # type: ignore[arg-type]
    publish(feed, feedmod.BUFFER + 10)
    assert feed.since(f"{feed.boot}.5") is None  # events 6..10 are gone
    kept = feed.since(f"{feed.boot}.10")  # the oldest kept is 11
    assert kept is not None and len(kept) == feedmod.BUFFER


def test_stage_entries_read_from_audit_kinds() -> None:
    assert entered_stage("started", {}) == "analysis"
    assert entered_stage("advanced", {"stage": "review"}) == "review"
    assert entered_stage("retry_requested", {"stage": "implementation"}) == "implementation"
    assert entered_stage("cancelled", {"outcome": "cancelled_forced"}) == "cancelled"
    assert entered_stage("merge_started", {}) is None
    assert entered_stage("advanced", {}) is None
