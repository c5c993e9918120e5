"""Linear's GraphQL endpoint over the shared JsonApi: the personal API key (no
``Bearer``), and GraphQL errors (which come with HTTP 200 or 400) translated into
TrackerError: ``RATELIMITED`` with ``retry_after``, a missing entity as EntityNotFound.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from integrations.trackers.base import TrackerError
from integrations.trackers.http_api import Clock, JsonApi, Sleep, retry_after_seconds

log = logging.getLogger(__name__)

# Linear answers GraphQL errors (rate limits, auth, bad input) with these statuses and a
# JSON body naming the error; read the body rather than the status.
_GRAPHQL_ERROR_STATUSES = (400, 401, 403, 429)
# Epoch-milliseconds headers saying when Linear's rate-limit windows reset.
_RESET_HEADERS_MS = ("X-RateLimit-Requests-Reset", "X-RateLimit-Complexity-Reset")
RATE_LIMIT_BACKOFF_SECONDS = 60.0
_MESSAGE_CHARS = 200
_AUTH_HINT = " (check [trackers.linear] api_key: a personal API key, sent without Bearer)"


class EntityNotFound(TrackerError):
    """Linear has no such issue (deleted, or out of the key's reach)."""


class LinearGraphQL:
    """One GraphQL endpoint: ``execute`` returns ``data`` or raises TrackerError."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_url: str,
        api_key: str,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        parts = urlsplit(api_url)
        self.path = parts.path or "/"
        self.api = JsonApi(
            http,
            "linear",
            f"{parts.scheme}://{parts.netloc}",
            headers={"Authorization": api_key},
            secrets=[api_key],
            sleep=sleep,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"LinearGraphQL({self.api.base_url + self.path!r})"  # never the key

    async def execute(
        self, operation: str, query: str, variables: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Run one operation; its ``data``, or TrackerError saying what Linear said."""
        payload = {"operationName": operation, "query": query, "variables": dict(variables)}
        response = await self.api.request(
            "POST", self.path, json=payload, ok=_GRAPHQL_ERROR_STATUSES
        )
        doc = self.api.json_of(response, "POST", self.path)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            raise self._error(operation, response, errors)
        data = doc.get("data") if isinstance(doc, dict) else None
        if not response.is_success or not isinstance(data, dict):
            status = response.status_code
            raise TrackerError(f"linear {operation}: HTTP {status} without data", status=status)
        return data

    def _error(self, operation: str, response: httpx.Response, errors: list[Any]) -> TrackerError:
        status = response.status_code
        codes = {_code(error) for error in errors}
        message = self.api.scrub(_message(errors)[:_MESSAGE_CHARS])
        if "RATELIMITED" in codes:
            wait = self._rate_limit_wait(response)
            log.warning("linear rate limit", extra={"operation": operation, "delay": wait})
            return TrackerError(
                f"linear {operation} was rate-limited: {message}; retry in {wait:.0f} s",
                status=status,
                retry_after=wait,
            )
        if all(_not_found(error) for error in errors):
            return EntityNotFound(f"linear {operation}: {message}", status=404)
        hint = _AUTH_HINT if "AUTHENTICATION_ERROR" in codes or status == 401 else ""
        return TrackerError(f"linear {operation} failed: {message}{hint}", status=status)

    def _rate_limit_wait(self, response: httpx.Response) -> float:
        """Seconds until Linear's window resets (its headers are epoch milliseconds)."""
        now = self.api.clock()
        for name in _RESET_HEADERS_MS:
            try:
                reset_ms = float(response.headers.get(name, ""))
            except ValueError:
                continue
            if math.isfinite(reset_ms):
                return max(reset_ms / 1000 - now, 0.0)
        wait = retry_after_seconds(response.headers.get("Retry-After"), now)
        if wait is None or not math.isfinite(wait):
            return RATE_LIMIT_BACKOFF_SECONDS
        return max(wait, 0.0)


def _code(error: Any) -> str | None:
    extensions = error.get("extensions") if isinstance(error, dict) else None
    code = extensions.get("code") if isinstance(extensions, dict) else None
    return code if isinstance(code, str) else None


def _message(errors: list[Any]) -> str:
    messages = [e.get("message") for e in errors if isinstance(e, dict)]
    texts = [m for m in messages if isinstance(m, str) and m]
    return "; ".join(texts) or "GraphQL error without a message"


def _not_found(error: Any) -> bool:
    message = error.get("message") if isinstance(error, dict) else None
    return isinstance(message, str) and message.startswith("Entity not found")
