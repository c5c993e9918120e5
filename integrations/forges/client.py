"""The forges' side of the shared JSON client: TrackerError translated into ForgeError at
the boundary, the forge's own message read from an error body, and page-by-page lists.

Retries, rate limits and credential scrubbing are ``JsonApi``'s (one client for every
tracker and forge API); this module only speaks the forges' language around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from integrations.forges.base import ForgeError, split_repo
from integrations.trackers.base import TrackerError
from integrations.trackers.http_api import JsonApi, segment

_MESSAGE_CHARS = 300
MAX_PAGES = 20
T = TypeVar("T")


def rate_limited(response: httpx.Response) -> bool:
    """429, or a 403 that is a rate limit (GitHub's secondary limits say so in headers)."""
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    headers = response.headers
    return "Retry-After" in headers or headers.get("X-RateLimit-Remaining") == "0"


@dataclass
class ForgeApi:
    """A JsonApi whose failures are ForgeErrors."""

    api: JsonApi

    @property
    def name(self) -> str:
        return self.api.name

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        ok: Sequence[int] = (),
    ) -> httpx.Response:
        """A 2xx response (or one whose status is in ``ok``), else ForgeError."""
        # JsonApi hands back an ``ok`` status before asking whether it is a rate limit, so
        # a 403 that a caller reads as "refused" is checked for a rate limit here first.
        for attempt in range(1, self.api.max_attempts + 1):
            response = await self._send(method, path, params, json, ok)
            if response.is_success or not rate_limited(response):
                return response
            wait = self.api.rate_limit_wait(response, attempt)
            if wait > self.api.max_wait_seconds or attempt == self.api.max_attempts:
                break
            await self.api.sleep(wait)
        failure = f"HTTP {response.status_code} {self.api.reason(response)}"
        raise ForgeError(
            f"{self.name} {method} {path} failed: {failure}",
            status=response.status_code,
            retry_after=wait if wait > self.api.max_wait_seconds else None,
        )

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json: Any,
        ok: Sequence[int],
    ) -> httpx.Response:
        try:
            return await self.api.request(method, path, params=params, json=json, ok=ok)
        except TrackerError as exc:
            raise ForgeError(str(exc), status=exc.status, retry_after=exc.retry_after) from exc

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return self.json_of(await self.request("GET", path, params=params), "GET", path)

    async def get_object(
        self, path: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return self.object_of(await self.request("GET", path, params=params), "GET", path)

    def json_of(self, response: httpx.Response, method: str, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ForgeError(f"{self.name} {method} {path}: answer is not JSON") from None

    def object_of(self, response: httpx.Response, method: str, path: str) -> dict[str, Any]:
        body = self.json_of(response, method, path)
        if not isinstance(body, dict):
            raise ForgeError(f"{self.name} {method} {path}: answer is not a JSON object")
        return body

    def parsed(self, read: Callable[[Any], T], body: Any, where: str) -> T:
        """``read(body)``, a shape problem turned into a ForgeError naming the path."""
        try:
            return read(body)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ForgeError(
                f"{self.name} {where}: answer has an unexpected shape ({exc})"
            ) from None

    def message(self, response: httpx.Response) -> str:
        """The forge's own words from an error body (``message``, GitHub's ``errors``)."""
        try:
            body = response.json()
        except ValueError:
            body = None
        parts: list[str] = []
        if isinstance(body, dict):
            if isinstance(body.get("message"), str) and body["message"]:
                parts.append(body["message"])
            for error in body.get("errors") or []:
                if isinstance(error, dict) and isinstance(error.get("message"), str):
                    parts.append(error["message"])
                elif isinstance(error, str):
                    parts.append(error)
        text = "; ".join(parts) or f"HTTP {response.status_code} {response.reason_phrase}"
        return self.api.scrub(text[:_MESSAGE_CHARS])

    async def pages(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        key: str | None = None,
        size: int = 100,
        size_param: str = "per_page",
    ) -> list[Any]:
        """Every item of a paged list (``key`` names the list inside an object answer)."""
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            query = {**(params or {}), size_param: str(size), "page": str(page)}
            response = await self.request("GET", path, params=query)
            body = self.json_of(response, "GET", path)
            found = _items(body, key)
            if found is None:
                raise ForgeError(f"{self.name} GET {path}: answer has no list of items")
            items += found
            if not found or not _has_next(response, body, len(found), len(items), size):
                return items
        raise ForgeError(f"{self.name} GET {path}: more than {MAX_PAGES} pages")


def repo_path(repo: str) -> str:
    """``/repos/{owner}/{name}``, each part one URL-encoded segment."""
    owner, name = split_repo(repo)
    return f"/repos/{segment(owner)}/{segment(name)}"


def objects(items: list[Any]) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)]


def _items(body: Any, key: str | None) -> list[Any] | None:
    if key is None:
        return body if isinstance(body, list) else None
    if not isinstance(body, dict):
        return None
    found = body.get(key)
    # Gitea answers a commit without statuses with ``"statuses": null`` (a nil Go slice).
    return [] if found is None else found if isinstance(found, list) else None


def _has_next(response: httpx.Response, body: Any, count: int, seen: int, size: int) -> bool:
    """Whether another page follows: the Link header, else a total count, else a full page.

    Gitea caps ``limit`` at its MAX_RESPONSE_ITEMS, so a short page is not always the end.
    """
    if "Link" in response.headers:
        return "next" in response.links
    total = response.headers.get("X-Total-Count")
    if total is None and isinstance(body, dict):
        total = body.get("total_count")
    if isinstance(total, int) or (isinstance(total, str) and total.isdigit()):
        return seen < int(total)
    return count >= size
