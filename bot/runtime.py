"""Start and stop what runs behind the HTTP surface: the schema, the trackers and
forges, the metrics, the scheduler (reaper, watchdog, finalizer) and the worker pool."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio.to_thread
import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.errors import ConfigError
from bot.forges import build_forges, check_repo_forges
from bot.metrics import Metrics
from bot.services import Services
from bot.trackers import ADAPTERS, build_trackers
from state.db import current_revision, head_revision, upgrade
from state.models import ServerIdentity

log = logging.getLogger(__name__)

TRACKER_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@contextlib.asynccontextmanager
async def running(
    svc: Services, *, configure: Callable[[Services], None] | None, background: bool
) -> AsyncIterator[Services]:
    """Everything the app needs while it serves; torn down in reverse order."""
    if svc.store.dialect == "sqlite":
        await anyio.to_thread.run_sync(upgrade, svc.store.engine)
    else:
        await anyio.to_thread.run_sync(check_schema, svc.store.engine)
    svc.data_dir.mkdir(parents=True, exist_ok=True)
    svc.server = await anyio.to_thread.run_sync(load_identity, svc.data_dir)
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


SERVER_ID_FILE = "server-id"


def check_schema(engine: Engine) -> None:
    """A shared (PostgreSQL) database is upgraded by the operator, once, not by each
    server: refuse to start on an older schema, saying what to run."""
    want = head_revision()
    try:
        have = current_revision(engine)
    except SQLAlchemyError as exc:  # unreachable now: /readyz says so, the app still starts
        log.warning("database schema not checked", extra={"error": str(exc)})
        return
    if have != want:
        raise ConfigError(
            f"the database schema is at revision {have or 'none'}, this conveyor needs "
            f"{want}: run `conveyor db upgrade` against server.database_url once, then start"
        )


def load_identity(data_dir: Path) -> ServerIdentity:
    """This server's identity: the host name, and an id made once and kept in
    `<data_dir>/server-id` (so a restart, or a move of the data dir to another machine,
    is the same server with the same work)."""
    path = data_dir / SERVER_ID_FILE
    try:
        server_id = path.read_text().strip()
    except FileNotFoundError:
        server_id = ""
    if not server_id:
        server_id = _create_id(path)
    return ServerIdentity(id=server_id, host=socket.gethostname())


def _create_id(path: Path) -> str:
    fresh = uuid.uuid4().hex
    draft = path.with_name(f".{path.name}.{fresh}")
    draft.write_text(fresh + "\n")
    try:
        os.link(draft, path)  # never replaces an id another process wrote first
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


def check_repo_trackers(svc: Services) -> None:
    """Every repo names a tracker the app has."""
    for repo in svc.settings.repos:
        if repo.tracker not in svc.trackers:
            known = ", ".join(sorted(svc.trackers))
            raise ConfigError(
                f"repos.{repo.name}.tracker is {repo.tracker!r}, which is not a tracker "
                f"conveyor knows ({known})"
            )
