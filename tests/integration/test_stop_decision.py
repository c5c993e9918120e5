"""The stop decision on a real store (SQLite and PostgreSQL), without the app: what
`decide_stop` records for each state a task can be in when a STOP arrives (outside the
merge/deploy window, inside it, the window undeterminable, an open stop already there,
a terminal task, a stop that lost the race to completion), and when `deferred_ready`
turns a deferred stop into an open one.

These are the fast tests the mutation run of `bot/stopplane/intent.py` uses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from bot.stopplane.intent import _decide, decide_stop, deferred_ready, task_facts
from state import hosts, jobs, stops
from state.db import normalise_url
from state.errors import StaleVersionError
from state.machine import Facts
from state.models import (
    Job,
    JobStatus,
    NewTask,
    ServerIdentity,
    Stage,
    StopRecord,
    StopStatus,
    Task,
)
from state.schema import tasks as tasks_table
from state.store import (
    Store,
    events_for_task,
    get_task,
    insert_task,
    tombstone_task_keys,
    update_task,
)
from tests.conftest import migrated_store

NOW = 1_700_000_000.0
HERE = ServerIdentity("server-a", "host-a")
THERE = ServerIdentity("server-b", "host-b")


def make_task(
    store: Store, stage: Stage = Stage.ANALYSIS, key: str = "APP-1", **fields: Any
) -> Task:
    new = NewTask(tracker="plane", issue_id=f"iss-{key}", key=key, repo="app", stage=stage)
    task = store.write(insert_task, new, NOW - 100)
    if fields:
        task = store.write(update_task, task, NOW - 90, **fields)
    return task


def run_job(store: Store, task: Task, stage: str, server: ServerIdentity = HERE) -> Job:
    """A job of `stage` for the task, claimed (running) by `server`."""
    store.write(jobs.enqueue_job, task.id, stage, NOW - 80)
    job = store.write(jobs.claim_next_job, "w0", NOW - 70, 600.0, server=server)
    assert job is not None and job.task_id == task.id and job.status is JobStatus.RUNNING
    return job  # type: ignore[no-any-return]


def take_lease(store: Store, task: Task) -> None:
    assert store.write(jobs.acquire_lease, task.repo, task.id, NOW - 60, 600.0)


def merging(store: Store, stage: Stage = Stage.MERGE, key: str = "APP-1") -> tuple[Task, Job]:
    """A task inside its critical window: its merge/deploy job runs and it holds the lease."""
    task = make_task(store, stage, key)
    job = run_job(store, task, stage.value)
    take_lease(store, task)
    return task, job


def stop(
    store: Store,
    task: Task,
    *,
    requested_by: str = "alice",
    now: float = NOW,
    server: ServerIdentity | None = None,
) -> Any:
    return store.write(
        decide_stop, task.id, requested_by, "enough", "delivery-1", now, server=server
    )


def kinds(store: Store, task: Task) -> list[str]:
    return [e["kind"] for e in store.query(events_for_task, task.id)]


def event(store: Store, task: Task, kind: str) -> dict[str, Any]:
    found = [e for e in store.query(events_for_task, task.id) if e["kind"] == kind]
    assert len(found) == 1, found
    return found[0]


@contextmanager
def table_unreadable(store: Store, table: str) -> Iterator[None]:
    """`table` cannot be read (a real database error)."""
    with store.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} RENAME TO {table}_away"))
    try:
        yield
    finally:
        with store.begin() as conn:
            conn.execute(text(f"ALTER TABLE {table}_away RENAME TO {table}"))


def leases_unreadable(store: Store) -> AbstractContextManager[None]:
    """The merge lease table cannot be read: the window is undeterminable."""
    return table_unreadable(store, "merge_leases")


def finish(store: Store, task: Task, stage: Stage = Stage.DONE) -> Task:
    current = store.query(get_task, task.id)
    assert current is not None
    return store.write(update_task, current, NOW - 10, stage=stage)


# -- outside the critical window: the stop is open and the intent is on the task -------


@pytest.mark.parametrize("stage", [Stage.ANALYSIS, Stage.IMPLEMENTATION, Stage.REVIEW])
def test_a_stop_outside_the_window_is_open_at_once(store: Store, stage: Stage) -> None:
    task = make_task(store, stage)
    store.write(jobs.enqueue_job, task.id, stage.value, NOW - 80)  # queued, not running
    result = stop(store, task)
    assert (result.outcome, result.task, result.task_id, result.new) == (
        "stop_requested",
        "APP-1",
        task.id,
        True,
    )
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.OPEN and rec.window is None
    assert (rec.task_id, rec.requested_at, rec.requested_by) == (task.id, NOW, "alice")
    assert (rec.reason, rec.correlation_id) == ("enough", "delivery-1")
    assert rec.job_id is None and rec.run_id is None  # nothing was running
    after = store.query(get_task, task.id)
    assert after is not None and after.cancel_requested_at == NOW
    assert after.version == task.version + 1 and after.stage is stage
    ev = event(store, task, "stop_requested")
    assert (ev["at"], ev["actor"], ev["stop_id"]) == (NOW, "alice", rec.id)
    assert ev["detail"] == {"reason": "enough", "correlation": "delivery-1"}  # no window


def test_an_open_stop_names_the_job_that_was_running(store: Store) -> None:
    task = make_task(store, Stage.IMPLEMENTATION)
    job = run_job(store, task, "implementation")
    result = stop(store, task)
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and (rec.job_id, rec.run_id) == (job.id, job.run_id)
    assert rec.status is StopStatus.OPEN


def test_a_second_stop_keeps_the_first_request_time_on_the_task(store: Store) -> None:
    """A task that already carries a stop intent (e.g. its earlier stop was superseded)
    keeps its first `cancel_requested_at`."""
    task = make_task(store, Stage.REVIEW, cancel_requested_at=NOW - 50)
    result = stop(store, task)
    assert result.outcome == "stop_requested"
    after = store.query(get_task, task.id)
    assert after is not None and after.cancel_requested_at == NOW - 50


@pytest.mark.parametrize(
    "stage, job_stage, lease",
    [
        (Stage.MERGE, None, True),  # the lease alone: no merge is under way
        (Stage.MERGE, "merge", False),  # a merge job without the lease never merges
        (Stage.DEPLOY, None, False),
        (Stage.MERGE, "queued", True),  # a queued job is not a running one
    ],
)
def test_merge_and_deploy_stages_outside_the_window_stop_at_once(
    store: Store, stage: Stage, job_stage: str | None, lease: bool
) -> None:
    task = make_task(store, stage)
    if job_stage == "queued":
        store.write(jobs.enqueue_job, task.id, stage.value, NOW - 80)
    elif job_stage is not None:
        run_job(store, task, job_stage)
    if lease:
        take_lease(store, task)
    result = stop(store, task)
    assert result.outcome == "stop_requested" and result.new
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.OPEN and rec.window is None


# -- inside the critical window: deferred --------------------------------------------


@pytest.mark.parametrize("stage", [Stage.MERGE, Stage.DEPLOY])
def test_a_stop_inside_the_window_is_deferred_with_the_intent_recorded(
    store: Store, stage: Stage
) -> None:
    task, job = merging(store, stage)
    result = stop(store, task)
    assert (result.outcome, result.task, result.task_id, result.new) == (
        "stop_deferred",
        "APP-1",
        task.id,
        True,
    )
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.DEFERRED
    assert rec.window == stage.value and rec.closed_at is None
    assert (rec.job_id, rec.run_id) == (job.id, job.run_id)
    after = store.query(get_task, task.id)
    assert after is not None and after.stage is stage and after.cancel_requested_at == NOW
    ev = event(store, task, "stop_deferred")
    assert (ev["actor"], ev["stop_id"]) == ("alice", rec.id)
    assert ev["detail"] == {"reason": "enough", "correlation": "delivery-1", "window": stage.value}
    assert "stop_requested" not in kinds(store, task)


def test_a_merge_call_under_way_defers_even_without_a_job(store: Store) -> None:
    task = make_task(store, Stage.MERGE, merge_initiated_at=NOW - 5)
    result = stop(store, task)
    assert result.outcome == "stop_deferred"
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.window == "merge" and rec.job_id is None


def test_an_undeterminable_window_defers_and_the_stop_is_still_recorded(store: Store) -> None:
    """The store cannot say whether the merge runs: fail-closed (deferred, window
    `unknown`), and the failed read does not spoil the transaction the stop is written in."""
    task = make_task(store, Stage.MERGE)
    with leases_unreadable(store):
        result = stop(store, task)
    assert result.outcome == "stop_deferred" and result.new
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.DEFERRED and rec.window == "unknown"
    assert event(store, task, "stop_deferred")["detail"]["window"] == "unknown"
    after = store.query(get_task, task.id)
    assert after is not None and after.cancel_requested_at == NOW


def test_unreadable_jobs_defer_the_stop_too(store: Store) -> None:
    """The jobs table cannot be read: the window is unknown and the stop deferred and
    recorded with no job on it (one read serves the window and the job recorded, so no
    second read can fail the request)."""
    task = make_task(store, Stage.MERGE)
    with table_unreadable(store, "jobs"):
        result = stop(store, task)
    assert result.outcome == "stop_deferred" and result.new
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.window == "unknown" and rec.job_id is None


def test_an_undeterminable_window_matters_only_in_merge_and_deploy(store: Store) -> None:
    task = make_task(store, Stage.IMPLEMENTATION)
    with leases_unreadable(store):
        result = stop(store, task)
    assert result.outcome == "stop_requested"


def test_task_facts_read_the_running_job_and_the_lease(store: Store) -> None:
    task = make_task(store, Stage.MERGE)
    store.write(jobs.enqueue_job, task.id, "review", NOW - 90)  # queued first: not running
    store.write(jobs.claim_next_job, "w0", NOW - 85, 600.0)  # takes that one
    # A second job queued behind it; only the running one names the stage.
    store.write(jobs.enqueue_job, task.id, "merge", NOW - 80)
    assert store.query(task_facts, task) == Facts(
        has_running_job=True, running_job_stage="review", holds_lease=False
    )
    take_lease(store, task)
    assert store.query(task_facts, task).holds_lease is True
    idle = make_task(store, Stage.MERGE, key="APP-2")
    assert store.query(task_facts, idle) == Facts(
        has_running_job=False, running_job_stage=None, holds_lease=False
    )
    with leases_unreadable(store):
        assert store.query(task_facts, task) == Facts(has_running_job=None, holds_lease=None)


# -- a stop already there -------------------------------------------------------------


def test_a_repeated_stop_answers_with_the_open_stop_and_records_nothing(store: Store) -> None:
    task = make_task(store, Stage.IMPLEMENTATION)
    first = stop(store, task)
    version = store.query(get_task, task.id).version  # type: ignore[union-attr]
    again = stop(store, task, requested_by="bob", now=NOW + 1)
    assert (again.outcome, again.stop_id, again.new) == ("stop_requested", first.stop_id, False)
    assert (again.task, again.task_id) == ("APP-1", task.id)
    assert store.query(get_task, task.id).version == version  # type: ignore[union-attr]
    assert kinds(store, task) == ["stop_requested"]
    assert len(store.query(stops.stops_for_task, task.id)) == 1


def test_a_repeated_stop_during_the_window_answers_deferred(store: Store) -> None:
    task, _ = merging(store)
    first = stop(store, task)
    again = stop(store, task, now=NOW + 1)
    assert (again.outcome, again.stop_id, again.new) == ("stop_deferred", first.stop_id, False)
    assert kinds(store, task) == ["stop_deferred"]


# -- terminal tasks -------------------------------------------------------------------


@pytest.mark.parametrize("stage", [Stage.DONE, Stage.CANCELLED])
def test_a_stop_for_a_terminal_task_is_a_noop_without_a_record(store: Store, stage: Stage) -> None:
    task = finish(store, make_task(store, Stage.DEPLOY), stage)
    result = stop(store, task)
    assert (result.outcome, result.task, result.task_id) == (
        "noop_already_terminal",
        "APP-1",
        task.id,
    )
    assert result.stop_id is None and result.new is False
    assert store.query(stops.stops_for_task, task.id) == []
    assert kinds(store, task) == []


def _record(store: Store, task: Task, status: StopStatus, at: float) -> StopRecord:
    rec, new = store.write(
        stops.insert_stop,
        task_id=task.id,
        status=status,
        now=at,
        requested_by="alice",
        reason="",
        correlation_id=None,
        job_id=None,
        run_id=None,
    )
    assert new
    return rec  # type: ignore[no-any-return]


@pytest.mark.parametrize("closing", [StopStatus.DONE, StopStatus.OPEN])
def test_a_late_stop_of_a_cancelled_task_gets_the_id_of_the_stop_that_ended_it(
    store: Store, closing: StopStatus
) -> None:
    """One stop, one id: late callers get the stop that cancelled the task, done or still
    open (the task turns terminal one step before its stop closes), never a superseded
    one, and the latest of them."""
    task = make_task(store, Stage.REVIEW)
    _record(store, task, StopStatus.DONE, NOW - 40)  # an earlier one, long closed
    ending = _record(store, task, closing, NOW - 30)
    _record(store, task, StopStatus.SUPERSEDED, NOW - 20)  # a later one that lost a race
    dead = store.write(tombstone_task_keys, finish(store, task, Stage.CANCELLED), NOW - 5)
    result = stop(store, dead)
    assert (result.outcome, result.stop_id, result.new) == (
        "noop_already_terminal",
        ending.id,
        False,
    )
    assert result.task == "APP-1"  # the original key, not the tombstone
    assert len(store.query(stops.stops_for_task, task.id)) == 3


def test_a_stop_that_saw_the_task_live_and_lost_the_race_is_superseded(store: Store) -> None:
    """`_decide` re-run after a lost compare-and-set (saw_live): the task finished
    normally meanwhile, so the stop is closed as superseded, with its own record."""
    task = finish(store, make_task(store, Stage.DEPLOY))
    with store.begin() as conn:
        result = _decide(conn, task.id, "alice", "enough", "delivery-1", NOW, True)
    assert (result.outcome, result.task, result.task_id, result.new) == (
        "noop_already_terminal",
        "APP-1",
        task.id,
        False,
    )
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.SUPERSEDED
    assert (rec.outcome, rec.closed_at, rec.requested_at) == ("superseded", NOW, NOW)
    assert (rec.requested_by, rec.reason, rec.correlation_id) == ("alice", "enough", "delivery-1")
    assert rec.job_id is None and rec.run_id is None and rec.window is None
    ev = event(store, task, "stop_superseded")
    assert (ev["at"], ev["actor"], ev["stop_id"], ev["detail"]) == (NOW, "alice", rec.id, {})
    after = store.query(get_task, task.id)
    assert after is not None and after.stage is Stage.DONE and after.version == task.version


@pytest.mark.parametrize("closing", [StopStatus.DONE, StopStatus.OPEN])
def test_a_stop_that_lost_the_race_to_a_stop_whose_reset_finished_gets_that_stop(
    store: Store, closing: StopStatus
) -> None:
    """`_decide` re-run after a lost compare-and-set (saw_live), when the stop that won
    has meanwhile cancelled the task: a late caller of that stop (its id, nothing new
    recorded), not a superseded stop. Seen with 100 STOPs at once on PostgreSQL."""
    task = make_task(store, Stage.IMPLEMENTATION)
    winner = _record(store, task, closing, NOW - 1)
    dead = store.write(tombstone_task_keys, finish(store, task, Stage.CANCELLED), NOW - 0.5)
    with store.begin() as conn:
        result = _decide(conn, dead.id, "alice", "enough", "delivery-2", NOW, True)
    assert (result.outcome, result.stop_id, result.new) == (
        "noop_already_terminal",
        winner.id,
        False,
    )
    assert [r.id for r in store.query(stops.stops_for_task, task.id)] == [winner.id]
    assert "stop_superseded" not in kinds(store, task)


def test_a_stop_for_a_vanished_task_raises(store: Store) -> None:
    with pytest.raises(LookupError, match="task 999 vanished"):
        store.write(decide_stop, 999, "alice", "", None, NOW)


def _cas_always_loses(store: Store) -> None:
    """Every compare-and-set on a task that would record a stop finds it changed."""
    if store.dialect == "sqlite":
        ddl = [
            "CREATE TRIGGER cas_loses BEFORE UPDATE ON tasks "
            "WHEN NEW.cancel_requested_at IS NOT NULL BEGIN SELECT RAISE(IGNORE); END"
        ]
    else:
        ddl = [
            "CREATE FUNCTION cas_loses() RETURNS trigger AS $$ BEGIN "
            "IF NEW.cancel_requested_at IS NOT NULL THEN RETURN NULL; END IF; RETURN NEW; "
            "END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER cas_loses BEFORE UPDATE ON tasks FOR EACH ROW "
            "EXECUTE FUNCTION cas_loses()",
        ]
    with store.begin() as conn:
        for statement in ddl:
            conn.execute(text(statement))


def test_a_stop_that_keeps_losing_its_compare_and_set_gives_up_and_records_nothing(
    store: Store,
) -> None:
    task = make_task(store, Stage.REVIEW)
    _cas_always_loses(store)
    with pytest.raises(StaleVersionError, match="kept changing; stop not recorded"):
        stop(store, task)
    assert store.query(stops.stops_for_task, task.id) == []
    assert kinds(store, task) == []


# -- handing other servers' agents over (PostgreSQL: SQLite is one server) ---------------


def test_other_servers_agents_are_handed_over_in_the_stops_transaction(store: Store) -> None:
    task = make_task(store, Stage.IMPLEMENTATION)
    theirs = run_job(store, task, "implementation", server=THERE)
    result = stop(store, task, server=HERE)
    steps = store.query(hosts.host_steps_for_stop, result.stop_id)
    if store.dialect == "sqlite":
        assert steps == []
        return
    assert [(s.server_id, s.step, s.task_id) for s in steps] == [("server-b", "processes", task.id)]
    assert hosts.step_detail(steps[0]) == {"jobs": [theirs.id], "requested_at": NOW}


@pytest.mark.parametrize("case", ["own agent", "no server", "deferred", "nothing running"])
def test_no_hand_over_without_a_foreign_agent_to_stop_now(store: Store, case: str) -> None:
    if case == "deferred":
        task = make_task(store, Stage.MERGE)
        run_job(store, task, "merge", server=THERE)
        take_lease(store, task)
    else:
        task = make_task(store, Stage.IMPLEMENTATION)
        if case != "nothing running":
            run_job(store, task, "implementation", server=HERE if case == "own agent" else THERE)
    result = stop(store, task, server=None if case == "no server" else HERE)
    assert result.new
    assert store.query(hosts.host_steps_for_stop, result.stop_id) == []


def test_a_repeated_stop_hands_nothing_over_again(store: Store) -> None:
    task = make_task(store, Stage.IMPLEMENTATION)
    first = stop(store, task, server=HERE)  # nothing of another server's yet
    run_job(store, task, "implementation", server=THERE)
    again = stop(store, task, server=HERE)
    assert again.stop_id == first.stop_id and not again.new
    assert store.query(hosts.host_steps_for_stop, first.stop_id) == []


# -- the race with completion, for real (PostgreSQL: row locks) ---------------------------


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    with migrated_store(postgres_url) as s:
        yield s


def test_a_stop_racing_the_tasks_completion_is_superseded(
    pg_store: Store, postgres_url: str
) -> None:
    """Another transaction holds the task's row and finishes the task while the stop
    waits on it: the stop's compare-and-set loses, it re-decides on the finished task
    and closes as superseded (it saw the task live)."""
    task = make_task(pg_store, Stage.DEPLOY)
    finisher = create_engine(normalise_url(postgres_url))
    watcher = create_engine(normalise_url(postgres_url), isolation_level="AUTOCOMMIT")
    results: list[Any] = []
    try:
        with finisher.begin() as other:
            other.execute(tasks_table.select().where(tasks_table.c.id == task.id).with_for_update())
            thread = threading.Thread(target=lambda: results.append(stop(pg_store, task)))
            thread.start()
            _wait_for_lock_wait(watcher)
            other.execute(
                tasks_table.update()
                .where(tasks_table.c.id == task.id)
                .values(stage="done", version=task.version + 1, done_at=NOW)
            )
        thread.join(30)
        assert not thread.is_alive()
    finally:
        finisher.dispose()
        watcher.dispose()
    (result,) = results
    assert result.outcome == "noop_already_terminal" and not result.new
    rec = pg_store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.SUPERSEDED
    assert kinds(pg_store, task) == ["stop_superseded"]
    after = pg_store.query(get_task, task.id)
    assert after is not None and after.stage is Stage.DONE and after.cancel_requested_at is None


def _wait_for_lock_wait(engine: Any) -> None:

    deadline = time.monotonic() + 20
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar()
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError("the stop never waited on the task's row")


# -- deferred_ready: the finalizer's check ---------------------------------------------


def _deferred(store: Store, stage: Stage = Stage.MERGE) -> tuple[Task, Job, StopRecord]:
    task, job = merging(store, stage)
    result = stop(store, task)
    rec = store.query(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.DEFERRED
    return task, job, rec


def _end_job(store: Store, job: Job) -> None:
    with store.begin() as conn:
        assert jobs.finish_job(conn, job.id, job.run_id, JobStatus.SUCCEEDED, NOW + 5, exit_code=0)


def ready(store: Store, rec: StopRecord, at: float = NOW + 10) -> bool:
    return store.write(deferred_ready, rec, at)  # type: ignore[no-any-return]


@pytest.mark.parametrize("stage", [Stage.MERGE, Stage.DEPLOY])
def test_a_deferred_stop_waits_while_its_step_runs(store: Store, stage: Stage) -> None:
    task, _, rec = _deferred(store, stage)
    assert ready(store, rec) is False
    assert store.query(stops.get_stop, rec.id).status is StopStatus.DEFERRED  # type: ignore[union-attr]
    assert "deferred_stop_applied" not in kinds(store, task)


@pytest.mark.parametrize("stage", [Stage.MERGE, Stage.DEPLOY])
def test_a_deferred_stop_is_applied_once_its_step_has_ended(store: Store, stage: Stage) -> None:
    task, job, rec = _deferred(store, stage)
    _end_job(store, job)
    assert ready(store, rec) is True
    after = store.query(stops.get_stop, rec.id)
    assert after is not None and after.status is StopStatus.OPEN
    ev = event(store, task, "deferred_stop_applied")
    assert (ev["at"], ev["stop_id"], ev["detail"]) == (NOW + 10, rec.id, {"window": stage.value})
    assert ready(store, rec, NOW + 11) is False  # once: it is open now
    assert kinds(store, task).count("deferred_stop_applied") == 1


def test_a_deferred_stop_waits_for_the_merge_call_to_return(store: Store) -> None:
    task = make_task(store, Stage.MERGE, merge_initiated_at=NOW - 5)
    rec = store.query(stops.get_stop, stop(store, task).stop_id)
    assert rec is not None
    assert ready(store, rec) is False
    current = store.query(get_task, task.id)
    store.write(update_task, current, NOW + 1, merged_at=NOW + 1)
    assert ready(store, rec) is True


def test_a_deferred_stop_waits_while_the_window_is_undeterminable(store: Store) -> None:
    task, job, rec = _deferred(store)
    _end_job(store, job)
    with leases_unreadable(store):
        assert ready(store, rec) is False
    assert store.query(stops.get_stop, rec.id).status is StopStatus.DEFERRED  # type: ignore[union-attr]
    assert ready(store, rec) is True


def test_a_deferred_stop_of_a_task_that_turned_terminal_is_applied(store: Store) -> None:
    """A task that ended (here with a merge call never answered) has no window left: the
    stop goes on and closes it out."""
    task, job, rec = _deferred(store)
    _end_job(store, job)
    current = store.query(get_task, task.id)
    store.write(update_task, current, NOW + 1, stage=Stage.DONE, merge_initiated_at=NOW)
    assert ready(store, rec) is True


def test_a_deferred_stop_already_applied_elsewhere_is_not_applied_again(store: Store) -> None:
    task, job, rec = _deferred(store)
    _end_job(store, job)
    assert store.write(
        stops.update_stop, rec.id, expect=StopStatus.DEFERRED, status=StopStatus.DONE
    )
    assert ready(store, rec) is False
    assert store.query(stops.get_stop, rec.id).status is StopStatus.DONE  # type: ignore[union-attr]
    assert "deferred_stop_applied" not in kinds(store, task)


def test_a_deferred_stop_of_a_vanished_task_is_left_alone(store: Store) -> None:
    task, _, rec = _deferred(store)
    ghost = replace(rec, task_id=999)
    assert ready(store, ghost) is False
    assert store.query(stops.get_stop, rec.id).status is StopStatus.DEFERRED  # type: ignore[union-attr]


# -- the task the caller read: the webhook's STOP decides on it without reading it again --


def test_a_stop_decided_on_the_callers_task_records_what_a_fresh_read_would(
    store: Store,
) -> None:
    task = make_task(store, Stage.ANALYSIS)
    result = store.write(
        decide_stop, task.id, "alice", "enough", "delivery-1", NOW, server=HERE, task=task
    )
    assert (result.outcome, result.task_id, result.new) == ("stop_requested", task.id, True)
    after = store.query(get_task, task.id)
    assert after is not None and after.version == task.version + 1
    assert after.cancel_requested_at == NOW
    assert kinds(store, task) == ["stop_requested"]


def test_a_stale_task_from_the_caller_loses_its_compare_and_set_and_is_read_again(
    store: Store,
) -> None:
    """The caller's copy is older than the row (someone changed the task since): the
    first attempt's compare-and-set loses, the retry reads the task and decides on it."""
    stale = make_task(store, Stage.ANALYSIS)
    current = store.write(update_task, stale, NOW - 50, title="renamed")
    result = store.write(
        decide_stop, stale.id, "alice", "enough", "delivery-1", NOW, server=HERE, task=stale
    )
    assert (result.outcome, result.new) == ("stop_requested", True)
    after = store.query(get_task, stale.id)
    assert after is not None and after.version == current.version + 1
    assert after.title == "renamed" and after.cancel_requested_at == NOW
    assert len(store.query(stops.stops_for_task, stale.id)) == 1
    assert kinds(store, stale) == ["stop_requested"]


def test_a_task_of_another_id_from_the_caller_is_not_used(store: Store) -> None:
    other = make_task(store, Stage.ANALYSIS, key="APP-2")
    task = make_task(store, Stage.ANALYSIS, key="APP-3")
    result = store.write(
        decide_stop, task.id, "alice", "enough", None, NOW, server=HERE, task=other
    )
    assert (result.task, result.task_id) == ("APP-3", task.id)
    untouched = store.query(get_task, other.id)
    assert untouched is not None and untouched.version == other.version
