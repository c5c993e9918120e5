"""Plane's REST API over httpx: the real Tracker adapter, and small caches in front of it.

The ``httpx.AsyncClient`` is made in the app's lifespan and handed in; ``sleep`` and
``clock`` are ports too, so retries and rate limits are tested without waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from integrations.trackers.base import IssueRef, TrackerError

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# Never wait longer than this on a rate limit: the caller is usually a webhook or a stop.
MAX_RATE_LIMIT_WAIT_SECONDS = 60.0
_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_CAP_SECONDS = 30.0
_MAX_STATE_PAGES = 50
_REASON_CHARS = 200
_HINTS = {
    401: " (check the Plane API key)",
    403: " (check that the API key's user may access this workspace and project)",
    404: " (check the workspace slug, project and work item ids)",
}


@dataclass(frozen=True)
class PlaneState:
    id: str
    name: str
    group: str


class PlaneClient:
    """Tracker for Plane: ``X-API-Key`` auth, retries on 429/5xx/transport errors."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str,
        workspace: str,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int = 4,
        clock: Clock = time.time,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._prefix = f"/api/v1/workspaces/{_segment(workspace)}"
        self._api_key = api_key
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._clock = clock

    def __repr__(self) -> str:
        return f"PlaneClient({self._base_url + self._prefix!r})"  # never the API key

    async def list_states(self, project_id: str) -> list[PlaneState]:
        """Every state of the project, following Plane's cursor pagination."""
        path = f"/projects/{_segment(project_id)}/states/"
        states: list[PlaneState] = []
        params: dict[str, str] = {}
        for _ in range(_MAX_STATE_PAGES):
            page = await self._get_json(path, params)
            if isinstance(page, list):  # older Plane answers a bare list
                return states + _parse_states(page, self._prefix + path)
            states += _parse_states(page.get("results"), self._prefix + path)
            cursor = page.get("next_cursor")
            if not page.get("next_page_results") or not isinstance(cursor, str) or not cursor:
                return states
            params = {"cursor": cursor}
        raise TrackerError(
            f"Plane GET {self._prefix}{path}: more than {_MAX_STATE_PAGES} pages of states"
        )

    async def project_identifier(self, project_id: str) -> str | None:
        """The project's short identifier (``PROJ`` in ``PROJ-42``), if it has one."""
        project = await self._get_json(f"/projects/{_segment(project_id)}/", {})
        identifier = project.get("identifier") if isinstance(project, dict) else None
        return identifier if isinstance(identifier, str) and identifier else None

    async def get_issue(self, project_id: str, issue_id: str) -> dict[str, Any]:
        path = f"/projects/{_segment(project_id)}/work-items/{_segment(issue_id)}/"
        issue = await self._get_json(path, {"expand": "state"})
        if not isinstance(issue, dict):
            raise TrackerError(f"Plane GET {self._prefix}{path}: answer is not a work item")
        return issue

    async def comment(self, issue: IssueRef, html: str) -> None:
        body = {"comment_html": html, "access": "INTERNAL"}
        await self._request("POST", f"{self._issue_path(issue)}comments/", json=body)

    async def set_state(self, issue: IssueRef, state_id: str) -> None:
        await self._request("PATCH", self._issue_path(issue), json={"state": state_id})

    def _issue_path(self, issue: IssueRef) -> str:
        if issue.tracker != "plane":
            raise TrackerError(f"issue {issue.issue_id} belongs to {issue.tracker}, not plane")
        if not issue.project_id:
            raise TrackerError(f"issue {issue.issue_id} has no Plane project id; cannot reach it")
        project, item = _segment(issue.project_id), _segment(issue.issue_id)
        return f"/projects/{project}/work-items/{item}/"

    async def _get_json(self, path: str, params: dict[str, str]) -> Any:
        response = await self._request("GET", path, params=params)
        try:
            return response.json()
        except ValueError as exc:
            raise TrackerError(f"Plane GET {self._prefix}{path}: answer is not JSON") from exc

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send with retries; a 2xx response, or TrackerError saying what went wrong."""
        path = self._prefix + path
        failure = ""
        for attempt in range(1, self._max_attempts + 1):
            outcome = await self._attempt(method, path, attempt, params=params, json=json)
            if isinstance(outcome, httpx.Response):
                return outcome
            failure, delay = outcome
            if attempt < self._max_attempts:
                _log_retry(method, path, attempt, delay, failure)
                await self._sleep(delay)
        raise TrackerError(
            f"Plane {method} {path} failed after {self._max_attempts} attempts: {failure}"
        )

    async def _attempt(
        self,
        method: str,
        path: str,
        attempt: int,
        *,
        params: dict[str, str] | None,
        json: dict[str, Any] | None,
    ) -> httpx.Response | tuple[str, float]:
        """One try: the response, or (what failed, how long to wait) when worth retrying."""
        headers = {"X-API-Key": self._api_key, "Accept": "application/json"}
        url = self._base_url + path
        try:
            response = await self._http.request(
                method, url, params=params, json=json, headers=headers
            )
        except httpx.TransportError as exc:
            return self._scrub(f"{type(exc).__name__}: {exc}"), _backoff(attempt)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            raise TrackerError(f"Plane {method} {path} could not be sent: {detail}") from exc
        if response.is_success:
            return response
        failure = f"HTTP {response.status_code} {self._reason(response)}"
        if response.status_code == 429:
            return failure, self._rate_limit_wait(response, attempt)
        if response.status_code >= 500:
            return failure, _backoff(attempt)
        hint = _HINTS.get(response.status_code, "")
        raise TrackerError(f"Plane answered {method} {path} with {failure}{hint}")

    def _rate_limit_wait(self, response: httpx.Response, attempt: int) -> float:
        """Seconds Plane asks us to wait (Retry-After, else X-RateLimit-Reset), capped."""
        wait = _retry_after(response.headers.get("Retry-After"), self._clock())
        if wait is None:
            wait = _seconds_until(response.headers.get("X-RateLimit-Reset"), self._clock())
        if wait is None or not math.isfinite(wait):
            wait = _backoff(attempt)
        return min(max(wait, 0.0), MAX_RATE_LIMIT_WAIT_SECONDS)

    def _reason(self, response: httpx.Response) -> str:
        """A short reason from Plane's error body (``error``/``detail``), else the phrase."""
        reason = response.reason_phrase
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("error", "detail", "message"):
                if isinstance(body.get(key), str) and body[key]:
                    reason = f"{reason}: {body[key]}"
                    break
        return self._scrub(reason[:_REASON_CHARS])

    def _scrub(self, text: str) -> str:
        # An error body or transport message may echo a header back: never pass the key on.
        return text.replace(self._api_key, "[api key]") if self._api_key else text


class _RefreshGate:
    """At most one lookup per key per ``min_seconds``; one lookup at a time per key."""

    def __init__(self, min_seconds: float, clock: Clock) -> None:
        self._min_seconds = min_seconds
        self._clock = clock
        self._last: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def try_open(self, key: str) -> bool:
        """True (and start a new window) when the key may be looked up now."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._min_seconds:
            return False
        self._last[key] = now
        return True


class StateNames:
    """Per-project cache of state id → PlaneState, refreshed on an unknown id (bounded)."""

    def __init__(
        self,
        client: PlaneClient,
        *,
        min_refresh_seconds: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self._gate = _RefreshGate(min_refresh_seconds, clock)
        self._states: dict[str, dict[str, PlaneState]] = {}

    async def resolve(self, project_id: str, state_id: str) -> PlaneState | None:
        """The state, or None when Plane does not know it (or cannot be asked right now)."""
        known = self._states.get(project_id, {}).get(state_id)
        if known is not None:
            return known
        async with self._gate.lock(project_id):
            # Another resolve may have refreshed while we waited for the lock.
            known = self._states.get(project_id, {}).get(state_id)
            if known is None and self._gate.try_open(project_id):
                await self._refresh(project_id)
            return self._states.get(project_id, {}).get(state_id)

    async def _refresh(self, project_id: str) -> None:
        try:
            states = await self._client.list_states(project_id)
        except TrackerError as exc:
            logger.warning(
                "plane states refresh failed", extra={"project": project_id, "error": str(exc)}
            )
            return
        self._states[project_id] = {state.id: state for state in states}


class ProjectIdentifiers:
    """Per-project cache of the identifier; a failed lookup is retried after the window."""

    def __init__(
        self,
        client: PlaneClient,
        *,
        min_refresh_seconds: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self._gate = _RefreshGate(min_refresh_seconds, clock)
        self._identifiers: dict[str, str] = {}

    async def resolve(self, project_id: str) -> str | None:
        if project_id in self._identifiers:
            return self._identifiers[project_id]
        async with self._gate.lock(project_id):
            if project_id not in self._identifiers and self._gate.try_open(project_id):
                await self._lookup(project_id)
            return self._identifiers.get(project_id)

    async def _lookup(self, project_id: str) -> None:
        try:
            identifier = await self._client.project_identifier(project_id)
        except TrackerError as exc:
            logger.warning(
                "plane project lookup failed", extra={"project": project_id, "error": str(exc)}
            )
            return
        if identifier is not None:
            self._identifiers[project_id] = identifier


def _parse_states(results: Any, path: str) -> list[PlaneState]:
    if not isinstance(results, list):
        raise TrackerError(f"Plane GET {path}: answer has no list of results")
    return [_parse_state(item, path) for item in results]


def _parse_state(item: Any, path: str) -> PlaneState:
    fields = [item.get(key) for key in ("id", "name", "group")] if isinstance(item, dict) else []
    texts = [value for value in fields if isinstance(value, str) and value]
    if len(texts) != 3:
        raise TrackerError(f"Plane GET {path}: a state lacks id, name or group")
    return PlaneState(id=texts[0], name=texts[1], group=texts[2])


def _segment(value: str) -> str:
    """One URL path segment: ids come from webhook bodies, so never let them add a path."""
    return quote(value, safe="")


def _backoff(attempt: int) -> float:
    return min(_BACKOFF_BASE_SECONDS * (1 << (attempt - 1)), _BACKOFF_CAP_SECONDS)


def _retry_after(value: str | None, now: float) -> float | None:
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


def _log_retry(method: str, path: str, attempt: int, delay: float, failure: str) -> None:
    context = {"method": method, "path": path, "attempt": attempt, "delay": delay}
    logger.warning("plane request retried", extra={**context, "failure": failure})
