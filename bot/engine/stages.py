"""The agent stages (worktree, process, push) and settling a job's outcome with a
compare-and-set: advance, retry with backoff, or block."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from sqlalchemy import Connection

from bot.engine import agent_logs, pr_open, releasing
from bot.engine.branches import refuse_push_if_protected
from bot.engine.environment import agent_base
from bot.engine.task_names import task_names
from bot.engine.ticket_file import write_ticket_file
from bot.gitops import in_repo, off_loop, repo_spec
from bot.services import Services
from integrations import git
from integrations.errors import IntegrationError
from integrations.processes import AgentProcess, spawn_agent, stop_process_group
from state import jobs, stops
from state.errors import StaleVersionError
from state.machine import Trigger, decide
from state.models import AGENT_STAGES, Job, JobStatus, Stage, StopStatus, Task
from state.store import add_event, get_task, update_task

log = logging.getLogger(__name__)


def still_runnable(conn: Connection, job: Job) -> Task | None:
    # The re-check right before spawning: a stop may have landed since the claim.
    current = jobs.get_job(conn, job.id)
    task = get_task(conn, job.task_id)
    if current is None or current.status is not JobStatus.RUNNING or current.run_id != job.run_id:
        return None
    if task is None or task.terminal:
        return None
    if task.cancel_requested_at is not None and not _window_to_close(conn, job, task):
        return None
    return task


def _window_to_close(conn: Connection, job: Job, task: Task) -> bool:
    """A merge or deploy job re-run (after a crash) while its task's stop is deferred:
    it runs, so that the window closes and the finalizer can apply the stop."""
    if job.stage not in jobs.WINDOW_STAGES:
        return False
    record = stops.open_stop(conn, task.id)
    return record is not None and record.status is StopStatus.DEFERRED


# -- agent stages --------------------------------------------------------------------------


async def run_agent_stage(svc: Services, job: Job, task: Task) -> None:
    """Worktree, agent process, push; then advance, retry or block."""
    try:
        made = await ensure_worktree(svc, task)
    except (IntegrationError, StaleVersionError) as exc:
        await settle(svc, job, task.id, exit_code=None, error=f"worktree: {exc}")
        return
    # Making the worktree takes a while (fetch, checkout): re-check right before spawning.
    current = None if made is None else await svc.store.run_read(still_runnable, job)
    if current is None:
        log.info("job not started: stopped while its worktree was made", extra={"job": job.id})
        return  # the reset settles the job
    task = current
    command = getattr(svc.settings.agents, job.stage, "")
    if not command:
        await settle(svc, job, task.id, exit_code=0, error=None)
        return
    code = await run_process(svc, job, task, command, cwd=task.worktree_path or ".")
    if code is not None:
        await settle(svc, job, task.id, exit_code=code, error=None)


async def ensure_worktree(svc: Services, task: Task) -> Task | None:
    """The task's worktree and branch, made on its first agent stage; None when a stop
    landed meanwhile (the new worktree is removed again)."""
    # Another server's worktree lives in its data dir (maybe on another machine): this
    # server makes its own from the pushed branch; that server's sweep removes the old.
    if task.worktree_path and task.worktree_server in (None, svc.server.id):
        present: bool = await off_loop(_is_dir, task.worktree_path)
        if present:
            return task
    repo = repo_spec(svc, task.repo)
    names = await task_names(svc, task)
    try:
        tree = await in_repo(
            git.create_worktree, repo, svc.worktrees_root, names.directory, names.branch
        )
    except git.UnsafeBranchError:
        raise
    except git.GitError:  # a leftover of an earlier task of this ticket: use a fresh name
        tree = await in_repo(
            git.create_worktree,
            repo,
            svc.worktrees_root,
            f"{names.directory}-{task.id}",
            names.fallback_branch,
        )
    recorded = await svc.store.run(
        _record_worktree, task.id, tree, svc.clock.now(), svc.server.id or None
    )
    if recorded is None:  # the reset may be past its worktree step: undo our own work
        await in_repo(git.remove_worktree, repo, svc.worktrees_root, tree.path)
        with contextlib.suppress(git.GitError):
            await in_repo(git.delete_local_branch, repo, tree.branch)
    return recorded


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _record_worktree(
    conn: Connection, task_id: int, tree: git.Worktree, now: float, server_id: str | None
) -> Task | None:
    task = get_task(conn, task_id)
    if task is None or task.terminal or task.cancel_requested_at is not None:
        return None  # a stop got here first: never record a worktree on a stopping task
    done = update_task(
        conn,
        task,
        now,
        worktree_path=str(tree.path),
        branch=tree.branch,
        worktree_server=server_id,
    )
    add_event(conn, task_id, "worktree_created", now, path=str(tree.path), branch=tree.branch)
    return done


def agent_env(svc: Services, job: Job, task: Task, cwd: str, name: str) -> dict[str, str]:
    """The agent process contract's environment (`name`: the task's directory name)."""
    docs = svc.docs_dir(name)
    docs.mkdir(parents=True, exist_ok=True)
    ticket = write_ticket_file(docs, task)
    return {
        **agent_base(svc.settings, os.environ),
        "CONVEYOR_TASK_ID": str(task.id),
        "CONVEYOR_TASK_KEY": task.key,
        "CONVEYOR_STAGE": job.stage,
        "CONVEYOR_BRANCH": task.branch or "",
        "CONVEYOR_WORKTREE": task.worktree_path or cwd,
        "CONVEYOR_DOCS_DIR": str(docs),
        "CONVEYOR_ISSUE_TITLE": task.title,
        "CONVEYOR_ISSUE_URL": task.url,
        "CONVEYOR_TICKET_FILE": str(ticket),
        "CONVEYOR_RUN_ID": job.run_id or "",
        **({"CONVEYOR_PR_URL": task.pr_url} if task.pr_url else {}),
    }


async def run_process(svc: Services, job: Job, task: Task, command: str, *, cwd: str) -> int | None:
    """Spawn, record, wait with heartbeats; None when the job was taken away (a stop)."""
    name = (await task_names(svc, task)).directory
    log_path = agent_logs.job_log_path(svc.logs_dir(name), job.id)
    try:
        env = agent_env(svc, job, task, cwd, name)
        proc = spawn_agent(command, cwd=Path(cwd), env=env, log_path=log_path)
    except IntegrationError as exc:
        await settle(svc, job, task.id, exit_code=None, error=str(exc))
        return None
    svc.agents.register(job, task.id, proc)
    try:
        recorded = await svc.store.run(
            jobs.record_process,
            job.id,
            job.run_id or "",
            pid=proc.ref.pid,
            pgid=proc.ref.pgid,
            start_time=proc.ref.start_time,
            log_path=str(log_path),
        )
        if not recorded:  # a stop cancelled the job between the re-check and the spawn
            await stop_process_group(proc.ref, svc.settings.stop.grace_seconds, reap=proc.poll)
            return None
        log.info(
            "agent started", extra=log_context(task.key, job, pid=proc.ref.pid, log=str(log_path))
        )
        return await _wait(svc, job, proc)
    finally:
        svc.agents.unregister(job.id)


async def _wait(svc: Services, job: Job, proc: AgentProcess) -> int | None:
    settings = svc.settings.workers
    beat_every = max(0.5, settings.lease_seconds / 3)
    next_beat = svc.clock.monotonic() + beat_every
    while (code := proc.poll()) is None:
        await asyncio.sleep(0.05)
        if svc.clock.monotonic() >= next_beat:
            next_beat += beat_every
            ours = await svc.store.run(
                jobs.heartbeat, job.id, job.run_id or "", svc.clock.now(), settings.lease_seconds
            )
            if not ours:  # cancelled elsewhere (another process's stop): stop our agent
                await stop_process_group(proc.ref, svc.settings.stop.grace_seconds, reap=proc.poll)
                return None
    return code


# -- settling ------------------------------------------------------------------------------


async def settle(
    svc: Services, job: Job, task_id: int, *, exit_code: int | None, error: str | None
) -> None:
    """Exit 0: push and advance; otherwise retry with backoff, then block. The job's
    `error` says why it failed, with the agent's last lines; the server log says what
    happened next."""
    sha = None
    if exit_code == 0:
        try:
            sha = await _push(svc, task_id)
        except IntegrationError as exc:
            exit_code, error = None, f"push: {exc}"
    if sha is not None and job.stage in PR_STAGES:
        await pr_open.publish(svc, task_id)  # a pull request follows the pushed branch
    if exit_code not in (0, None) and error is None:
        error = await _failure_text(svc, job, exit_code)
    after = await svc.store.run_until_current(
        _settle_tx, job, task_id, exit_code, error, sha, svc.clock.now(), _policy(svc)
    )
    svc.wake_workers()
    if after is not None:
        log_settled(job, after, exit_code, error, retries=svc.settings.workers.retries)
    if after is not None and after.stage is Stage.DONE:
        await releasing.after_done(svc, after)


async def _failure_text(svc: Services, job: Job, exit_code: int) -> str:
    """`exit status 3` and the agent's last lines, from the log file the job recorded."""
    current = await svc.store.run_read(jobs.get_job, job.id)
    path = current.log_path if current is not None else None
    if not path:
        return f"exit status {exit_code}"
    return await off_loop(agent_logs.failure, exit_code, Path(path))


def log_context(task: str, job: Job, **more: object) -> dict[str, object]:
    return {"task": task, "stage": job.stage, "job": job.id, "attempt": job.attempt, **more}


def log_settled(
    job: Job, after: Task, exit_code: int | None, error: str | None, *, retries: int
) -> None:
    """One line per outcome: passed (and the stage it moved to), failed, retry, blocked."""
    where = log_context(after.key, job, exit_code=exit_code)
    if exit_code == 0:
        log.info("stage passed", extra={**where, "next_stage": after.stage.value})
        return
    reason = (error or f"exit status {exit_code}").splitlines()[0]
    log.warning("stage failed", extra={**where, "reason": reason})
    if after.stage is Stage.BLOCKED:
        log.warning("task blocked", extra={**where, "reason": reason})
    elif job.attempt <= retries:
        log.info("retry scheduled", extra={**where, "next_attempt": job.attempt + 1})


async def _push(svc: Services, task_id: int) -> str | None:
    task = await svc.store.run_read(get_task, task_id)
    if task is None or task.cancel_requested_at is not None or not task.branch:
        return None
    if not task.worktree_path:
        return None
    await refuse_push_if_protected(svc, task.repo, task.branch)
    return await in_repo(
        git.push_branch, repo_spec(svc, task.repo), Path(task.worktree_path), task.branch
    )


# After these stages pass and push, pull-request mode opens (or updates) the pull request.
PR_STAGES = frozenset({Stage.IMPLEMENTATION.value, Stage.REVIEW.value})


def _policy(svc: Services) -> tuple[int, float]:
    return svc.settings.workers.retries, svc.settings.workers.retry_backoff_seconds


def _settle_tx(
    conn: Connection,
    job: Job,
    task_id: int,
    exit_code: int | None,
    error: str | None,
    sha: str | None,
    now: float,
    policy: tuple[int, float],
) -> Task | None:
    task = get_task(conn, task_id)
    if task is None:
        return None
    if sha is not None and sha != task.branch_sha:
        task = update_task(conn, task, now, branch_sha=sha)  # always: the stop deletes by it
    if task.terminal or task.cancel_requested_at is not None:
        _settle_under_stop(conn, job, task, exit_code, error, now)
        return None
    if exit_code == 0:
        return _succeeded(conn, job, task, now)
    return _failed(conn, job, task, exit_code, error, now, policy)


def _settle_under_stop(
    conn: Connection, job: Job, task: Task, exit_code: int | None, error: str | None, now: float
) -> None:
    # A deferred stop waits for this very step to end: record how it ended (and start
    # nothing after it) so the window closes. An immediate reset settles the job itself
    # as cancelled: one terminal outcome per attempt either way.
    pending = stops.open_stop(conn, task.id)
    if pending is None or pending.status is not StopStatus.DEFERRED:
        return
    status = JobStatus.SUCCEEDED if exit_code == 0 else JobStatus.FAILED
    jobs.finish_job(conn, job.id, job.run_id or "", status, now, exit_code=exit_code, error=error)


def _succeeded(conn: Connection, job: Job, task: Task, now: float) -> Task | None:
    if not jobs.finish_job(conn, job.id, job.run_id or "", JobStatus.SUCCEEDED, now, exit_code=0):
        return None  # a late report for a job that is no longer running: ignored
    return advance(conn, task, now)


def advance(conn: Connection, task: Task, now: float) -> Task:
    """Move to the next stage and queue its job (merge and deploy are jobs too)."""
    decision = decide(task, Trigger.ADVANCE, now=now)
    if not decision.allowed:
        add_event(conn, task.id, "advance_refused", now, reason=decision.refusal)
        return task
    task = update_task(conn, task, now, **decision.changes)
    add_event(conn, task.id, "advanced", now, stage=task.stage.value)
    if task.stage in (*AGENT_STAGES, Stage.MERGE):
        jobs.enqueue_job(conn, task.id, task.stage.value, now)
    if task.stage is Stage.DONE:
        jobs.release_lease(conn, task.id)  # held from the merge gate through deploy to done
    return task


def _failed(
    conn: Connection,
    job: Job,
    task: Task,
    exit_code: int | None,
    error: str | None,
    now: float,
    policy: tuple[int, float],
) -> Task | None:
    if not jobs.finish_job(
        conn, job.id, job.run_id or "", JobStatus.FAILED, now, exit_code=exit_code, error=error
    ):
        return None
    reason = (error or f"exit status {exit_code}").splitlines()[0]  # the output stays in error
    return retry_or_block(conn, job, task, now, reason=reason, policy=policy)


def retry_or_block(
    conn: Connection, job: Job, task: Task, now: float, *, reason: str, policy: tuple[int, float]
) -> Task:
    """Queue the next attempt with backoff, or block the task when retries ran out."""
    retries, backoff = policy
    if job.attempt <= retries:
        run_after = now + backoff * (2 ** (job.attempt - 1))
        jobs.enqueue_job(
            conn, task.id, job.stage, now, attempt=job.attempt + 1, run_after=run_after
        )
        add_event(
            conn,
            task.id,
            "retry_scheduled",
            now,
            stage=job.stage,
            attempt=job.attempt + 1,
            reason=reason,
        )
        return task
    decision = decide(task, Trigger.BLOCK, now=now, reason=reason)
    if not decision.allowed:
        return task
    jobs.release_lease(conn, task.id)
    blocked = update_task(conn, task, now, **decision.changes)
    add_event(conn, task.id, "blocked", now, stage=job.stage, reason=reason)
    return blocked
