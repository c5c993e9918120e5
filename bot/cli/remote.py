"""A small synchronous client for a running conveyor's HTTP API (the CLI verbs, the demo).

Every failure becomes a ServerError whose message is one readable line: the server's own
words for what it refused, or what to check when it cannot be reached.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from bot.errors import ServerError

TIMEOUT_SECONDS = 10.0
UNREACHABLE = "cannot reach conveyor at {url} (is `conveyor serve` running?)"
TIMED_OUT = "conveyor at {url} did not answer within {seconds:g} s; try again or check its log"
BAD_URL = "{url} is not a usable server URL (expected e.g. http://127.0.0.1:8080)"
NOT_JSON = "conveyor at {url} answered {status} with a body that is not JSON"
FAILED = "conveyor answered {status}: {message}"
# The server's own message says it all for these: which ref, which token.
_OWN_WORDS = {401, 403, 404}


@dataclass(frozen=True)
class Reply:
    """A 2xx answer: its status and its JSON document."""

    status: int
    doc: dict[str, Any]


def ref_path(prefix: str, ref: str, suffix: str = "") -> str:
    """`/tasks/{ref}…` with the ref quoted: an issue id or key may hold any character."""
    return f"{prefix}/{quote(ref, safe='')}{suffix}"


class ServerClient:
    """GET and POST against one server URL; 4xx/5xx and transport errors → ServerError."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Reply:
        return self._send("GET", path, params=params)

    def post(
        self,
        path: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return self._send("POST", path, content=content, json=json, headers=headers)

    def _send(self, method: str, path: str, **kw: Any) -> Reply:
        try:
            response = self._http.request(method, self.url + path, **kw)
        except httpx.TimeoutException:
            raise ServerError(TIMED_OUT.format(url=self.url, seconds=self.timeout)) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise ServerError(BAD_URL.format(url=self.url)) from None
        except httpx.HTTPError:
            raise ServerError(UNREACHABLE.format(url=self.url)) from None
        return self._read(response)

    def _read(self, response: httpx.Response) -> Reply:
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if response.is_success and isinstance(doc, dict):
            return Reply(response.status_code, doc)
        raise ServerError(self._complaint(response, doc))

    def _complaint(self, response: httpx.Response, doc: Any) -> str:
        status = response.status_code
        message = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(message, str) or not message:
            if response.is_success:
                return NOT_JSON.format(url=self.url, status=status)
            message = _first_line(response.text) or response.reason_phrase
        return message if status in _OWN_WORDS else FAILED.format(status=status, message=message)


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]
