"""Plane's REST API over httpx, and small caches in front of it.

The ``httpx.AsyncClient`` is made in the app's lifespan and handed in; ``sleep`` and
``clock`` are ports too, so retries and rate limits are tested without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from integrations.trackers.base import TrackerError
from integrations.trackers.http_api import JsonApi, segment

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


_MAX_COMMENT_PAGES = 20


class PlaneClient:
    """Plane's REST API: ``X-API-Key`` auth, retries on 429/5xx/transport errors."""

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
        self._prefix = f"/api/v1/workspaces/{segment(workspace)}"
        self._base_url = base_url.rstrip("/")
        self.api = JsonApi(
            http,
            name="Plane",
            base_url=base_url,
            headers={"X-API-Key": api_key},
            secrets=[api_key],
            hints=_HINTS,
            sleep=sleep,
            clock=clock,
            max_attempts=max_attempts,
            max_wait_seconds=MAX_RATE_LIMIT_WAIT_SECONDS,
        )

    def __repr__(self) -> str:
        return f"PlaneClient({self._base_url + self._prefix!r})"  # never the API key

    async def list_states(self, project_id: str) -> list[PlaneState]:
        """Every state of the project, following Plane's cursor pagination."""
        path = f"/projects/{segment(project_id)}/states/"
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
        project = await self._get_json(f"/projects/{segment(project_id)}/", {})
        identifier = project.get("identifier") if isinstance(project, dict) else None
        return identifier if isinstance(identifier, str) and identifier else None

    async def get_issue(self, project_id: str, issue_id: str) -> dict[str, Any]:
        path = f"/projects/{segment(project_id)}/work-items/{segment(issue_id)}/"
        issue = await self._get_json(path, {"expand": "state"})
        if not isinstance(issue, dict):
            raise TrackerError(f"Plane GET {self._prefix}{path}: answer is not a work item")
        return issue

    async def work_items_page(
        self, project_id: str, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the project's work items, newest change first, and the next cursor."""
        path = f"/projects/{segment(project_id)}/work-items/"
        params = {"order_by": "-updated_at", "per_page": "100", "expand": "state"}
        if cursor:
            params["cursor"] = cursor
        page = await self._get_json(path, params)
        if isinstance(page, list):
            return [item for item in page if isinstance(item, dict)], None
        results = page.get("results") if isinstance(page, dict) else None
        if not isinstance(results, list):
            raise TrackerError(f"Plane GET {self._prefix}{path}: answer has no list of results")
        following = page.get("next_cursor")
        more = page.get("next_page_results") and isinstance(following, str) and following
        return [item for item in results if isinstance(item, dict)], following if more else None

    async def comment(self, project_id: str, issue_id: str, html: str) -> None:
        body = {"comment_html": html, "access": "INTERNAL"}
        await self._request("POST", f"{self._issue_path(project_id, issue_id)}comments/", json=body)

    async def comments_html(self, project_id: str, issue_id: str) -> list[str]:
        """The ``comment_html`` of every comment on the work item, following the cursor."""
        path = f"{self._issue_path(project_id, issue_id)}comments/"
        found: list[str] = []
        params: dict[str, str] = {"per_page": "100"}
        for _ in range(_MAX_COMMENT_PAGES):
            page = await self._get_json(path, params)
            items = page if isinstance(page, list) else page.get("results")
            if not isinstance(items, list):
                raise TrackerError(f"Plane GET {self._prefix}{path}: answer has no comments")
            found += [
                c["comment_html"]
                for c in items
                if isinstance(c, dict) and isinstance(c.get("comment_html"), str)
            ]
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not isinstance(page, dict) or not page.get("next_page_results") or not cursor:
                return found
            params = {"per_page": "100", "cursor": str(cursor)}
        raise TrackerError(f"Plane GET {self._prefix}{path}: more than {_MAX_COMMENT_PAGES} pages")

    async def set_state(self, project_id: str, issue_id: str, state_id: str) -> None:
        await self._request(
            "PATCH", self._issue_path(project_id, issue_id), json={"state": state_id}
        )

    def _issue_path(self, project_id: str | None, issue_id: str) -> str:
        if not project_id:
            raise TrackerError(f"issue {issue_id} has no Plane project id; cannot reach it")
        return f"/projects/{segment(project_id)}/work-items/{segment(issue_id)}/"

    async def _get_json(self, path: str, params: dict[str, str]) -> Any:
        return await self.api.get_json(self._prefix + path, params)

    async def _request(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        return await self.api.request(method, self._prefix + path, json=json)


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
