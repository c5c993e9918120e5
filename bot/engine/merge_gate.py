"""What both merge modes share: the repo's merge lease (the serial gate), heartbeating a
long merge, blocking, and finishing a merge (record it, delete the merged branch, then
deploy or park)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from sqlalchemy import Connection

from bot.engine import releasing, stages
from bot.engine.branches import delete_merged_branch
from bot.services import Services
from state import jobs
from state.machine import Trigger, decide
from state.models import Job, JobStatus, Stage, Task
from state.store import add_event, get_task, update_task

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_WAIT_SECONDS = 0.5
LEASE_TTL_SECONDS = 24 * 3600.0  # shown in /tasks; a live holder keeps the lease anyway


def take_lease(conn: Connection, job: Job, task_id: int, now: float) -> Task | None:
    """The task, once it holds its repo's merge lease; None when stopping or in line (the
    job then waits its turn in the queue)."""
    task = get_task(conn, task_id)
    # A merge that had begun (a crash, then this re-run) goes on whatever the stop says:
    # its stop is deferred until the window closes, which only this job can do.
    resuming = task is not None and task.merge_initiated_at is not None and task.merged_at is None
    if task is None or task.terminal or (task.cancel_requested_at is not None and not resuming):
        # Never leave a running merge job behind a stop: it would hold the window open.
        jobs.finish_job(conn, job.id, job.run_id or "", JobStatus.CANCELLED, now)
        return None
    if not jobs.acquire_lease(conn, task.repo, task.id, now, LEASE_TTL_SECONDS):
        jobs.defer_job(conn, job, now + LEASE_WAIT_SECONDS)  # wait our turn, in order
        return None
    return task


async def keeping_job_lease(svc: Services, job: Job, work: Awaitable[T]) -> T:
    """Await `work` while heartbeating the job: a merge may outlast `lease_seconds`, and
    the reaper must not hand a job that is still merging to another worker."""
    lease = svc.settings.workers.lease_seconds

    async def beat() -> None:
        while True:
            await asyncio.sleep(max(0.5, lease / 3))
            await svc.store.run(jobs.heartbeat, job.id, job.run_id or "", svc.clock.now(), lease)

    beating = asyncio.create_task(beat())
    try:
        return await work
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


def block_merge(
    conn: Connection, job: Job, task_id: int, reason: str, now: float, kind: str = "merge_blocked"
) -> Task | None:
    """The merge will not happen (conflict, failing check, refusal, timeout): the window
    closes, the lease goes to the next task, the task is `blocked` with the reason."""
    task = get_task(conn, task_id)
    if task is None:
        return None
    task = update_task(conn, task, now, merge_initiated_at=None)
    jobs.release_lease(conn, task.id)
    jobs.finish_job(conn, job.id, job.run_id or "", JobStatus.FAILED, now, error=reason)
    if task.cancel_requested_at is not None or task.terminal:
        return task  # a deferred stop applies now that the window closed
    add_event(conn, task.id, kind, now, reason=reason)
    decision = decide(task, Trigger.BLOCK, now=now, reason=reason)
    return update_task(conn, task, now, **decision.changes) if decision.allowed else task


async def finish_merge(svc: Services, job: Job, task: Task, sha: str | None) -> None:
    """Record the merge, delete the merged task branch, then deploy, park or finish."""
    repo = svc.repo(task.repo)
    deploy = (repo.deploy_command, repo.self_hosting) if repo else ("", False)
    after = await svc.store.run_until_current(
        _finish_merge, job, task.id, sha, svc.clock.now(), deploy
    )
    svc.wake_workers()
    if after is None:
        return
    where = stages.log_context(after.key, job, sha=sha, next_stage=after.stage.value)
    log.info("merged", extra=where)
    await delete_merged_branch(svc, after)
    if after.stage is Stage.DONE:
        await releasing.after_done(svc, after)


def _finish_merge(
    conn: Connection, job: Job, task_id: int, sha: str | None, now: float, deploy: tuple[str, bool]
) -> Task | None:
    task = get_task(conn, task_id)
    if task is None:
        return None
    task = update_task(conn, task, now, merged_at=now, merge_sha=sha)
    add_event(conn, task.id, "merged", now, sha=sha, pull_request=task.pr_number)
    jobs.finish_job(conn, job.id, job.run_id or "", JobStatus.SUCCEEDED, now, exit_code=0)
    if task.cancel_requested_at is not None:
        return task  # a deferred stop: no later stage starts; the finalizer cancels
    return _into_deploy(conn, stages.advance(conn, task, now), now, deploy)


def _into_deploy(conn: Connection, task: Task, now: float, deploy: tuple[str, bool]) -> Task:
    command, self_hosting = deploy
    if task.stage is not Stage.DEPLOY:
        return task
    if not command:
        return stages.advance(conn, task, now)  # nothing to deploy: straight to done
    if self_hosting:
        add_event(conn, task.id, "awaiting_confirm_deploy", now)
        return update_task(conn, task, now, awaiting_confirm=True)
    jobs.enqueue_job(conn, task.id, Stage.DEPLOY.value, now)
    return task
