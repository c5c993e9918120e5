"""Start and stop what runs behind the HTTP surface: the schema, the tracker client,
the scheduler (reaper, watchdog, finalizer) and the worker pool."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio.to_thread

from bot.services import Services
from state.db import upgrade

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running(
    svc: Services, *, configure: Callable[[Services], None] | None, background: bool
) -> AsyncIterator[Services]:
    """Everything the app needs while it serves; torn down in reverse order."""
    if svc.store.dialect == "sqlite":
        await anyio.to_thread.run_sync(upgrade, svc.store.engine)
    svc.data_dir.mkdir(parents=True, exist_ok=True)
    if configure is not None:
        configure(svc)
    yield svc
