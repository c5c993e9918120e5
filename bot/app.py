"""The Starlette app: routes composed once here, long-lived things made in the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bot import runtime
from bot.api import health
from bot.api.http import http_exception, unexpected
from bot.services import Services
from bot.settings import Settings
from bot.ui.access import ReadTokenGate
from state.db import make_engine
from state.store import Store

log = logging.getLogger(__name__)


def all_routes() -> list[BaseRoute]:
    from bot.api import logs, meta, reconcile, retry, servers, stop, tasks
    from bot.intake import route as webhooks
    from bot.ui import pages, streams

    return [
        *health.routes,
        *meta.routes,
        *webhooks.routes,
        *stop.routes,
        *tasks.routes,
        *logs.routes,
        *retry.routes,
        *reconcile.routes,
        *servers.routes,
        *pages.routes,
        *streams.routes,
    ]


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    configure: Callable[[Services], None] | None = None,
    start_background: bool = True,
) -> Starlette:
    """The ASGI app for `settings`. `configure` may swap ports (a fake tracker) in tests."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_store = store is None
        svc = Services(
            settings=settings, store=store or Store(make_engine(settings.server.database_url))
        )
        async with runtime.running(svc, configure=configure, background=start_background):
            app.state.services = svc
            try:
                yield
            finally:
                if svc.feed is not None:
                    await svc.feed.close()
        if own_store:
            svc.store.dispose()

    handlers: dict[Any, Any] = {HTTPException: http_exception, Exception: unexpected}
    static = Mount("/static", StaticFiles(packages=[("bot.ui", "static")]), name="static")
    routes: Sequence[BaseRoute] = [*all_routes(), static]
    gate = Middleware(ReadTokenGate, token=settings.server.read_token.get_secret_value())
    return Starlette(
        routes=list(routes), lifespan=lifespan, exception_handlers=handlers, middleware=[gate]
    )
