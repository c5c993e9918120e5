"""Start and stop what runs behind the HTTP surface: the schema, the tracker client,
the scheduler (reaper, watchdog, finalizer) and the worker pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
import httpx

from bot.metrics import Metrics
from bot.services import Services
from integrations.trackers.plane_client import PlaneClient, ProjectIdentifiers, StateNames
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
    svc.extras["wake"] = asyncio.Event()
    svc.extras["metrics"] = Metrics(svc)
    async with contextlib.AsyncExitStack() as stack:
        svc.http = await stack.enter_async_context(httpx.AsyncClient(timeout=TRACKER_TIMEOUT))
        _open_plane(svc, svc.http)
        if configure is not None:
            configure(svc)
        if background:
            from bot import background as bg

            await stack.enter_async_context(bg.started(svc))
        yield svc
        await svc.background_tasks_done()


def _open_plane(svc: Services, http: httpx.AsyncClient) -> None:
    plane = svc.settings.trackers.plane
    if not plane.base_url:
        return
    client = PlaneClient(
        http,
        base_url=plane.base_url,
        api_key=plane.api_key.get_secret_value(),
        workspace=plane.workspace,
    )
    svc.tracker = client
    svc.extras["plane_client"] = client
    svc.extras["plane_states"] = StateNames(client)
    svc.extras["plane_projects"] = ProjectIdentifiers(client)
