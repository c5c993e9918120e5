"""`server.read_token`: when set, every read endpoint (`/queue`, `/tasks*`, `/servers`,
`/events`, `/ui*`) wants it, as `Authorization: Bearer <token>` or `?token=<token>` (what
a browser's first visit and an EventSource can send). `/healthz`, `/readyz`, `/metrics`, the static
files and every write endpoint (which have their own admin token) stay as they are."""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

GUARDED = ("/queue", "/tasks", "/servers", "/events", "/ui")
READ_METHODS = frozenset({"GET", "HEAD"})
REFUSED = (
    "this endpoint needs the read token (server.read_token): send "
    "Authorization: Bearer <token>, or open the page once with ?token=<token>"
)


def guarded(method: str, path: str) -> bool:
    """Whether a request is a read the read token covers."""
    if method not in READ_METHODS:
        return False
    return any(path == prefix or path.startswith(prefix + "/") for prefix in GUARDED)


def presented(headers: dict[str, str], query: str) -> str:
    """The token a request carries: the bearer header first, else `?token=`."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = parse_qs(query, keep_blank_values=True).get("token", [])
    return values[0].strip() if values else ""


def matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class ReadTokenGate:
    """ASGI middleware: refuse a guarded read without the right token (401)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token:
            await self.app(scope, receive, send)
            return
        if not guarded(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        if matches(presented(headers, query), self.token):
            await self.app(scope, receive, send)
            return
        await _refuse(send, wants_html=_wants_html(headers, scope["path"]))


def _wants_html(headers: dict[str, str], path: str) -> bool:
    return path.startswith("/ui") and "text/html" in headers.get("accept", "")


async def _refuse(send: Send, *, wants_html: bool) -> None:
    if wants_html:
        from bot.ui.render import refused_page

        body = refused_page().encode()
        kind = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": REFUSED}).encode()
        kind = b"application/json"
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="conveyor"'),
        (b"cache-control", b"no-store"),
    ]
    if wants_html:
        headers += list(SECURITY_HEADERS)
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Sent with every dashboard page: scripts and styles only from this server (no inline
# code), no framing, and no Referer, so a `?token=` never leaves in one.
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
