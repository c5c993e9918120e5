"""The `counts` rows on real PostgreSQL: two workers' transactions that change job
statuses in opposite orders never deadlock on them (migration 0005 applies the counts at
commit in one key order), and the committed counts stay exact, savepoints included."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select, text

from state import jobs
from state.db import make_engine
from state.models import JobStatus, NewTask, Stage
from state.queue import queue_summary
from state.schema import jobs as jobs_table
from state.schema import tasks as tasks_table
from state.store import insert_task, update_task

NOW = 1_700_000_000.0


def _task(conn: Connection, n: int) -> Any:
    new = NewTask(tracker="plane", issue_id=f"i{n}", key=f"APP-{n}", repo="app", title="t")
    return insert_task(conn, new, NOW)


def _truth(engine: Engine) -> tuple[dict[str, int], dict[str, int]]:
    with engine.connect() as conn:
        stages = conn.execute(select(tasks_table.c.stage, func.count()).group_by("stage"))
        statuses = conn.execute(select(jobs_table.c.status, func.count()).group_by("status"))
        return {s: int(n) for s, n in stages}, {s: int(n) for s, n in statuses}


def _counted(engine: Engine) -> tuple[dict[str, int], dict[str, int]]:
    with engine.connect() as conn:
        summary = queue_summary(conn, stop_enabled=True, stop_repos=[])
    return (
        {k: v for k, v in summary["tasks"].items() if v},
        {k: v for k, v in summary["jobs"].items() if v},
    )


def _waiting_on_a_lock(engine: Engine, pid: int) -> bool:
    with engine.connect() as conn:
        kind = conn.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar()
    return kind == "Lock"


@pytest.mark.timeout(120)
def test_a_claim_and_a_completion_in_opposite_count_orders_both_commit(postgres_url: str) -> None:
    """The interleaving the race test hit with ten agents at once: a worker finishing a
    job (running -> succeeded, then the next stage queued) and a worker claiming a queued
    job (queued -> running). With counts updated row by row, the finisher held
    job/running and wanted job/queued while the claimer held job/queued and wanted
    job/running: PostgreSQL aborted one of them. Neither may block on the counts now."""
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        done_soon, waiting = _task(conn, 1), _task(conn, 2)
        jobs.enqueue_job(conn, done_soon.id, "analysis", NOW)
    with engine.begin() as conn:
        running = jobs.claim_next_job(conn, "w-finisher", NOW, 60)
        assert running is not None and running.task_id == done_soon.id
        jobs.enqueue_job(conn, waiting.id, "analysis", NOW)

    errors: list[BaseException] = []
    claimed: list[Any] = []
    claim_done, may_commit = threading.Event(), threading.Event()
    claimer_pid: list[int] = []

    def claimer() -> None:
        try:
            with engine.connect() as conn, conn.begin():
                claimer_pid.append(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
                claimed.append(jobs.claim_next_job(conn, "w-claimer", NOW, 60))
                claim_done.set()
                assert may_commit.wait(60)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            claim_done.set()

    with engine.connect() as finisher, finisher.begin():
        finished = jobs.finish_job(
            finisher, running.id, running.run_id, JobStatus.SUCCEEDED, NOW + 1
        )
        assert finished
        thread = threading.Thread(target=claimer)
        thread.start()
        # The claim either completes (no counts lock taken before commit) or blocks on
        # the finisher's lock (the 0002 triggers); either way the finisher goes on then.
        deadline = time.monotonic() + 60
        while not claim_done.is_set() and not (
            claimer_pid and _waiting_on_a_lock(engine, claimer_pid[0])
        ):
            assert time.monotonic() < deadline, "the claim neither finished nor waited"
            time.sleep(0.01)
        try:
            jobs.enqueue_job(finisher, done_soon.id, "implementation", NOW + 1)
            finisher.execute(
                tasks_table.update()
                .where(tasks_table.c.id == done_soon.id)
                .values(stage=Stage.IMPLEMENTATION.value)
            )
        finally:
            may_commit.set()
    thread.join(60)
    assert not errors, f"the claim failed: {errors[0]!r}"
    assert claimed and claimed[0] is not None and claimed[0].task_id == waiting.id

    stages, statuses = _truth(engine)
    assert statuses == {"succeeded": 1, "running": 1, "queued": 1}
    assert stages == {"analysis": 1, "implementation": 1}
    assert _counted(engine) == (stages, statuses)
    engine.dispose()


@pytest.mark.timeout(120)
def test_counts_applied_at_commit_match_the_tables_after_savepoints_and_bare_sql(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        made = [_task(conn, n) for n in range(4)]
        for task in made:
            jobs.enqueue_job(conn, task.id, "analysis", NOW)
        # A rolled-back savepoint's changes leave the counts alone...
        savepoint = conn.begin_nested()
        update_task(conn, made[0], NOW, stage=Stage.REVIEW)
        jobs.cancel_task_jobs(conn, made[0].id, NOW)
        savepoint.rollback()
        # ...a released one's count, as does a status changed and changed back.
        with conn.begin_nested():
            update_task(conn, made[1], NOW, stage=Stage.BLOCKED)
        claimed = jobs.claim_next_job(conn, "w", NOW, 60)
        assert claimed is not None
        jobs.finish_job(conn, claimed.id, claimed.run_id, JobStatus.SUCCEEDED, NOW)
    assert _counted(engine) == _truth(engine)

    # An operator's plain SQL, one statement per transaction, is counted too.
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("UPDATE jobs SET status = 'failed' WHERE task_id = :t"), {"t": made[2].id}
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("DELETE FROM jobs WHERE task_id = :t"), {"t": made[3].id}
        )
    stages, statuses = _truth(engine)
    assert statuses == {"queued": 1, "succeeded": 1, "failed": 1}
    assert stages == {"analysis": 3, "blocked": 1}
    assert _counted(engine) == (stages, statuses)
    engine.dispose()
