"""Start and stop what runs behind the HTTP surface: the schema, the trackers and
forges, the metrics, the scheduler (reaper, watchdog, finalizer) and the worker pool."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
import httpx

from bot.errors import ConfigError
from bot.forges import build_forges, check_repo_forges
from bot.metrics import Metrics
from bot.services import Services
from bot.trackers import ADAPTERS, build_trackers
from state.db import upgrade

log = logging.getLogger(__name__)

TRACKER_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@contextlib.asynccontextmanager
async def running(
    svc: Services, *, configure: Callable[[Services], None] | None, background: bool
) -> AsyncIterator[Services]:
    """Everything the app needs while it serves; torn down in reverse order."""
    if svc.store.dialect == "sqlite":
        await anyio.to_thread.run_sync(upgrade, svc.store.engine)
    svc.data_dir.mkdir(parents=True, exist_ok=True)
    # Without workers, the gauge of agent processes reads the store instead.
    svc.metrics = Metrics(
        svc.store, svc.agents if background else None, svc.reconcile, svc.clock.now
    )
    async with contextlib.AsyncExitStack() as stack:
        svc.http = await stack.enter_async_context(httpx.AsyncClient(timeout=TRACKER_TIMEOUT))
        settings = svc.settings
        sections = {name: settings.tracker(name) for name in ADAPTERS}
        svc.trackers = build_trackers(sections, svc.http, settings.projects())
        svc.forges = build_forges(settings, svc.http)
        if configure is not None:
            configure(svc)
        check_repo_trackers(svc)
        check_repo_forges(settings, svc.forges)
        if background:
            from bot import background as bg

            await stack.enter_async_context(bg.started(svc))
        yield svc
        await svc.background_tasks_done()


def check_repo_trackers(svc: Services) -> None:
    """Every repo names a tracker the app has."""
    for repo in svc.settings.repos:
        if repo.tracker not in svc.trackers:
            known = ", ".join(sorted(svc.trackers))
            raise ConfigError(
                f"repos.{repo.name}.tracker is {repo.tracker!r}, which is not a tracker "
                f"conveyor knows ({known})"
            )
