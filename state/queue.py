"""`GET /queue` read from the store in a handful of indexed queries."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from state.hosts import SILENT_AFTER_SECONDS, pending_summary
from state.models import ALL_STAGES, JobStatus, Stage, StopStatus
from state.schema import counts, jobs, pending_cleanups, stop_records, tasks
from state.store import original_key

RECENT_LIMIT = 10


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string."""
    return (
        None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    )


def queue_summary(
    conn: Connection,
    *,
    stop_enabled: bool,
    stop_repos: list[str],
    now: float | None = None,
    silent_after: float = SILENT_AFTER_SECONDS,
) -> dict[str, Any]:
    """The whole `/queue` document."""
    return {
        "tasks": _stage_counts(conn),
        "jobs": _job_counts(conn),
        "running": _running(conn),
        "stop": {
            "enabled": stop_enabled,
            "repos": list(stop_repos),
            "deferred": _deferred(conn),
            "in_progress": _in_progress(conn),
            "cleanup_pending": _cleanup_pending(conn),
            "host_pending": _host_pending(conn, now, silent_after),
            "recent": _recent(conn),
        },
    }


def _stage_counts(conn: Connection) -> dict[str, int]:
    found = _counts(conn, "task")
    return {stage.value: found.get(stage.value, 0) for stage in ALL_STAGES}


def _job_counts(conn: Connection) -> dict[str, int]:
    found = _counts(conn, "job")
    return {status.value: found.get(status.value, 0) for status in JobStatus}


def _counts(conn: Connection, kind: str) -> dict[str, int]:
    rows = conn.execute(select(counts.c.name, counts.c.n).where(counts.c.kind == kind))
    return {name: int(n) for name, n in rows}


def _running(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            tasks.c.key,
            tasks.c.pr_number,
            tasks.c.pr_url,
            jobs.c.id,
            jobs.c.stage,
            jobs.c.pid,
            jobs.c.started_at,
            jobs.c.host,
            jobs.c.server_id,
        )
        .join(tasks, tasks.c.id == jobs.c.task_id)
        .where(jobs.c.status == JobStatus.RUNNING.value)
        .order_by(jobs.c.id)
    )
    return [
        {
            "task": original_key(r.key),
            "job": r.id,
            "stage": r.stage,
            "pid": r.pid,
            "started_at": iso(r.started_at),
            "host": r.host,
            "server": r.server_id,
            # Pull-request mode: the task's pull request, once opened.
            **({"pr_number": r.pr_number, "pr_url": r.pr_url} if r.pr_url else {}),
        }
        for r in rows
    ]


def _stops(conn: Connection, status: StopStatus) -> Any:
    return conn.execute(
        select(tasks.c.key, tasks.c.stage, stop_records)
        .join(tasks, tasks.c.id == stop_records.c.task_id)
        .where(stop_records.c.status == status.value)
        .order_by(stop_records.c.requested_at)
    )


def _deferred(conn: Connection) -> list[dict[str, Any]]:
    return [
        {
            "task": original_key(r.key),
            "stop_id": r.id,
            "requested_at": iso(r.requested_at),
            "window": r.window or r.stage,
            "by": r.requested_by,
        }
        for r in _stops(conn, StopStatus.DEFERRED)
    ]


def _in_progress(conn: Connection) -> list[dict[str, Any]]:
    return [
        {
            "task": original_key(r.key),
            "stop_id": r.id,
            "requested_at": iso(r.requested_at),
            "steps": sorted(json.loads(r.steps or "{}")),
            "by": r.requested_by,
        }
        for r in _stops(conn, StopStatus.OPEN)
    ]


def _cleanup_pending(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(tasks.c.key, pending_cleanups)
        .join(tasks, tasks.c.id == pending_cleanups.c.task_id)
        .where(pending_cleanups.c.status == "pending")
        .order_by(pending_cleanups.c.id)
    )
    return [
        {
            "task": original_key(r.key),
            "step": r.step,
            "attempts": r.attempts,
            "last_error": r.last_error,
            "next_attempt_at": iso(r.next_attempt_at),
        }
        for r in rows
    ]


def _host_pending(conn: Connection, now: float | None, silent_after: float) -> list[dict[str, Any]]:
    """Reset steps waiting for the server that owns them (its agents, its data dir)."""
    rows = pending_summary(conn, time.time() if now is None else now, silent_after)
    for row in rows:
        row["since"] = iso(row["since"])
        row["owner_seen_at"] = iso(row["owner_seen_at"])
    return rows


def _recent(conn: Connection) -> list[dict[str, Any]]:
    # The newest cancelled tasks first, through the cancelled_at index, then their
    # stops through the task_id index: sorting every finished stop would grow with the
    # store. The status is compared through coalesce() (never NULL: the same test) so
    # that no index serves it: SQLite (no ANALYZE, a bound LIMIT) otherwise drove the
    # join from ix_stop_records_status, every done stop, 7-14 ms at 100k tasks and
    # growing with the store (bench/README.md, queue_scale).
    newest = (
        select(tasks.c.id, tasks.c.key, tasks.c.outcome, tasks.c.cancelled_at)
        .where(tasks.c.cancelled_at.is_not(None))
        .order_by(tasks.c.cancelled_at.desc())
        .limit(RECENT_LIMIT)
        .subquery()
    )
    cancelling = (StopStatus.DONE.value, StopStatus.OPEN.value)
    rows = conn.execute(
        select(newest, stop_records.c.requested_by, stop_records.c.id.label("stop_id"))
        .join(stop_records, stop_records.c.task_id == newest.c.id)
        # The stop that cancelled the task: done, or still posting its comment.
        .where(func.coalesce(stop_records.c.status, "").in_(cancelling))
        .order_by(newest.c.cancelled_at.desc(), stop_records.c.requested_at, stop_records.c.id)
    )
    return [
        {
            "task": original_key(r.key),
            "outcome": r.outcome,
            "cancelled_at": iso(r.cancelled_at),
            "by": r.requested_by,
            "stop_id": r.stop_id,
        }
        for r in rows
    ]


__all__ = ["queue_summary", "iso", "Stage"]
