"""The task's pull request on the forge: opened (or updated) after a push, recorded on
the task (`pr_number`, `pr_url`, `CONVEYOR_PR_URL`), and closed with a comment on STOP
(never merged; a merged one stays merged)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

from bot.services import Services
from bot.settings import RepoSettings
from integrations.forges.base import Forge, ForgeError, PullRequest, PullRequestMerged
from state.models import Task
from state.store import add_event, get_task, original_key, update_task

log = logging.getLogger(__name__)

BODY = """\
{key}: {title}

Ticket: {url}

conveyor opened this pull request for {key}. It merges it ({method}) once {forge} \
reports it mergeable: required checks passed and required reviews given. A STOP on \
the ticket closes it unmerged and deletes its branch.
"""
STOP_COMMENT = (
    "conveyor stopped {key} ({why}): this pull request is closed without merging, and "
    "its branch {branch} is deleted."
)


def title_of(task: Task) -> str:
    key = original_key(task.key)
    return f"{key}: {task.title}" if task.title else key


def body_of(task: Task, repo: RepoSettings, forge: str) -> str:
    return BODY.format(
        key=original_key(task.key),
        title=task.title or "(no title)",
        url=task.url or "(no link)",
        method=repo.merge_method,
        forge=forge,
    )


# -- opening ------------------------------------------------------------------------------


async def publish(svc: Services, task_id: int) -> None:
    """Open or update the task's pull request after a push; a forge error is logged and
    the merge stage opens it later."""
    task = await svc.store.run_read(get_task, task_id)
    found = None if task is None else svc.forge_for(task.repo)
    if task is None or found is None or not task.branch or task.cancel_requested_at:
        return
    forge, repo = found
    try:
        await ensure_pull_request(svc, task, forge, repo)
    except ForgeError as exc:
        log.warning(
            "pull request not opened yet",
            extra={"task": original_key(task.key), "action": "open_pr", "error": str(exc)},
        )
        await svc.store.run(add_event, task.id, "pr_open_failed", svc.clock.now(), error=str(exc))


async def ensure_pull_request(
    svc: Services, task: Task, forge: Forge, repo: RepoSettings
) -> PullRequest:
    """Open the pull request (or find the open one and update it), recorded on the task."""
    pr = await forge.open_pull_request(
        repo.forge_repo,
        head=task.branch or "",
        base=repo.default_branch,
        title=title_of(task),
        body=body_of(task, repo, forge.name),
    )
    after = await svc.store.run_until_current(_record_pr, task.id, pr, svc.clock.now())
    if after is not None and after.cancel_requested_at is not None and not after.merge_initiated_at:
        # A STOP landed while the forge opened it: the reset may have looked already.
        await close_for_stop(svc, after, why="stopped while its pull request was opened")
    return pr


def _record_pr(conn: Connection, task_id: int, pr: PullRequest, now: float) -> Task | None:
    task = get_task(conn, task_id)
    if task is None:
        return None
    if task.pr_number == pr.number and task.pr_url == pr.url:
        return task
    kind = "pull_request_opened" if task.pr_number != pr.number else "pull_request_updated"
    add_event(conn, task.id, kind, now, number=pr.number, url=pr.url)
    return update_task(conn, task, now, pr_number=pr.number, pr_url=pr.url)


# -- STOP ---------------------------------------------------------------------------------


# The reset's pull-request step when there is nothing to close.
NO_PULL_REQUEST = {"closed": False, "reason": "no pull request"}


async def close_for_stop(svc: Services, task: Task, *, why: str) -> dict[str, Any]:
    """Close the task's pull request with a comment, never merging it; ForgeError when
    the forge cannot be reached (the caller keeps it pending). A merged one stays merged,
    and its merge is recorded on the task (the task ends with `effects_committed`)."""
    found = svc.forge_for(task.repo)
    if found is None or task.pr_number is None:
        return dict(NO_PULL_REQUEST)
    forge, repo = found
    comment = STOP_COMMENT.format(key=original_key(task.key), why=why, branch=task.branch)
    result = await close_pull_request(forge, repo.forge_repo, task.pr_number, comment)
    if result.get("merged") and task.merged_at is None:
        pr = await forge.pull_request(repo.forge_repo, task.pr_number)
        now = svc.clock.now()
        await svc.store.run_until_current(_merged_outside, task.id, pr.merge_sha, now)
    return result


async def close_pull_request(
    forge: Forge, forge_repo: str, number: int, comment: str
) -> dict[str, Any]:
    try:
        await forge.close(forge_repo, number, comment=comment)
    except PullRequestMerged:
        reason = "merged: it stays merged"
        return {"closed": False, "merged": True, "number": number, "reason": reason}
    return {"closed": True, "number": number}


def _merged_outside(conn: Connection, task_id: int, sha: str | None, now: float) -> None:
    """Someone merged the pull request on the forge before the STOP: the code is on the
    default branch, so the task records the merge like its own."""
    task = get_task(conn, task_id)
    if task is None or task.merged_at is not None:
        return
    update_task(conn, task, now, merged_at=now, merge_sha=sha)
    add_event(conn, task.id, "merged_outside_conveyor", now, sha=sha, pull_request=task.pr_number)
