"""Drive the real ASGI app in-process: lifespan run for real, httpx.ASGITransport."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette


@contextlib.asynccontextmanager
async def app_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app, with its lifespan started and stopped around it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://conveyor.test"
        ) as client:
            yield client
