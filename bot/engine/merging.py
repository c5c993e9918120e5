"""The built-in merge and deploy steps, behind the repo's merge lease (the serial gate).

`[[repos]] merge = "push"` merges the task branch into the default branch in a scratch
worktree and pushes; `merge = "pull_request"` merges through the forge
(`bot/engine/pull_requests.py`). Either way the merged task branch is deleted after.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from bot.engine import pull_requests, stages
from bot.engine.merge_gate import block_merge, finish_merge, keeping_job_lease, take_lease
from bot.gitops import in_repo, repo_spec
from bot.services import Services
from integrations import git
from state import jobs
from state.models import Job, JobStatus, Task
from state.store import add_event, get_task, update_task

log = logging.getLogger(__name__)


async def run_merge(svc: Services, job: Job, task: Task) -> None:
    """Take the lease (or wait in line), merge, then deploy or park."""
    found = svc.forge_for(task.repo)
    if found is not None:
        forge, repo = found
        await pull_requests.run_pr_merge(svc, job, task, forge, repo)
        return
    settings = svc.repo(task.repo)
    if settings is not None and settings.merge == "pull_request":
        # Never push straight to the default branch of a repo that merges through pull
        # requests (start-up refuses this; a port swapped in by hand could still do it).
        reason = f"no forge {settings.forge!r} to merge the pull request through"
        await svc.store.run_until_current(block_merge, job, task.id, reason, svc.clock.now())
        return
    await run_push_merge(svc, job, task)


async def run_push_merge(svc: Services, job: Job, task: Task) -> None:
    """Merge in a scratch worktree and push the default branch."""
    started = await svc.store.run(_begin_merge, job, task.id, svc.clock.now())
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
        result = await keeping_job_lease(svc, job, merging)
    except git.GitError as exc:
        await _retry(svc, job, task.id, f"merge failed: {exc}")
        return
    if not result.merged:
        reason = f"merge conflict: {result.conflict}"
        now = svc.clock.now()
        await svc.store.run_until_current(block_merge, job, task.id, reason, now, "merge_conflict")
        svc.wake_workers()
        return
    await finish_merge(svc, job, started, result.sha)


def _begin_merge(conn: Connection, job: Job, task_id: int, now: float) -> Task | None:
    task = take_lease(conn, job, task_id, now)
    if task is None or task.merge_initiated_at is not None:
        return task
    started = update_task(conn, task, now, merge_initiated_at=now)
    add_event(conn, task.id, "merge_started", now, branch=task.branch)
    return started


async def _retry(svc: Services, job: Job, task_id: int, reason: str) -> None:
    after = await svc.store.run_until_current(
        _merge_failed, job, task_id, reason, svc.clock.now(), stages._policy(svc)
    )
    svc.wake_workers()
    if after is not None:
        stages.log_settled(job, after, None, reason, retries=svc.settings.workers.retries)


def _merge_failed(
    conn: Connection, job: Job, task_id: int, reason: str, now: float, policy: tuple[int, float]
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
