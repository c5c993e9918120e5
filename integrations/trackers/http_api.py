"""One JSON-over-HTTP client for every tracker's and forge's API: retries on transport
errors and 5xx, rate limits honoured (``Retry-After``, reset headers), errors translated
into TrackerError with the status, and the credentials never in a message.

The ``httpx.AsyncClient`` is made in the app's lifespan and handed in; ``sleep`` and
``clock`` are ports, so retries and rate limits are tested without waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from integrations.trackers.base import TrackerError

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_CAP_SECONDS = 30.0
_REASON_CHARS = 200
# Epoch-seconds headers that say when a rate-limit window resets.
# (Linear's reset headers are in milliseconds: its adapter reads them itself.)
_RESET_HEADERS = ("X-RateLimit-Reset", "X-Ratelimit-Reset")


@dataclass
class JsonApi:
    """Requests to one API: ``name`` for messages, ``headers`` carry the credentials."""

    http: httpx.AsyncClient
    name: str
    base_url: str
    headers: Mapping[str, str]
    secrets: Sequence[str] = ()
    hints: Mapping[int, str] = field(default_factory=dict)
    sleep: Sleep = asyncio.sleep
    clock: Clock = time.time
    max_attempts: int = 4
    # A rate limit asking to wait longer than this is not slept through: the caller (a
    # webhook, a stop, a reconciliation pass) gets TrackerError with ``retry_after`` and
    # backs off on its own schedule.
    max_wait_seconds: float = 60.0
    rate_limited: Callable[[httpx.Response], bool] = lambda response: response.status_code == 429

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = self.base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"JsonApi({self.name}, {self.base_url!r})"  # never the credentials

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = await self.request("GET", path, params=params)
        return self.json_of(response, "GET", path)

    def json_of(self, response: httpx.Response, method: str, path: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise TrackerError(f"{self.name} {method} {path}: answer is not JSON") from exc

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (),
    ) -> httpx.Response:
        """Send with retries; a 2xx response (or one whose status is in ``ok``), else
        TrackerError saying what went wrong."""
        failure, status, wait, limited = "", None, 0.0, False
        for attempt in range(1, self.max_attempts + 1):
            outcome = await self._attempt(method, path, attempt, params, json, headers, ok)
            if isinstance(outcome, httpx.Response):
                return outcome
            failure, status, wait, limited = outcome
            if wait > self.max_wait_seconds:
                break
            if attempt < self.max_attempts:
                _log_retry(self.name, method, path, attempt, wait, failure)
                await self.sleep(wait)
        raise TrackerError(
            f"{self.name} {method} {path} failed after {attempt} attempts: {failure}",
            status=status,
            retry_after=wait if limited else None,
        )

    async def _attempt(
        self,
        method: str,
        path: str,
        attempt: int,
        params: Mapping[str, str] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        ok: Sequence[int],
    ) -> httpx.Response | tuple[str, int | None, float, bool]:
        """One try: the response, or (what failed, status, how long to wait, rate limited)."""
        try:
            response = await self.http.request(
                method,
                self.base_url + path,
                params=params,
                json=json,
                headers={"Accept": "application/json", **self.headers, **(headers or {})},
            )
        except httpx.TransportError as exc:
            return self.scrub(f"{type(exc).__name__}: {exc}"), None, backoff(attempt), False
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            detail = self.scrub(f"{type(exc).__name__}: {exc}")
            raise TrackerError(f"{self.name} {method} {path} could not be sent: {detail}") from exc
        status = response.status_code
        if response.is_success or (status in ok and not self.rate_limited(response)):
            return response
        failure = f"HTTP {status} {self.reason(response)}"
        if self.rate_limited(response):
            return failure, status, self.rate_limit_wait(response, attempt), True
        if status >= 500:
            return failure, status, backoff(attempt), False
        hint = self.hints.get(status, "")
        raise TrackerError(
            f"{self.name} answered {method} {path} with {failure}{hint}", status=status
        )

    def rate_limit_wait(self, response: httpx.Response, attempt: int) -> float:
        """Seconds the API asks us to wait (Retry-After, else a reset header)."""
        now = self.clock()
        wait = retry_after_seconds(response.headers.get("Retry-After"), now)
        for name in _RESET_HEADERS:
            if wait is None:
                wait = _seconds_until(response.headers.get(name), now)
        if wait is None or not math.isfinite(wait):
            wait = backoff(attempt)
        return max(wait, 0.0)

    def reason(self, response: httpx.Response) -> str:
        """A short reason from the error body (``error``/``detail``/``message``)."""
        reason = response.reason_phrase
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("error", "detail", "message", "errorMessages"):
                value = body.get(key)
                if isinstance(value, list) and value:
                    value = str(value[0])
                if isinstance(value, str) and value:
                    reason = f"{reason}: {value}"
                    break
        return self.scrub(reason[:_REASON_CHARS])

    def scrub(self, text: str) -> str:
        # An error body or transport message may echo a header back: never pass it on.
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "[credential]")
        return text


def segment(value: str) -> str:
    """One URL path segment: ids come from webhook bodies, so never let them add a path."""
    return quote(value, safe="")


def backoff(attempt: int) -> float:
    return min(_BACKOFF_BASE_SECONDS * (1 << (attempt - 1)), _BACKOFF_CAP_SECONDS)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as delta-seconds or as an HTTP date."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError):
        return None


def _seconds_until(epoch: str | None, now: float) -> float | None:
    try:
        return float(epoch) - now if epoch is not None else None
    except ValueError:
        return None


def _log_retry(name: str, method: str, path: str, attempt: int, delay: float, failure: str) -> None:
    context = {"tracker": name, "method": method, "path": path, "attempt": attempt}
    log.warning("tracker request retried", extra={**context, "delay": delay, "failure": failure})
