"""SQLite's writer commits the writes that queue together in one transaction
(state/writer.py): each answered only once committed, a failing one rolled back alone,
a failed COMMIT retried write by write. Real SQLite files, the real Store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, event, select, text
from sqlalchemy.exc import IntegrityError

from state.db import make_engine
from state.errors import StoreError
from state.store import Store

meta = MetaData()
rows = Table("rows", meta, Column("id", Integer, primary_key=True), Column("name", String))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    meta.create_all(engine)
    s = Store(engine)
    yield s
    s.dispose()


def commits_of(store: Store) -> list[int]:
    """A list that grows by one for each COMMIT on the store's engine."""
    seen: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: seen.append(1))
    return seen


def insert(conn: Connection, name: str) -> str:
    conn.execute(rows.insert(), {"name": name})
    return name


def names(store: Store) -> list[str]:
    with store.read() as conn:
        return sorted(conn.execute(select(rows.c.name)).scalars())


def hold_the_writer(store: Store) -> tuple[threading.Event, Future[Any]]:
    """A write that blocks the writer until the event is set (so that the next writes
    queue up behind it and share one transaction)."""
    started, release = threading.Event(), threading.Event()

    def blocking(conn: Connection) -> str:
        started.set()
        assert release.wait(30)
        return insert(conn, "first")

    assert store._writer is not None
    held = store._writer.submit(blocking)
    assert started.wait(30)
    return release, held


async def test_writes_that_queue_together_share_one_commit_and_all_are_kept(
    store: Store,
) -> None:
    commits = commits_of(store)
    release, held = hold_the_writer(store)
    pending = [asyncio.ensure_future(store.run(insert, f"w{i:02}")) for i in range(20)]
    await asyncio.sleep(0.2)  # all twenty queued behind the held write
    release.set()
    assert await asyncio.gather(*pending) == [f"w{i:02}" for i in range(20)]
    assert held.result(30) == "first"
    assert len(commits) == 2  # the held write alone, then the twenty together
    assert names(store) == sorted(["first", *(f"w{i:02}" for i in range(20))])


async def test_no_write_in_a_group_is_answered_before_the_group_commits(store: Store) -> None:
    release, _held = hold_the_writer(store)
    earlier = [asyncio.ensure_future(store.run(insert, f"e{i}")) for i in range(5)]
    await asyncio.sleep(0.05)

    def look(conn: Connection) -> list[bool]:  # runs after the five, in their transaction
        return [f.done() for f in earlier]

    last = asyncio.ensure_future(store.run(look))
    await asyncio.sleep(0.2)
    release.set()
    assert await last == [False] * 5
    await asyncio.gather(*earlier)


async def test_a_failing_write_is_rolled_back_alone_and_raises_to_its_caller(
    store: Store,
) -> None:
    commits = commits_of(store)
    release, _held = hold_the_writer(store)

    def half_then_fail(conn: Connection) -> None:
        insert(conn, "half")
        raise ValueError("refused halfway")

    def duplicate_id(conn: Connection) -> None:
        conn.execute(rows.insert(), {"id": 1, "name": "clash"})  # "first" holds id 1

    before = asyncio.ensure_future(store.run(insert, "before"))
    failing = asyncio.ensure_future(store.run(half_then_fail))
    clash = asyncio.ensure_future(store.run(duplicate_id))
    after = asyncio.ensure_future(store.run(insert, "after"))
    await asyncio.sleep(0.2)
    release.set()
    assert await before == "before"
    with pytest.raises(ValueError, match="refused halfway"):
        await failing
    with pytest.raises(IntegrityError):
        await clash
    assert await after == "after"
    assert len(commits) == 2
    assert names(store) == ["after", "before", "first"]  # neither "half" nor "clash"


async def test_a_failed_commit_runs_each_write_of_the_group_again_on_its_own(
    store: Store,
) -> None:
    commits = commits_of(store)
    release, _held = hold_the_writer(store)
    fail_next = {"armed": False, "times": 0}

    def refuse_commit(_conn: Any) -> None:
        if fail_next["armed"]:
            fail_next["armed"] = False
            raise OSError("disk went away")

    event.listen(store.engine, "commit", refuse_commit)

    def arm(conn: Connection) -> str:  # the group's first write arms the failure, once
        fail_next["times"] += 1
        fail_next["armed"] = fail_next["times"] == 1
        return insert(conn, "arm")

    pending = [
        asyncio.ensure_future(store.run(arm)),
        *(asyncio.ensure_future(store.run(insert, f"g{i}")) for i in range(3)),
    ]
    await asyncio.sleep(0.2)
    release.set()
    assert await asyncio.gather(*pending) == ["arm", "g0", "g1", "g2"]
    assert fail_next["times"] == 2  # in the refused group, then alone
    # the held write, the refused group, then the four writes one by one
    assert len(commits) == 6
    assert names(store) == ["arm", "first", "g0", "g1", "g2"]  # each kept once


async def test_a_database_error_breaks_the_group_and_each_write_runs_again_alone(
    store: Store,
) -> None:
    """A database error may have ended SQLite's whole transaction (a full disk, an I/O
    error): the writes after it must not run outside it. The group is rolled back and
    every write of it runs on its own, so each is kept once and the failing one raises."""
    commits = commits_of(store)
    release, _held = hold_the_writer(store)
    runs: list[str] = []

    def counted(conn: Connection, name: str) -> str:
        runs.append(name)
        return insert(conn, name)

    def broken(conn: Connection) -> None:
        runs.append("broken")
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    pending = [
        asyncio.ensure_future(store.run(counted, "a")),
        asyncio.ensure_future(store.run(broken)),
        asyncio.ensure_future(store.run(counted, "b")),
    ]
    await asyncio.sleep(0.2)
    release.set()
    assert await pending[0] == "a"
    with pytest.raises(StoreError, match="no_such_table"):
        await pending[1]
    assert await pending[2] == "b"
    # In the group: a, then broken (b never ran there); then each alone.
    assert runs == ["a", "broken", "a", "broken", "b"]
    assert len(commits) == 3  # the held write, a alone, b alone (the group rolled back)
    assert names(store) == ["a", "b", "first"]


async def test_a_write_cancelled_before_it_ran_is_never_run(store: Store) -> None:
    release, _held = hold_the_writer(store)
    doomed = asyncio.ensure_future(store.run(insert, "doomed"))
    kept = asyncio.ensure_future(store.run(insert, "kept"))
    await asyncio.sleep(0.1)
    doomed.cancel()
    await asyncio.sleep(0.05)
    release.set()
    assert await kept == "kept"
    assert names(store) == ["first", "kept"]


def test_shutdown_finishes_what_is_queued(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    meta.create_all(engine)
    store = Store(engine)
    release, held = hold_the_writer(store)
    assert store._writer is not None
    queued = [store._writer.submit(insert, f"q{i}") for i in range(3)]
    release.set()
    store._writer.shutdown()
    assert [f.result(0) for f in queued] == ["q0", "q1", "q2"]
    assert held.result(0) == "first"
    with pytest.raises(RuntimeError, match="shut down"):
        store._writer.submit(insert, "late")
    engine.dispose()
