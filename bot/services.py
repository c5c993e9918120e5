"""What the running app holds: made once in the lifespan, handed to handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.clock import Clock, SystemClock
from bot.settings import RepoSettings, Settings
from integrations.trackers.base import Tracker
from state.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    clock: Clock = field(default_factory=SystemClock)
    tracker: Tracker | None = None
    http: httpx.AsyncClient | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # plane caches, scheduler, workers…

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

    def stop_enabled_for(self, repo: str) -> bool:
        """The kill switch and the repo allowlist."""
        stop = self.settings.stop
        return stop.enabled and (not stop.repos or repo in stop.repos)
