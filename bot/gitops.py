"""Git from the service: repo specs from settings, and every blocking call off the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from bot.errors import ConveyorError
from bot.services import Services
from integrations import git
from integrations.git import RepoSpec

T = TypeVar("T")


class UnknownRepoError(ConveyorError):
    """A task names a repo that is not in the configuration (any more)."""


def repo_spec(svc: Services, name: str) -> RepoSpec:
    """The configured repo as the git port wants it."""
    repo = svc.repo(name)
    if repo is None:
        raise UnknownRepoError(f"repo {name!r} is not configured ([[repos]] name = ...)")
    return RepoSpec(
        name=repo.name,
        path=repo.path.resolve(),
        remote=repo.remote,
        default_branch=repo.default_branch,
        protected_branches=tuple(repo.protected_branches),
    )


# Two locks per repository for this process, taken in this order. Git's worktree
# bookkeeping is not safe against itself (`git worktree prune` beside a `git worktree
# add` can delete the new worktree's admin files: "failed to read
# .git/worktrees/X/commondir"), and a ref two commands update at once fails one of them
# (a push updates refs/remotes/…, a fetch beside it fails with "cannot lock ref").
# A reset's worktree removal (worktrees, local branch) and its remote branch deletion
# (a push: remote-tracking refs only) hold different locks, so they run side by side.
# Looking a branch up on the remote writes nothing and takes neither.
_repo_locks: dict[tuple[Path, str], threading.Lock] = {}
_guard = threading.Lock()


def _lock_for(path: Path, kind: str) -> threading.Lock:
    with _guard:
        return _repo_locks.setdefault((path, kind), threading.Lock())


_WORKTREES = frozenset(
    {git.create_worktree, git.remove_worktree, git.delete_local_branch, git.merge_branch}
)
_REFS = frozenset(
    {git.create_worktree, git.merge_branch, git.push_branch, git.delete_remote_branch}
)


async def in_repo(fn: Callable[..., T], repo: RepoSpec, *args: Any, **kwargs: Any) -> T:
    """`fn(repo, …)` in a worker thread; bookkeeping one call at a time per repo and kind."""

    def call() -> T:
        with ExitStack() as held:
            if fn in _WORKTREES:
                held.enter_context(_lock_for(repo.path, "worktrees"))
            if fn in _REFS:
                held.enter_context(_lock_for(repo.path, "refs"))
            return fn(repo, *args, **kwargs)

    return await anyio.to_thread.run_sync(call)


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking (GitPython) call in a worker thread."""
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
