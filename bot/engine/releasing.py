"""After a task is done: its worktree goes (when configured); its docs stay."""

from __future__ import annotations

import logging
from pathlib import Path

from bot.gitops import in_repo, repo_spec
from bot.services import Services
from integrations import git
from integrations.errors import IntegrationError
from state.models import Task
from state.store import add_event, original_key

log = logging.getLogger(__name__)


async def after_done(svc: Services, task: Task) -> None:
    """Remove the worktree of a finished task if its repo says so."""
    repo = svc.repo(task.repo)
    if repo is None or not repo.remove_worktree_when_done or not task.worktree_path:
        return
    try:
        removed = await in_repo(
            git.remove_worktree,
            repo_spec(svc, task.repo),
            svc.worktrees_root,
            Path(task.worktree_path),
        )
    except IntegrationError as exc:
        log.warning(
            "worktree not removed after done",
            extra={"task": original_key(task.key), "error": str(exc)},
        )
        return
    await svc.store.run(add_event, task.id, "worktree_removed", svc.clock.now(), removed=removed)
