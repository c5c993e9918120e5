"""A small synchronous client for a running conveyor's HTTP API (the CLI verbs, the demo).

Built on the standard library's `http.client`, not httpx: importing httpx alone takes
longer than the whole budget of a quick verb (`conveyor queue` answers in < 0.3 s), and a
CLI call is one request to a known server. Every failure becomes a ServerError whose
message is one readable line: the server's own words for what it refused, or what to
check when it cannot be reached.
"""

from __future__ import annotations

import http.client
import json as jsonlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from bot.errors import ServerError

TIMEOUT_SECONDS = 10.0
UNREACHABLE = "cannot reach conveyor at {url} (is `conveyor serve` running?)"
TIMED_OUT = "conveyor at {url} did not answer within {seconds:g} s; try again or check its log"
BAD_URL = "{url} is not a usable server URL (expected e.g. http://127.0.0.1:8080)"
NOT_JSON = "conveyor at {url} answered {status} with a body that is not JSON"
FAILED = "conveyor answered {status}: {message}"
# The server's own message says it all for these: which ref, which token, what state.
_OWN_WORDS = {401, 403, 404, 409}


@dataclass(frozen=True)
class Reply:
    """A 2xx answer: its status and its JSON document."""

    status: int
    doc: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """Any answer, as it came: status, headers (lower-case names) and body."""

    status: int
    reason: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


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
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})  # sent with every request (a read token)

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: each request uses its own connection."""

    def get(self, path: str, params: dict[str, Any] | None = None) -> Reply:
        return self._json(self.request("GET", path, params=params))

    def get_text(self, path: str, params: dict[str, Any] | None = None) -> Answer:
        """A text answer (a log); a refusal still becomes one ServerError line."""
        answer = self.request("GET", path, params=params)
        if not answer.ok:
            raise ServerError(self._complaint(answer, _doc(answer.body)))
        return answer

    def post(
        self,
        path: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if json is not None:
            content = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        return self._json(self.request("POST", path, body=content, headers=sent))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request on a fresh connection; transport failures → ServerError."""
        connection, base = self._connection()
        target = base + path + (f"?{urlencode(params)}" if params else "")
        try:
            connection.request(
                method, target, body=body, headers={**self.headers, **(headers or {})}
            )
            response = connection.getresponse()
            data = response.read()
        except TimeoutError:
            raise ServerError(TIMED_OUT.format(url=self.url, seconds=self.timeout)) from None
        except (OSError, http.client.HTTPException):
            raise ServerError(UNREACHABLE.format(url=self.url)) from None
        finally:
            connection.close()
        found = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, response.reason, data, found)

    def _connection(self) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ServerError(BAD_URL.format(url=self.url))
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        return kind(parts.hostname, port, timeout=self.timeout), parts.path.rstrip("/")

    def _json(self, answer: Answer) -> Reply:
        doc = _doc(answer.body)
        if answer.ok and isinstance(doc, dict):
            return Reply(answer.status, doc)
        raise ServerError(self._complaint(answer, doc))

    def _complaint(self, answer: Answer, doc: Any) -> str:
        message = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(message, str) or not message:
            if answer.ok:
                return NOT_JSON.format(url=self.url, status=answer.status)
            text = answer.body.decode("utf-8", "replace")
            message = _first_line(text) or answer.reason
        if answer.status in _OWN_WORDS:
            return message
        return FAILED.format(status=answer.status, message=message)


def _doc(body: bytes) -> Any:
    try:
        return jsonlib.loads(body)
    except ValueError:
        return None


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]
