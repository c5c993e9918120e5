"""Small HTTP helpers shared by the routes: JSON errors, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.services import Services

log = logging.getLogger(__name__)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """A JSON error answer: {"error": message, ...}."""
    return JSONResponse({"error": message, **extra}, status_code=status)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {
        404: f"no such endpoint: {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    return error(exc.status_code, messages.get(exc.status_code, str(exc.detail)))


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"action": request.url.path})
    return error(500, "internal error; the server log has the details")
