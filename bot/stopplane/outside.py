"""Reset steps 5 and 6, the ones that touch the outside world: the worktree and the
remote feature branch. Either may fail (remote down): the failure is kept as a pending
cleanup that the finalizer retries with backoff; an unsafe path or branch is refused
and never retried."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bot.engine.branches import delete_task_branch
from bot.gitops import UnknownRepoError, in_repo, repo_spec
from bot.services import Services
from integrations import git
from integrations.errors import IntegrationError
from state import stops
from state.models import StopRecord, Task
from state.store import add_event, original_key

log = logging.getLogger(__name__)


async def remove_worktree(svc: Services, rec: StopRecord, task: Task) -> dict[str, Any]:
    """`git worktree remove --force` + prune; a failure becomes a pending cleanup."""
    if not task.worktree_path:
        return {"removed": False, "reason": "no worktree"}
    detail = {"path": task.worktree_path, "branch": task.branch}
    try:
        removed = await retry_worktree(svc, task.repo, detail)
    except git.UnsafePathError as exc:  # never retried: conveyor does not delete outside
        await svc.store.run(
            add_event,
            task.id,
            "worktree_refused",
            svc.clock.now(),
            stop_id=rec.id,
            path=task.worktree_path,
            reason=str(exc),
        )
        return {"removed": False, "refused": str(exc)}
    except (IntegrationError, UnknownRepoError) as exc:
        await _pending(svc, rec, task, "worktree", detail, str(exc))
        return {"removed": False, "pending": str(exc)}
    return {"removed": removed}


async def retry_worktree(svc: Services, repo_name: str, detail: dict[str, Any]) -> bool:
    """Remove the worktree and its local branch (shared with the finalizer's retries)."""
    repo = repo_spec(svc, repo_name)
    removed = await in_repo(git.remove_worktree, repo, svc.worktrees_root, Path(detail["path"]))
    if detail.get("branch"):
        try:
            await in_repo(git.delete_local_branch, repo, detail["branch"])
        except git.GitError as exc:  # the remote branch is what matters; note and go on
            log.warning("local branch not deleted", extra={"error": str(exc)})
    return removed


async def delete_branch(svc: Services, rec: StopRecord, task: Task) -> dict[str, Any]:
    """Delete the remote feature branch behind every guard; never the default, never forced."""
    if not task.branch:
        return {"deleted": False, "reason": "no branch"}
    detail = {"branch": task.branch, "sha": task.branch_sha}
    try:
        result = await retry_branch(svc, task.repo, detail)
    except (IntegrationError, UnknownRepoError) as exc:
        await _pending(svc, rec, task, "remote_branch", detail, str(exc))
        return {"deleted": False, "pending": str(exc)}
    if result.outcome in (git.DeleteOutcome.CONFLICT, git.DeleteOutcome.REFUSED):
        await svc.store.run(
            add_event,
            task.id,
            f"branch_{result.outcome.value}",
            svc.clock.now(),
            stop_id=rec.id,
            branch=task.branch,
            reason=result.reason,
        )
    return {
        "deleted": result.outcome is git.DeleteOutcome.DELETED,
        "outcome": result.outcome.value,
        "reason": result.reason,
    }


async def retry_branch(svc: Services, repo_name: str, detail: dict[str, Any]) -> git.DeleteResult:
    # The name and SHA guards, and the forge's own protection when the repo names one.
    return await delete_task_branch(svc, repo_name, detail)


async def _pending(
    svc: Services, rec: StopRecord, task: Task, step: str, detail: dict[str, Any], error: str
) -> None:
    now = svc.clock.now()
    await svc.store.run(
        stops.add_cleanup,
        task_id=task.id,
        stop_id=rec.id,
        step=step,
        detail=detail,
        error=error,
        now=now,
        retry_at=now + svc.settings.stop.finalizer_interval_seconds,
    )
    log.warning(
        "cleanup pending",
        extra={"task": original_key(task.key), "stop_id": rec.id, "action": step, "error": error},
    )
