"""What the running app holds: made once in the lifespan, handed to handlers. Every
long-lived part is a typed field here; nothing is looked up by a string."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bot.api.throttle import AuthThrottle
from bot.clock import Clock, SystemClock
from bot.engine.agents import AgentRegistry
from bot.intake.health import TrackerHealth
from bot.settings import RepoSettings, Settings
from integrations.forges.base import Forge
from integrations.names import safe_name
from integrations.trackers.base import Tracker
from state.models import ServerIdentity
from state.store import Store

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.engine.workers import WorkerPool
    from bot.metrics import Metrics
    from bot.ui.feed import Feed

log = logging.getLogger(__name__)


@dataclass
class StopTimings:
    """Per stop, what this process saw of it: when its reset began (for the latency
    histograms) and how many agents the early SIGTERM reached."""

    started: dict[str, float] = field(default_factory=dict)  # stop_id -> monotonic
    asked_to_exit: dict[str, int] = field(default_factory=dict)  # stop_id -> processes


@dataclass
class Services:
    settings: Settings
    store: Store
    clock: Clock = field(default_factory=SystemClock)
    trackers: dict[str, Tracker] = field(default_factory=dict)  # by name: "plane", …
    forges: dict[str, Forge] = field(default_factory=dict)  # by name: "github", "gitea"
    http: httpx.AsyncClient | None = None
    metrics: Metrics | None = None
    agents: AgentRegistry = field(default_factory=AgentRegistry)
    workers: WorkerPool | None = None
    scheduler: AsyncIOScheduler | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # work is waiting
    # Who this server is (id kept under the data dir; set at start-up by the runtime).
    server: ServerIdentity = field(default_factory=lambda: ServerIdentity("", socket.gethostname()))
    resets: set[str] = field(default_factory=set)  # stop ids whose reset runs here
    reset_claims: dict[str, float] = field(default_factory=dict)  # stop id -> claimed (mono)
    owed: set[int] = field(default_factory=set)  # host steps being done here (their ids)
    stop_timings: StopTimings = field(default_factory=StopTimings)
    reconcile: dict[str, TrackerHealth] = field(default_factory=dict)  # by tracker
    # Workers claim only once the first reconciliation pass has read the tickets (or its
    # wait ran out): an agent whose ticket went to STOP while we were down never restarts.
    claims_open: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # work behind answers
    admin_throttle: AuthThrottle = field(default_factory=AuthThrottle)  # failed admin auth
    feed: Feed | None = None  # the dashboard's change feed (GET /events), made on first use

    @property
    def data_dir(self) -> Path:
        return self.settings.server.data_dir.resolve()

    @property
    def worktrees_root(self) -> Path:
        return self.data_dir / "worktrees"

    def docs_dir(self, name: str) -> Path:
        """<data_dir>/docs/<name>, the name made safe (never a path out of docs/)."""
        return self.data_dir / "docs" / safe_name(name)

    def logs_dir(self, name: str) -> Path:
        """<data_dir>/logs/<name>, the name made safe (never a path out of logs/)."""
        return self.data_dir / "logs" / safe_name(name)

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
        self.wake.set()

    def tracker(self, name: str) -> Tracker | None:
        return self.trackers.get(name)

    def forge_for(self, repo: str) -> tuple[Forge, RepoSettings] | None:
        """The forge of a repo that merges through pull requests, with its settings."""
        settings = self.repo(repo)
        if settings is None or settings.merge != "pull_request":
            return None
        forge = self.forges.get(settings.forge)
        return None if forge is None else (forge, settings)

    def protecting_forge(self, repo: str) -> tuple[Forge, str] | None:
        """The forge to ask about branch protection (any repo naming a forge), and the
        repository's `owner/name` on it."""
        settings = self.repo(repo)
        if settings is None or not settings.forge or not settings.forge_repo:
            return None
        forge = self.forges.get(settings.forge)
        return None if forge is None else (forge, settings.forge_repo)

    def stop_enabled_for(self, repo: str) -> bool:
        """The kill switch and the repo allowlist."""
        stop = self.settings.stop
        return stop.enabled and (not stop.repos or repo in stop.repos)
