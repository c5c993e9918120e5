"""`conveyor retry` / `POST /tasks/{ref}/retry`: a blocked task runs the stage it was
blocked in again, with fresh attempts (attempt 1, the full retry budget). Only a blocked
task; a deploy retried takes the repo's merge lease back first."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from bot.engine.merge_gate import LEASE_TTL_SECONDS
from state import jobs
from state.machine import Trigger, decide
from state.models import Stage, Task
from state.store import add_event, get_task, update_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryResult:
    outcome: str  # "queued" | "not_blocked" | "lease_busy" | "refused"
    task: Task
    stage: str | None = None
    job_id: int | None = None


def retry_blocked(conn: Connection, task_id: int, now: float, *, actor: str) -> RetryResult | None:
    """Queue the blocked stage again (compare-and-set on the task); None: no such task."""
    task = get_task(conn, task_id)
    if task is None:
        return None
    if task.stage is not Stage.BLOCKED:
        return RetryResult("not_blocked", task)
    stage = blocked_stage(conn, task)
    decision = decide(task, Trigger.RETRY, now=now, stage=stage)
    if stage is None or not decision.allowed:
        return RetryResult("refused", task, stage)
    if stage == Stage.DEPLOY.value and not jobs.acquire_lease(
        conn, task.repo, task.id, now, LEASE_TTL_SECONDS
    ):
        return RetryResult("lease_busy", task, stage)
    task = update_task(conn, task, now, **decision.changes)
    job = jobs.enqueue_job(conn, task.id, stage, now)
    # The pull request the retry found: if a person closed it, the merge stage opens a
    # fresh one (the retry is the operator saying "try again"), once.
    pr: dict[str, Any] = {} if task.pr_number is None else {"pull_request": task.pr_number}
    add_event(conn, task.id, "retry_requested", now, stage=stage, job=job.id, actor=actor, **pr)
    return RetryResult("queued", task, stage, job.id)


def blocked_stage(conn: Connection, task: Task) -> str | None:
    """The stage of the task's last job: the one that used up its retries."""
    found = jobs.jobs_for_task(conn, task.id)
    return found[-1].stage if found else None
