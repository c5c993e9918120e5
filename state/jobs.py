"""Jobs (queued → running → succeeded/failed/cancelled) and the per-repo merge lease."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)

from state.models import Job as Job
from state.models import JobStatus, ServerIdentity, StopStatus
from state.prepared import Prepared
from state.schema import jobs, merge_leases, stop_records, tasks
from state.store import insert_ignore

_LIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)

# Statements built once, values bound at execution (see `state.store.per_dialect`).
# The live statuses bound one by one, not as an expanding list: the driver runs it as is.
_IS_LIVE = jobs.c.status.in_([literal(s) for s in _LIVE])
_ENQUEUE = Prepared(jobs.insert().returning(jobs))
_JOB_BY_ID = Prepared(select(jobs).where(jobs.c.id == bindparam("_id")))
_OF_TASK = Prepared(select(jobs).where(jobs.c.task_id == bindparam("_task")).order_by(jobs.c.id))
_LIVE_OF_TASK = Prepared(
    select(jobs).where(jobs.c.task_id == bindparam("_task"), _IS_LIVE).order_by(jobs.c.id)
)
_CANCEL_OF_TASK = Prepared(
    update(jobs)
    .where(jobs.c.task_id == bindparam("_task"), _IS_LIVE)
    .values(
        status=JobStatus.CANCELLED.value,
        finished_at=bindparam("_now"),
        lease_expires_at=None,
    )
)
_RELEASE_LEASES = Prepared(delete(merge_leases).where(merge_leases.c.task_id == bindparam("_task")))
_LEASE_OF_TASK = Prepared(
    select(merge_leases.c.repo).where(merge_leases.c.task_id == bindparam("_task"))
)


def enqueue_job(
    conn: Connection,
    task_id: int,
    stage: str,
    now: float,
    *,
    attempt: int = 1,
    run_after: float | None = None,
) -> Job:
    """Queue a job for a task's stage."""
    row = _ENQUEUE.first(
        conn,
        {
            "task_id": task_id,
            "stage": stage,
            "status": JobStatus.QUEUED.value,
            "attempt": attempt,
            "run_after": now if run_after is None else run_after,
            "created_at": now,
        },
    )
    assert row is not None  # a plain INSERT … RETURNING returns its row
    return Job.from_row(row)


def get_job(conn: Connection, job_id: int) -> Job | None:
    row = _JOB_BY_ID.first(conn, {"_id": job_id})
    return Job.from_row(row) if row else None


def jobs_for_task(conn: Connection, task_id: int) -> list[Job]:
    return [Job.from_row(r) for r in _OF_TASK.rows(conn, {"_task": task_id})]


def live_jobs_for_task(conn: Connection, task_id: int) -> list[Job]:
    rows = _LIVE_OF_TASK.rows(conn, {"_task": task_id})
    return [Job.from_row(r) for r in rows]


def claim_next_job(
    conn: Connection,
    worker_id: str,
    now: float,
    lease_seconds: float,
    *,
    server: ServerIdentity | None = None,
) -> Job | None:
    """Atomically take the queued job of a live task that has been due longest (oldest
    run_after, then lowest id; SKIP LOCKED on PostgreSQL), recording the server (and
    its host) that runs it.

    The order is the (status, run_after) index's own, so the claim reads only the due
    queued jobs. Ordered by id alone, PostgreSQL at 1M tasks walked the primary key
    through every finished job (1.4 s a claim; bench/README.md, queue_scale)."""
    candidate = (
        select(jobs.c.id)
        .join(tasks, tasks.c.id == jobs.c.task_id)
        .where(
            jobs.c.status == JobStatus.QUEUED.value,
            jobs.c.run_after <= now,
            tasks.c.cancelled_at.is_(None),
        )
        .order_by(jobs.c.run_after, jobs.c.id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True, of=jobs)
    job_id = conn.execute(candidate).scalar()
    if job_id is None:
        return None
    row = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            run_id=uuid.uuid4().hex,
            worker_id=worker_id,
            server_id=server.id if server else None,
            host=server.host if server else None,
            lease_expires_at=now + lease_seconds,
            heartbeat_at=now,
            started_at=now,
        )
        .returning(jobs)
    ).first()
    return Job.from_row(row) if row else None


def next_due_at(conn: Connection) -> float | None:
    """When the next queued job falls due (None: the queue is empty)."""
    due = conn.execute(
        select(func.min(jobs.c.run_after)).where(jobs.c.status == JobStatus.QUEUED.value)
    ).scalar()
    return None if due is None else float(due)


def _running(job_id: int, run_id: str) -> Any:
    return and_(
        jobs.c.id == job_id, jobs.c.run_id == run_id, jobs.c.status == JobStatus.RUNNING.value
    )


def record_process(
    conn: Connection,
    job_id: int,
    run_id: str,
    *,
    pid: int,
    pgid: int,
    start_time: int,
    log_path: str,
) -> bool:
    """Remember the spawned process; False if the job is no longer this run's."""
    result = conn.execute(
        update(jobs)
        .where(_running(job_id, run_id))
        .values(pid=pid, pgid=pgid, proc_start_time=start_time, log_path=log_path)
    )
    return result.rowcount == 1


def heartbeat(conn: Connection, job_id: int, run_id: str, now: float, lease_seconds: float) -> bool:
    """Extend the lease; False tells the worker its job was cancelled or taken away."""
    result = conn.execute(
        update(jobs)
        .where(_running(job_id, run_id))
        .values(heartbeat_at=now, lease_expires_at=now + lease_seconds)
    )
    return result.rowcount == 1


def finish_job(
    conn: Connection,
    job_id: int,
    run_id: str,
    status: JobStatus,
    now: float,
    *,
    exit_code: int | None = None,
    error: str | None = None,
) -> bool:
    """Settle a running job; a report for a job no longer running (cancelled) is ignored."""
    result = conn.execute(
        update(jobs)
        .where(_running(job_id, run_id))
        .values(
            status=status.value,
            exit_code=exit_code,
            error=error,
            finished_at=now,
            lease_expires_at=None,
        )
    )
    return result.rowcount == 1


def cancel_task_jobs(conn: Connection, task_id: int, now: float) -> int:
    """Every non-terminal job of the task → cancelled (terminal for good)."""
    return _CANCEL_OF_TASK.count(conn, {"_task": task_id, "_now": now})


def expired_jobs(conn: Connection, now: float) -> list[Job]:
    rows = conn.execute(
        select(jobs).where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at < now)
    )
    return [Job.from_row(r) for r in rows]


def requeue_expired(conn: Connection, job: Job, now: float) -> bool:
    """Put a job whose lease expired back in the queue: never a cancelled job, never one
    whose task has an open stop or is terminal. The conditions live in the UPDATE itself."""
    live_task = exists().where(
        tasks.c.id == jobs.c.task_id,
        tasks.c.cancelled_at.is_(None),
        tasks.c.stage.not_in(("done", "cancelled")),
    )
    return _back_to_queue(conn, job, now, jobs.c.lease_expires_at < now, live_task)


WINDOW_STAGES = ("merge", "deploy")


def _back_to_queue(conn: Connection, job: Job, now: float, *conditions: Any) -> bool:
    """Running → queued for a fresh claim, unless the task is being stopped. A merge or
    deploy job whose stop is *deferred* does go back: its window must close (the merge
    settled, never done twice) before the finalizer can apply that stop."""
    open_stop = exists().where(
        stop_records.c.task_id == jobs.c.task_id,
        or_(
            stop_records.c.status == StopStatus.OPEN.value,
            and_(
                stop_records.c.status == StopStatus.DEFERRED.value,
                jobs.c.stage.not_in(WINDOW_STAGES),
            ),
        ),
    )
    result = conn.execute(
        update(jobs)
        .where(_running(job.id, job.run_id or ""), ~open_stop, *conditions)
        .values(
            status=JobStatus.QUEUED.value,
            run_id=None,
            worker_id=None,
            server_id=None,
            host=None,
            pid=None,
            pgid=None,
            proc_start_time=None,
            lease_expires_at=None,
            run_after=now,
        )
    )
    return result.rowcount == 1


def running_jobs(conn: Connection, *, worker_prefix: str | None = None) -> list[Job]:
    query = select(jobs).where(jobs.c.status == JobStatus.RUNNING.value)
    if worker_prefix:
        query = query.where(jobs.c.worker_id.like(worker_prefix + "%"))
    return [Job.from_row(r) for r in conn.execute(query.order_by(jobs.c.id))]


def count_attempts(conn: Connection, task_id: int, stage: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(jobs)
            .where(jobs.c.task_id == task_id, jobs.c.stage == stage)
        ).scalar_one()
    )


# -- merge lease ------------------------------------------------------------------------


def acquire_lease(conn: Connection, repo: str, task_id: int, now: float, ttl: float) -> bool:
    """Take (or keep) the repo's merge lease; an expired lease may be taken over."""
    conn.execute(
        insert_ignore(conn, merge_leases).values(
            repo=repo, task_id=task_id, acquired_at=now, expires_at=now + ttl
        )
    )
    result = conn.execute(
        update(merge_leases)
        .where(
            merge_leases.c.repo == repo,
            or_(merge_leases.c.task_id == task_id, merge_leases.c.expires_at < now),
        )
        .values(task_id=task_id, expires_at=now + ttl)
    )
    return result.rowcount == 1


def release_lease(conn: Connection, task_id: int) -> int:
    """Release every lease the task holds; returns how many."""
    return _RELEASE_LEASES.count(conn, {"_task": task_id})


def lease_of_task(conn: Connection, task_id: int) -> str | None:
    repo: str | None = _LEASE_OF_TASK.value(conn, {"_task": task_id})
    return repo


def lease_holder(conn: Connection, repo: str) -> int | None:
    return conn.execute(select(merge_leases.c.task_id).where(merge_leases.c.repo == repo)).scalar()


def reap_expired_leases(conn: Connection, now: float) -> int:
    """Drop leases past expiry whose task is terminal (a live holder keeps renewing)."""
    terminal = exists().where(
        tasks.c.id == merge_leases.c.task_id, tasks.c.stage.in_(("done", "cancelled"))
    )
    return int(
        conn.execute(delete(merge_leases).where(merge_leases.c.expires_at < now, terminal)).rowcount
    )


def defer_job(conn: Connection, job: Job, run_after: float) -> bool:
    """Hand a claimed job back to the queue untouched (waiting for the merge lease)."""
    result = conn.execute(
        update(jobs)
        .where(_running(job.id, job.run_id or ""))
        .values(
            status=JobStatus.QUEUED.value,
            run_id=None,
            worker_id=None,
            server_id=None,
            host=None,
            run_after=run_after,
            lease_expires_at=None,
            started_at=None,
        )
    )
    return result.rowcount == 1


def requeue_interrupted(conn: Connection, job: Job, now: float) -> bool:
    """A running job whose worker went away (shutdown, crash) goes back to the queue,
    unless its task is being stopped: then the reset settles it."""
    return _back_to_queue(conn, job, now)


def overdue_jobs(conn: Connection, started_before: float) -> list[Job]:
    """Running jobs started before the cut-off (the watchdog's candidates)."""
    rows = conn.execute(
        select(jobs).where(
            jobs.c.status == JobStatus.RUNNING.value,
            jobs.c.started_at < started_before,
            jobs.c.pgid.is_not(None),
        )
    )
    return [Job.from_row(r) for r in rows]
