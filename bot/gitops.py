"""Git from the service: repo specs from settings, and every blocking call off the loop."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread

from bot.errors import ConveyorError
from bot.services import Services
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


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking (GitPython) call in a worker thread."""
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
