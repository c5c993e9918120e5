"""Task branches on the remote: "protected" asks the forge too, and a merged task's
branch is deleted behind the same guards as a reset's.

The name guards (default branch, main/master, `protected_branches`, the task's own
recorded branch under `conveyor/`) and the SHA guard (someone else's push is never
deleted) live in the git port; this module adds the forge's own answer (GitHub branch
protection and rulesets, Gitea branch protections). A forge that cannot be asked counts
as protected for now: the ForgeError goes up, and the deletion stays pending.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.gitops import UnknownRepoError, in_repo, repo_spec
from bot.services import Services
from integrations import git
from integrations.branch_guard import deletion_refusal
from integrations.errors import IntegrationError
from integrations.forges.base import ForgeError
from state import stops
from state.models import Task
from state.store import add_event, original_key

log = logging.getLogger(__name__)

STEP = "remote_branch"


class ForgeProtectedBranch(IntegrationError):
    """The forge protects a branch conveyor was about to push to."""


async def forge_protects(svc: Services, repo_name: str, branch: str) -> str | None:
    """Why the forge says `branch` is protected, or None; ForgeError when it cannot say."""
    found = svc.protecting_forge(repo_name)
    if found is None:
        return None
    forge, forge_repo = found
    if await forge.branch_protected(forge_repo, branch):
        return f"protected: {branch} is protected on {forge.name} ({forge_repo})"
    return None


async def refuse_push_if_protected(svc: Services, repo_name: str, branch: str) -> None:
    """Never push to a branch the forge protects, even when no pattern names it.

    A forge that cannot be asked does not stop the push (unlike a deletion): the push is
    never forced, and the forge refuses a push to a branch it protects by itself, so
    re-running an agent stage because the API was briefly down would buy nothing.
    """
    try:
        reason = await forge_protects(svc, repo_name, branch)
    except ForgeError as exc:
        log.warning("forge not asked before a push", extra={"action": "push", "error": str(exc)})
        return
    if reason is not None:
        raise ForgeProtectedBranch(f"refusing to push {branch}: {reason}")


async def delete_task_branch(
    svc: Services, repo_name: str, detail: dict[str, Any]
) -> git.DeleteResult:
    """Delete the task's remote branch if every guard and the forge allow it."""
    repo = repo_spec(svc, repo_name)
    branch = str(detail["branch"])
    refusal = deletion_refusal(
        branch,
        task_branch=branch,
        default_branch=repo.default_branch,
        protected=repo.protected_branches,
    )
    if refusal is None:
        refusal = await forge_protects(svc, repo_name, branch)
    if refusal is not None:
        return git.DeleteResult(git.DeleteOutcome.REFUSED, refusal)
    return await in_repo(
        git.delete_remote_branch,
        repo,
        branch,
        task_branch=branch,
        recorded_sha=detail.get("sha"),
    )


async def delete_merged_branch(svc: Services, task: Task) -> None:
    """After a merge (either mode): the task branch goes; a failure is a pending cleanup."""
    if not task.branch:
        return
    detail = {"branch": task.branch, "sha": task.branch_sha, "after": "merge"}
    now = svc.clock.now()
    try:
        result = await delete_task_branch(svc, task.repo, detail)
    except (IntegrationError, UnknownRepoError) as exc:
        await svc.store.run(
            stops.add_cleanup,
            task_id=task.id,
            stop_id=None,
            step=STEP,
            detail=detail,
            error=str(exc),
            now=now,
            retry_at=now + svc.settings.stop.finalizer_interval_seconds,
        )
        log.warning(
            "merged branch not deleted; cleanup pending",
            extra={"task": original_key(task.key), "action": STEP, "error": str(exc)},
        )
        return
    await svc.store.run(_record_deletion, task, result, now)


def _record_deletion(conn: Any, task: Task, result: git.DeleteResult, now: float) -> None:
    kind = "merged_branch_deleted" if result.outcome is git.DeleteOutcome.DELETED else None
    kind = kind or f"merged_branch_{result.outcome.value}"
    add_event(conn, task.id, kind, now, branch=task.branch, reason=result.reason)
    if result.outcome is git.DeleteOutcome.REFUSED:
        # Shown on the task like any cleanup: ended `refused`, never retried.
        stops.add_cleanup(
            conn,
            task_id=task.id,
            stop_id=None,
            step=STEP,
            detail={"branch": task.branch, "sha": task.branch_sha, "after": "merge"},
            error=result.reason,
            now=now,
            retry_at=now,
        )
        for item in stops.cleanups_for_task(conn, task.id):
            if item["step"] == STEP and item["status"] == "pending":
                stops.settle_cleanup(conn, item["id"], "refused", now, result.reason)
