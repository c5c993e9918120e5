"""Merging through the forge's pull requests (`[[repos]] merge = "pull_request"`).

After the implementation stage pushes, the task's pull request is opened (or updated)
and recorded on the task. The merge stage holds the repo's merge lease, asks the forge
whether the pull request is mergeable and, while checks or reviews are outstanding,
hands its job back to the queue with a growing delay (no worker waits, and a STOP in
between resets at once: waiting is not critical). Once mergeable, `merge_initiated_at`
is set **before** the merge call: from there a STOP is deferred, as in push mode.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import Connection

from bot.engine.merge_gate import block_merge, finish_merge, keeping_job_lease, take_lease
from bot.engine.pr_open import ensure_pull_request
from bot.services import Services
from bot.settings import RepoSettings
from integrations.forges.base import (
    Forge,
    ForgeError,
    Mergeability,
    MergeMethod,
    MergeRefused,
    MergeState,
    PullRequest,
    PullRequestState,
)
from state import jobs
from state.models import Job, JobStatus, Task
from state.store import add_event, events_for_task, get_task, original_key, update_task

log = logging.getLogger(__name__)

POLL_MIN_SECONDS = 0.5
POLL_MAX_SECONDS = 30.0
WAITING = "merge_waiting"

# -- pure decisions -------------------------------------------------------------------


def next_poll(waited: float) -> float:
    """Seconds until the next mergeability read: a quarter of the wait so far, bounded."""
    return min(POLL_MAX_SECONDS, max(POLL_MIN_SECONDS, waited / 4))


@dataclass(frozen=True)
class Next:
    """What the merge stage does after reading the mergeability."""

    action: str  # "merge" | "wait" | "block"
    reason: str = ""
    delay: float = 0.0


def decide_next(verdict: Mergeability, *, waited: float, timeout: float) -> Next:
    """Merge, wait (bounded by `merge_timeout_seconds`) or block, from the forge's answer."""
    if verdict.state is MergeState.MERGEABLE:
        return Next("merge", verdict.reason)
    if verdict.state is MergeState.BLOCKED:
        return Next("block", verdict.reason or "the forge will not merge it")
    if waited >= timeout:
        why = verdict.reason or verdict.state.value
        return Next("block", f"not mergeable after {timeout:g} s: {why}")
    return Next("wait", verdict.reason, next_poll(waited))


def forge_failure(forge: str, exc: ForgeError) -> Mergeability:
    """A forge that failed to answer: wait when it may answer later (5xx, timeout, rate
    limit); block when it refused for good (a 4xx: no access, nothing to merge, …)."""
    status = exc.status
    if status is None or status >= 500 or status == 429 or exc.retry_after is not None:
        return Mergeability(MergeState.PENDING, f"{forge} could not be asked: {exc}")
    return Mergeability(MergeState.BLOCKED, str(exc))


# -- the merge stage ------------------------------------------------------------------------


async def run_pr_merge(
    svc: Services, job: Job, task: Task, forge: Forge, repo: RepoSettings
) -> None:
    """Take the lease, wait for mergeable (the job goes back to the queue between reads),
    merge inside the critical window, record the merge commit."""
    now = svc.clock.now()
    started = await svc.store.run(take_lease, job, task.id, now)
    if started is None:
        return
    task = started
    since = await svc.store.run(_waiting_since, job, task.id, now)
    if task.merge_initiated_at is not None:
        await _resume_merge(svc, job, task, forge, repo)
        return
    number = task.pr_number or 0
    try:
        if number and await _closed_before_retry(svc, job, task, forge, repo, number):
            number = 0  # opened afresh below
        number = number or (await ensure_pull_request(svc, task, forge, repo)).number
        # Heartbeat meanwhile: a forge that retries and backs off may outlast the lease.
        verdict = await keeping_job_lease(svc, job, forge.mergeability(repo.forge_repo, number))
    except ForgeError as exc:
        verdict = forge_failure(forge.name, exc)
    step = decide_next(verdict, waited=now - since, timeout=repo.merge_timeout_seconds)
    if step.action == "wait":
        await svc.store.run_until_current(_wait_again, job, task.id, now, step.delay, step.reason)
    elif step.action == "block":
        await _block(svc, job, task, step.reason)
    else:
        await _merge_now(svc, job, task, forge, repo, number)


async def _closed_before_retry(
    svc: Services, job: Job, task: Task, forge: Forge, repo: RepoSettings, number: int
) -> bool:
    """A retry of a task whose pull request a person closed unmerged: that one stays
    closed (a human's decision on it) and the merge stage opens a new one. Only the pull
    request the retry found: one closed by hand while this retry waits blocks again."""
    retried = await svc.store.run_read(_retried_pull_request, job, task.id)
    if retried != number:
        return False
    pr = await forge.pull_request(repo.forge_repo, number)
    if pr.state is not PullRequestState.CLOSED:
        return False
    log.info(
        "pull request closed by hand: opening a new one",
        extra={"task": original_key(task.key), "number": number},
    )
    await svc.store.run(
        add_event, task.id, "pull_request_closed_outside", svc.clock.now(), number=number
    )
    return True


def _retried_pull_request(conn: Connection, job: Job, task_id: int) -> int | None:
    """The pull request number the retry that queued this job found on the task."""
    for event in reversed(events_for_task(conn, task_id)):
        if event["kind"] == "retry_requested" and event["detail"].get("job") == job.id:
            found = event["detail"].get("pull_request")
            return found if isinstance(found, int) else None
    return None


def _waiting_since(conn: Connection, job: Job, task_id: int, now: float) -> float:
    """When this merge job began waiting for its pull request (recorded once)."""
    for event in reversed(events_for_task(conn, task_id)):
        if event["kind"] == WAITING and event["detail"].get("job") == job.id:
            return float(event["at"])
    add_event(conn, task_id, WAITING, now, job=job.id)
    return now


def _wait_again(
    conn: Connection, job: Job, task_id: int, now: float, delay: float, reason: str
) -> None:
    """Back to the queue for `delay` seconds, the lease kept; a STOP meanwhile ends the
    job (the window closes, the stop applies). A refused merge call waits too: the
    merge did not happen, so its window closes here."""
    task = get_task(conn, task_id)
    if task is not None and task.merge_initiated_at is not None and task.merged_at is None:
        task = update_task(conn, task, now, merge_initiated_at=None)
    if task is None or task.terminal or task.cancel_requested_at is not None:
        jobs.finish_job(conn, job.id, job.run_id or "", JobStatus.CANCELLED, now, error=reason)
        return
    jobs.defer_job(conn, job, now + delay)


async def _block(svc: Services, job: Job, task: Task, reason: str) -> None:
    log.info("pull request blocked", extra={"task": original_key(task.key), "reason": reason})
    await svc.store.run_until_current(block_merge, job, task.id, reason, svc.clock.now())
    svc.wake_workers()


async def _merge_now(
    svc: Services, job: Job, task: Task, forge: Forge, repo: RepoSettings, number: int
) -> None:
    initiated = await svc.store.run_until_current(_initiate, job, task.id, number, svc.clock.now())
    if initiated is None:
        return
    await _call_merge(svc, job, initiated, forge, repo)


def _initiate(conn: Connection, job: Job, task_id: int, number: int, now: float) -> Task | None:
    """`merge_initiated_at` before the merge call: the critical window opens here."""
    task = get_task(conn, task_id)
    if task is None or task.terminal or task.cancel_requested_at is not None:
        jobs.finish_job(conn, job.id, job.run_id or "", JobStatus.CANCELLED, now)
        return None
    add_event(conn, task.id, "merge_started", now, branch=task.branch, pull_request=number)
    return update_task(conn, task, now, merge_initiated_at=now)


async def _call_merge(
    svc: Services, job: Job, task: Task, forge: Forge, repo: RepoSettings
) -> None:
    number = task.pr_number or 0
    try:
        sha = task.branch_sha or (await forge.pull_request(repo.forge_repo, number)).head_sha
        method = MergeMethod(repo.merge_method)
        merge = forge.merge(repo.forge_repo, number, method=method, sha=sha)
        merged = await keeping_job_lease(svc, job, merge)
    except MergeRefused as exc:
        if exc.head_changed:
            await _block(svc, job, task, "the branch moved since conveyor pushed it")
            return
        # Not merged ("try again later", "base branch was modified"): ask again, bounded.
        await _refused(svc, job, task, repo, str(exc))
        return
    except ForgeError as exc:
        log.warning("merge call failed", extra={"task": original_key(task.key), "error": str(exc)})
        await svc.store.run(
            add_event, task.id, "merge_call_failed", svc.clock.now(), error=str(exc)
        )
        await _resume_merge(svc, job, task, forge, repo)
        return
    await finish_merge(svc, job, task, merged)


async def _refused(svc: Services, job: Job, task: Task, repo: RepoSettings, reason: str) -> None:
    now = svc.clock.now()
    await svc.store.run(add_event, task.id, "merge_refused", now, reason=reason)
    since = await svc.store.run(_waiting_since, job, task.id, now)
    if now - since >= repo.merge_timeout_seconds:
        await _block(svc, job, task, reason)
        return
    await svc.store.run_until_current(
        _wait_again, job, task.id, now, next_poll(now - since), reason
    )


async def _resume_merge(
    svc: Services, job: Job, task: Task, forge: Forge, repo: RepoSettings
) -> None:
    """A merge call whose answer was lost (a forge error, a restart): merged or not is
    unknown, so the window stays open and this job keeps running until the pull request
    tells. Merged: finished. Still open: merged again, unless a STOP is waiting, which
    then applies (the window closes with nothing merged)."""
    pr = await keeping_job_lease(svc, job, _read_back(forge, repo.forge_repo, task.pr_number or 0))
    if pr.state is PullRequestState.MERGED and pr.merge_sha:
        await finish_merge(svc, job, task, pr.merge_sha)
    elif pr.state is PullRequestState.CLOSED:
        await _block(svc, job, task, "the pull request was closed during the merge")
    elif (current := await svc.store.run_read(get_task, task.id)) and current.cancel_requested_at:
        reason = "not merged; a STOP was waiting"
        await svc.store.run_until_current(_wait_again, job, task.id, svc.clock.now(), 0, reason)
    else:
        await _call_merge(svc, job, task, forge, repo)


async def _read_back(forge: Forge, forge_repo: str, number: int) -> PullRequest:
    """The pull request, asked again with a growing delay until the forge answers."""
    delay = POLL_MIN_SECONDS
    while True:
        try:
            return await forge.pull_request(forge_repo, number)
        except ForgeError as exc:
            log.warning("pull request not read back", extra={"error": str(exc)})
        await asyncio.sleep(delay)
        delay = min(POLL_MAX_SECONDS, delay * 2)
