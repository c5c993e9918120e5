"""The store on real SQLite and real PostgreSQL: migrations, CAS races, tombstones,
deduplication and the one-open-stop rule."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect

from state import jobs, stops
from state.db import current_revision, make_engine, upgrade
from state.errors import StaleVersionError
from state.models import JobStatus, NewTask, Stage, StopStatus
from state.store import (
    DuplicateTaskError,
    Store,
    find_task,
    get_task,
    insert_task,
    live_task_for_issue,
    parse_tombstone,
    tombstone_key,
    tombstone_task_keys,
    update_task,
)
from tests.records import record_stop

NOW = 1_700_000_000.0
HEAD_REVISION = "0005"
TABLES = {
    "tasks",
    "jobs",
    "stop_records",
    "audit_events",
    "webhook_deliveries",
    "merge_leases",
    "pending_cleanups",
    "servers",
    "host_steps",
}


def new_task(issue: str = "iss-1", key: str = "APP-1") -> NewTask:
    return NewTask(tracker="plane", issue_id=issue, key=key, repo="app", title="Fix it")


def test_migrations_from_empty(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)  # a second run on a migrated database is a no-op
    assert current_revision(engine) == HEAD_REVISION
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_migrations_from_a_truly_empty_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'dir' / 'c.db'}")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


def test_tombstone_round_trip(store: Store) -> None:
    task = store.write(insert_task, new_task(), NOW)
    dead = store.write(tombstone_task_keys, task, NOW + 1)
    assert dead.issue_id == f"iss-1#cancelled-{task.id}"
    assert parse_tombstone(dead.issue_id) == ("iss-1", task.id)
    assert parse_tombstone(dead.key) == ("APP-1", task.id)
    assert parse_tombstone("iss-1") is None
    assert store.write(tombstone_task_keys, dead, NOW + 2) == dead  # idempotent
    fresh = store.write(insert_task, new_task(), NOW + 3)  # the ticket can start again
    assert fresh.id != task.id
    assert store.query(live_task_for_issue, "plane", "iss-1").id == fresh.id  # type: ignore[union-attr]
    assert store.query(find_task, "APP-1").id == fresh.id  # type: ignore[union-attr]
    assert store.query(find_task, str(task.id)).id == task.id  # type: ignore[union-attr]


@pytest.mark.parametrize("issue", ["x#cancelled-3", "a#b", "ünï code", "PROJ-42"])
def test_tombstone_parser_gets_the_original_back(issue: str) -> None:
    assert parse_tombstone(tombstone_key(issue, 17)) == (issue, 17)


def test_one_live_task_per_ticket(store: Store) -> None:
    store.write(insert_task, new_task(), NOW)
    with pytest.raises(DuplicateTaskError):
        store.write(insert_task, new_task(), NOW)


def test_compare_and_set_reports_a_lost_race(store: Store) -> None:
    task = store.write(insert_task, new_task(), NOW)
    store.write(update_task, task, NOW, stage=Stage.IMPLEMENTATION)
    with pytest.raises(StaleVersionError):
        store.write(update_task, task, NOW, stage=Stage.CANCELLED)
    assert store.query(get_task, task.id).stage is Stage.IMPLEMENTATION  # type: ignore[union-attr]


def test_concurrent_updates_exactly_one_wins(store: Store) -> None:
    task = store.write(insert_task, new_task(), NOW)
    barrier = threading.Barrier(2)

    def attempt(stage: Stage) -> str:
        barrier.wait()
        try:
            store.write(update_task, task, NOW, stage=stage)
            return "won"
        except StaleVersionError:
            return "lost"

    for _ in range(10):
        task = store.query(get_task, task.id)  # type: ignore[assignment]
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(attempt, [Stage.CANCELLED, Stage.IMPLEMENTATION]))
        assert sorted(results) == ["lost", "won"]
        after = store.query(get_task, task.id)
        assert after is not None and after.version == task.version + 1


def test_delivery_dedup_lives_in_the_database(store: Store) -> None:
    assert store.write(stops.record_delivery, "plane", "k1", "d1", NOW) is not None
    assert store.write(stops.record_delivery, "plane", "k1", "d2", NOW) is None
    assert store.write(stops.record_delivery, "plane", "k2", "d2", NOW) is not None


def test_one_open_stop_per_task(store: Store) -> None:
    task = store.write(insert_task, new_task(), NOW)

    def stop() -> str:
        rec = record_stop(store, task.id, StopStatus.OPEN, NOW, reason="")
        return rec.id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: stop(), range(16)))
    assert len(ids) == 1
    assert len(store.query(stops.stops_for_task, task.id)) == 1


def test_job_claim_is_exclusive_and_cancel_is_final(store: Store) -> None:
    task = store.write(insert_task, new_task(), NOW)
    for _ in range(5):
        store.write(jobs.enqueue_job, task.id, "analysis", NOW)
    with ThreadPoolExecutor(4) as pool:
        claimed = list(
            pool.map(lambda i: store.write(jobs.claim_next_job, f"w{i}", NOW, 30), range(8))
        )
    ids = [j.id for j in claimed if j is not None]
    assert len(ids) == len(set(ids)) == 5
    job = next(j for j in claimed if j is not None)
    assert store.write(jobs.cancel_task_jobs, task.id, NOW) == 5
    assert not store.write(jobs.finish_job, job.id, job.run_id, JobStatus.SUCCEEDED, NOW)
    assert not store.write(jobs.requeue_expired, job, NOW + 1000)
    assert store.query(jobs.get_job, job.id).status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_claim_takes_the_job_due_longest_of_a_live_task(store: Store) -> None:
    """Due order (run_after, then id), not id order: a retry re-queued with a backoff
    waits behind a later job that fell due before it; nothing not yet due is taken,
    nor a job of a cancelled task."""
    made = [store.write(insert_task, new_task(f"d{n}", f"APP-{n}"), NOW) for n in range(5)]
    retry = store.write(jobs.enqueue_job, made[0].id, "analysis", NOW, run_after=NOW + 50)
    first = store.write(jobs.enqueue_job, made[1].id, "analysis", NOW + 10)
    tie = store.write(jobs.enqueue_job, made[2].id, "analysis", NOW + 10)
    store.write(jobs.enqueue_job, made[3].id, "analysis", NOW, run_after=NOW + 1000)
    store.write(jobs.enqueue_job, made[4].id, "analysis", NOW)
    store.write(update_task, made[4], NOW, cancelled_at=NOW)
    claimed = [store.write(jobs.claim_next_job, "w", NOW + 100, 30) for _ in range(4)]
    assert [j.id if j else None for j in claimed] == [first.id, tie.id, retry.id, None]


def test_queue_recent_lists_the_newest_cancelled_tasks_with_their_stop(store: Store) -> None:
    """The ten newest cancelled tasks, newest first, each with the stop that cancelled it
    (done, or open while it posts its comment); a noop or superseded stop is not that."""
    from state.queue import RECENT_LIMIT, queue_summary

    made = [store.write(insert_task, new_task(f"r{n}", f"APP-{n}"), NOW) for n in range(14)]
    expected = []
    for n, task in enumerate(made):
        at = NOW + 10 * n
        record_stop(store, task.id, StopStatus.NOOP, at - 2)
        if n % 2:
            record_stop(store, task.id, StopStatus.SUPERSEDED, at - 1)
        status = StopStatus.OPEN if n == 13 else StopStatus.DONE
        stop = record_stop(store, task.id, status, at)
        store.write(update_task, task, at, cancelled_at=at)
        expected.append((f"APP-{n}", stop.id))
    only_noop = store.write(insert_task, new_task("r-noop", "APP-NOOP"), NOW)
    record_stop(store, only_noop.id, StopStatus.NOOP, NOW + 500)
    store.write(update_task, only_noop, NOW + 500, cancelled_at=NOW + 500)
    doc = store.query(lambda c: queue_summary(c, stop_enabled=True, stop_repos=[]))
    recent = [(r["task"], r["stop_id"]) for r in doc["stop"]["recent"]]
    # APP-NOOP is the newest cancelled task, but no stop of its cancelled it.
    assert recent == expected[::-1][: RECENT_LIMIT - 1]


def test_merge_lease_is_one_per_repo(store: Store) -> None:
    a = store.write(insert_task, new_task("a", "APP-1"), NOW)
    b = store.write(insert_task, new_task("b", "APP-2"), NOW)
    assert store.write(jobs.acquire_lease, "app", a.id, NOW, 60)
    assert not store.write(jobs.acquire_lease, "app", b.id, NOW, 60)
    assert store.write(jobs.acquire_lease, "app", a.id, NOW + 1, 60)  # renew
    assert store.write(jobs.release_lease, a.id) == 1
    assert store.write(jobs.acquire_lease, "app", b.id, NOW, 60)


def test_counts_kept_by_triggers_match_the_tables(store: Store) -> None:
    from sqlalchemy import func, select

    from state.queue import queue_summary
    from state.schema import jobs as jobs_table
    from state.schema import tasks as tasks_table

    made = [store.write(insert_task, new_task(f"i{n}", f"APP-{n}"), NOW) for n in range(6)]
    for task in made:
        store.write(jobs.enqueue_job, task.id, "analysis", NOW)
    claimed = store.write(jobs.claim_next_job, "w", NOW, 30)
    assert claimed is not None
    store.write(jobs.finish_job, claimed.id, claimed.run_id, JobStatus.SUCCEEDED, NOW)
    store.write(jobs.cancel_task_jobs, made[1].id, NOW)
    store.write(update_task, made[2], NOW, stage=Stage.REVIEW)
    store.write(update_task, made[3], NOW, title="no stage change")
    store.write(lambda c: c.execute(jobs_table.delete().where(jobs_table.c.task_id == made[4].id)))

    def truth(conn):  # type: ignore[no-untyped-def]
        stages = dict(
            conn.execute(
                select(tasks_table.c.stage, func.count()).group_by(tasks_table.c.stage)
            ).all()
        )
        statuses = dict(
            conn.execute(
                select(jobs_table.c.status, func.count()).group_by(jobs_table.c.status)
            ).all()
        )
        return stages, statuses

    stages, statuses = store.query(truth)
    summary = store.query(queue_summary, stop_enabled=True, stop_repos=[])
    assert {k: v for k, v in summary["tasks"].items() if v} == stages
    assert {k: v for k, v in summary["jobs"].items() if v} == statuses
    assert summary["tasks"]["analysis"] == 5 and summary["jobs"]["cancelled"] == 1


def test_a_deadlock_victim_is_run_again(postgres_url: str) -> None:
    """Two transactions locking two rows in opposite orders: PostgreSQL aborts one, and
    Store.write runs it again from the start, so both land."""
    from sqlalchemy import update as sql_update

    from state.schema import tasks as tasks_table

    store = Store(make_engine(postgres_url))
    a = store.write(insert_task, new_task("a", "APP-1"), NOW)
    b = store.write(insert_task, new_task("b", "APP-2"), NOW)
    barrier = threading.Barrier(2, timeout=10)
    attempts: list[str] = []

    def touch(first: int, second: int, name: str):  # type: ignore[no-untyped-def]
        def tx(conn) -> None:  # type: ignore[no-untyped-def]
            attempts.append(name)
            conn.execute(
                sql_update(tasks_table).where(tasks_table.c.id == first).values(title=name)
            )
            if attempts.count(name) == 1:  # only the first try of each meets the other
                barrier.wait()
            conn.execute(
                sql_update(tasks_table).where(tasks_table.c.id == second).values(title=name)
            )

        return lambda: store.write(tx)

    with ThreadPoolExecutor(2) as pool:
        done = [pool.submit(touch(a.id, b.id, "one")), pool.submit(touch(b.id, a.id, "two"))]
        for future in done:
            future.result(timeout=30)
    assert len(attempts) == 3  # one of the two was the deadlock victim and ran again
    store.dispose()


def test_refs_name_the_tracker_and_an_ambiguous_bare_ref_lists_the_candidates(
    store: Store,
) -> None:
    from state.refs import Ambiguous, resolve_task

    plane = store.write(insert_task, new_task("uuid-42", "PROJ-42"), NOW)
    jira = store.write(
        insert_task,
        NewTask(tracker="jira", issue_id="10042", key="PROJ-42", repo="ops", title="Jira"),
        NOW,
    )
    colon = store.write(insert_task, new_task("odd:1", "ODD:1"), NOW)

    assert store.query(resolve_task, "PROJ-42") == Ambiguous(
        "PROJ-42", ("jira:PROJ-42", "plane:PROJ-42")
    )
    assert store.query(resolve_task, "jira:PROJ-42") == jira
    assert store.query(resolve_task, " plane:PROJ-42 ") == plane
    assert store.query(resolve_task, "plane:uuid-42") == plane  # the issue id works too
    assert store.query(resolve_task, "10042") == jira  # no task has id 10042: Jira's id
    assert store.query(resolve_task, str(plane.id)) == plane  # a task id wins
    assert store.query(resolve_task, "github:PROJ-42") is None
    assert store.query(resolve_task, "odd:1") == colon  # not a tracker: the whole key
    assert store.query(resolve_task, "\x00") is None

    # A tombstoned task still counts: the bare key names both trackers' tickets.
    dead = store.write(tombstone_task_keys, plane, NOW + 1)
    assert store.query(resolve_task, "plane:PROJ-42") == dead
    assert isinstance(store.query(resolve_task, "PROJ-42"), Ambiguous)
    assert store.query(find_task, "PROJ-42") == jira  # the looking-only lookup: newest live


def test_the_round_robin_read_walks_live_tasks_by_id_and_wraps(store: Store) -> None:
    from state.tickets import next_live_ticket

    a, b, c = (store.write(insert_task, new_task(f"i{n}", f"K-{n}"), NOW) for n in (1, 2, 3))
    store.write(update_task, b, NOW, stage=Stage.DONE)  # terminal: never read
    walked = []
    cursor = 0
    for _ in range(4):
        found = store.query(next_live_ticket, "plane", cursor)
        assert found is not None
        cursor = found[0]
        walked.append(found[3])
    assert walked == ["K-1", "K-3", "K-1", "K-3"]
    assert store.query(next_live_ticket, "jira", 0) is None
    assert (a.id, c.id) == (store.query(next_live_ticket, "plane", 0)[0], cursor)  # type: ignore[index]
