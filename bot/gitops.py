"""Git from the service: repo specs from settings, and every blocking call off the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
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


# One lock per repository for this process: git's worktree bookkeeping is not safe
# against itself (`git worktree prune` beside a `git worktree add` can delete the new
# worktree's admin files: "failed to read .git/worktrees/X/commondir").
_repo_locks: dict[Path, threading.Lock] = {}
_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _guard:
        return _repo_locks.setdefault(path, threading.Lock())


# The calls that write the clone's shared bookkeeping: worktrees (merge works in a
# scratch worktree) and refs, remote-tracking ones included (a push updates
# refs/remotes/…, and a fetch beside it fails with "cannot lock ref"). Looking a branch
# up on the remote writes nothing and runs side by side.
_BOOKKEEPING = frozenset(
    {
        git.create_worktree,
        git.remove_worktree,
        git.delete_local_branch,
        git.merge_branch,
        git.push_branch,
        git.delete_remote_branch,
    }
)


async def in_repo(fn: Callable[..., T], repo: RepoSpec, *args: Any, **kwargs: Any) -> T:
    """`fn(repo, …)` in a worker thread; worktree bookkeeping one call at a time per repo."""

    def call() -> T:
        if fn not in _BOOKKEEPING:
            return fn(repo, *args, **kwargs)
        with _lock_for(repo.path):
            return fn(repo, *args, **kwargs)

    return await anyio.to_thread.run_sync(call)


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking (GitPython) call in a worker thread."""
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
