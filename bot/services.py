"""What the running app holds: made once in the lifespan, handed to handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.clock import Clock, SystemClock
from bot.settings import RepoSettings, Settings
from integrations.trackers.base import Tracker
from state.store import Store

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: Store
    clock: Clock = field(default_factory=SystemClock)
    tracker: Tracker | None = None
    http: httpx.AsyncClient | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # plane caches, scheduler, workers…
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def data_dir(self) -> Path:
        return self.settings.server.data_dir.resolve()

    @property
    def worktrees_root(self) -> Path:
        return self.data_dir / "worktrees"

    def docs_dir(self, task_key: str) -> Path:
        return self.data_dir / "docs" / task_key

    def logs_dir(self, task_key: str) -> Path:
        return self.data_dir / "logs" / task_key

    def repo(self, name: str) -> RepoSettings | None:
        return self.settings.repo(name)

    def launch(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run work behind the answer; tracked so shutdown can wait for it."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background work failed",
                exc_info=task.exception(),
                extra={"action": task.get_name()},
            )

    async def background_tasks_done(self, wait_seconds: float = 30.0) -> None:
        """Let launched work finish (a reset mid-way resumes after a restart anyway)."""
        pending = list(self.tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=wait_seconds)
            for task in late:
                task.cancel()

    def wake_workers(self) -> None:
        """Tell idle workers there is work (they also poll)."""
        wake = self.extras.get("wake")
        if wake is not None:
            wake.set()

    def stop_enabled_for(self, repo: str) -> bool:
        """The kill switch and the repo allowlist."""
        stop = self.settings.stop
        return stop.enabled and (not stop.repos or repo in stop.repos)
