"""A task's names on disk and in git, from its key through the one sanitiser
(`integrations.names`): the same for every stage of the task, never shared with another
ticket's task (an earlier task of another ticket with the same key: this one's names
carry its id)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.services import Services
from integrations import git
from integrations.names import safe_name
from state.models import Task
from state.store import key_shared_with_other_ticket, original_key


@dataclass(frozen=True)
class TaskNames:
    """The directory name (worktree, docs, logs) and the branch of a task."""

    directory: str
    branch: str
    fallback_branch: str  # when a leftover branch of an earlier task holds `branch`


async def task_names(svc: Services, task: Task) -> TaskNames:
    shared: bool = await svc.store.run_read(key_shared_with_other_ticket, task)
    key = original_key(task.key)
    suffix = str(task.id) if shared else ""
    return TaskNames(
        directory=safe_name(key, suffix),
        branch=git.branch_name(key, suffix or None),
        fallback_branch=git.branch_name(key, f"{suffix}-{task.id}" if suffix else str(task.id)),
    )
