"""The built-in merge and deploy steps, behind the repo's merge lease (the serial gate)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from sqlalchemy import Connection

from bot.engine import releasing, stages
from bot.gitops import in_repo, repo_spec
from bot.services import Services
from integrations import git
from state import jobs
from state.machine import Trigger, decide
from state.models import Job, JobStatus, Stage, Task
from state.store import add_event, get_task, update_task

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_WAIT_SECONDS = 0.5
LEASE_TTL_SECONDS = 24 * 3600.0  # shown in /tasks; a live holder keeps the lease anyway


async def run_merge(svc: Services, job: Job, task: Task) -> None:
    """Take the lease (or wait in line), merge and push, then deploy or park."""
    now = svc.clock.now()
    started = await svc.store.run(_begin_merge, job, task.id, now)
    if started is None:
        return
    try:
        merging = in_repo(
            git.merge_branch,
            repo_spec(svc, task.repo),
            started.branch or "",
            f"Merge {started.branch} ({started.key}: {started.title})",
            svc.data_dir / "scratch",
        )
        result = await _keeping_job_lease(svc, job, merging)
    except git.GitError as exc:
        await _retry(svc, job, task.id, f"merge failed: {exc}")
        return
    if not result.merged:
        await _retry(svc, job, task.id, f"merge conflict: {result.conflict}", conflict=True)
        return
    repo = svc.repo(task.repo)
    deploy = (repo.deploy_command, repo.self_hosting) if repo else ("", False)
    after = await svc.store.run_until_current(
        _finish_merge, job, task.id, result.sha, svc.clock.now(), deploy
    )
    svc.wake_workers()
    if after is not None:
        where = stages.log_context(after.key, job, sha=result.sha, next_stage=after.stage.value)
        log.info("merged", extra=where)
    if after is not None and after.stage is Stage.DONE:
        await releasing.after_done(svc, after)


async def _keeping_job_lease(svc: Services, job: Job, work: Awaitable[T]) -> T:
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


def _begin_merge(conn: Connection, job: Job, task_id: int, now: float) -> Task | None:
    task = get_task(conn, task_id)
    if task is None or task.cancel_requested_at is not None or task.terminal:
        return None
    if not jobs.acquire_lease(conn, task.repo, task.id, now, LEASE_TTL_SECONDS):
        jobs.defer_job(conn, job, now + LEASE_WAIT_SECONDS)  # wait our turn, in order
        return None
    if task.merge_initiated_at is not None:
        return task
    started = update_task(conn, task, now, merge_initiated_at=now)
    add_event(conn, task.id, "merge_started", now, branch=task.branch)
    return started


def _finish_merge(
    conn: Connection, job: Job, task_id: int, sha: str | None, now: float, deploy: tuple[str, bool]
) -> Task | None:
    task = get_task(conn, task_id)
    if task is None:
        return None
    task = update_task(conn, task, now, merged_at=now, merge_sha=sha)
    add_event(conn, task.id, "merged", now, sha=sha)
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


async def _retry(
    svc: Services, job: Job, task_id: int, reason: str, *, conflict: bool = False
) -> None:
    after = await svc.store.run_until_current(
        _merge_failed, job, task_id, reason, conflict, svc.clock.now(), stages._policy(svc)
    )
    svc.wake_workers()
    if after is not None:
        stages.log_settled(job, after, None, reason, retries=svc.settings.workers.retries)


def _merge_failed(
    conn: Connection,
    job: Job,
    task_id: int,
    reason: str,
    conflict: bool,
    now: float,
    policy: tuple[int, float],
) -> Task | None:
    task = get_task(conn, task_id)
    if task is None:
        return None
    # The default branch is untouched: the window closes, the lease goes to the next task.
    task = update_task(conn, task, now, merge_initiated_at=None)
    jobs.release_lease(conn, task.id)
    jobs.finish_job(conn, job.id, job.run_id or "", JobStatus.FAILED, now, error=reason)
    if task.cancel_requested_at is not None:
        return task
    if conflict:
        add_event(conn, task.id, "merge_conflict", now, reason=reason)
        decision = decide(task, Trigger.BLOCK, now=now, reason=reason)
        return update_task(conn, task, now, **decision.changes) if decision.allowed else task
    return stages.retry_or_block(conn, job, task, now, reason=reason, policy=policy)


async def run_deploy(svc: Services, job: Job, task: Task) -> None:
    """The repo's deploy command as a process; exit 0 → done (lease released)."""
    repo = svc.repo(task.repo)
    command = repo.deploy_command if repo else ""
    if not command:
        await stages.settle(svc, job, task.id, exit_code=0, error=None)
        return
    cwd = task.worktree_path or str(repo.path if repo else ".")
    code = await stages.run_process(svc, job, task, command, cwd=cwd)
    if code is not None:
        await stages.settle(svc, job, task.id, exit_code=code, error=None)
