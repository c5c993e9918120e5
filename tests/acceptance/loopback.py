"""Trackers on 127.0.0.1 for a server under test that runs as a subprocess (respx cannot
reach into it): each fake answers the few calls conveyor makes, in the tracker's own shape
and paging, holds the ticket's comments, and signs the webhook deliveries that start and
stop its ticket.

The ticket already carries ``PEOPLE`` comments by people, so that conveyor's lookup of
its marker has to page where the API pages (GitHub's ``Link``, Linear's cursor, Jira's
``startAt``); Gitea lists them all at once."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from integrations.trackers.gitea import payloads as gitea_payloads
from integrations.trackers.github import payloads as github_payloads
from integrations.trackers.jira import payloads as jira_payloads
from integrations.trackers.linear import payloads as linear_payloads
from integrations.trackers.plane.webhook import sign
from tests.harness import PROJECT, SECRET, Harness

PEOPLE = 120  # more than one page of 100 (what conveyor asks for)
Headers = dict[str, str]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass(frozen=True)
class Answer:
    status: int
    doc: Any
    headers: tuple[tuple[str, str], ...] = ()


class LoopbackTracker:
    """One tracker: its API on a ThreadingHTTPServer, and its webhook sender.

    ``posted`` is the text of every comment conveyor posted, in order; ``unknown`` every
    request the fake does not know (answered 404), which a test expects to stay empty."""

    name = ""  # the tracker, as in [trackers.NAME] and /webhooks/NAME
    key = ""  # the task's key conveyor makes of the ticket
    project = ""  # the repo's tracker_project

    def __init__(self) -> None:
        self.posted: list[str] = []
        self.unknown: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.answer()

            def do_POST(self) -> None:  # noqa: N802
                self.answer()

            def answer(self) -> None:
                parts = urlsplit(self.path)
                size = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    dict(self.headers.items()),
                    self.rfile.read(size),
                )
                with outer.lock:
                    answer = outer.answer(request)
                    if answer is None:
                        outer.unknown.append(f"{request.method} {self.path}")
                        answer = Answer(404, {"message": "Not Found"})
                body = json.dumps(answer.doc).encode()
                self.send_response(answer.status)
                for name, value in (("Content-Type", "application/json"), *answer.headers):
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, request: Request) -> Answer | None:
        raise NotImplementedError

    def section(self) -> dict[str, Any]:
        """The ``[trackers.NAME]`` table that points conveyor at this fake."""
        raise NotImplementedError

    def delivery(self, stop: bool) -> tuple[Headers, bytes]:
        """A signed webhook moving the ticket to its start (or, with ``stop``, STOP)."""
        raise NotImplementedError

    def with_marker(self, marker: str) -> int:
        with self.lock:
            return sum(marker in text for text in self.posted)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakePlane(LoopbackTracker):
    """Plane's work-item comments: every GET is the (one-page) comment list."""

    name, key, project = "plane", "PROJ-42", PROJECT

    def __init__(self) -> None:
        super().__init__()
        self.payloads = Harness.__new__(Harness)  # only for its payload builder
        self.payloads.sent = 0

    def answer(self, request: Request) -> Answer | None:
        if request.method == "GET":
            results = [{"comment_html": c} for c in self.posted]
            page = {"results": results, "next_cursor": "100:1:0", "next_page_results": False}
            return Answer(200, page)
        if request.path.endswith("/comments/"):
            self.posted.append(request.json()["comment_html"])
        return Answer(201, {"id": "c1"})

    def section(self) -> dict[str, Any]:
        return {"base_url": self.url, "api_key": "plane-api-key-0123456789", "workspace": "acme"}

    def delivery(self, stop: bool) -> tuple[Headers, bytes]:
        return plane_delivery(self.payloads.payload("STOP" if stop else "To Analyse"))


def plane_delivery(body: bytes) -> tuple[Headers, bytes]:
    """Plane's headers for ``body``: signed, a new delivery id on every send."""
    headers = {
        "X-Plane-Signature": sign(SECRET, body),
        "X-Plane-Delivery": f"d{time.time_ns()}",
        "Content-Type": "application/json",
    }
    return headers, body


class _Forge(LoopbackTracker):
    """GitHub's and Gitea's issue comments: a JSON list of ``{"id", "body", …}``."""

    full_name, number, token, secret = "acme/widgets", 42, "", ""
    prefix = ""  # where the API lives on the host (Gitea: /api/v1)
    auth = ""  # the Authorization header the token makes

    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count(1)
        self.comments = [self.comment(f"a person's comment {i}", "ada") for i in range(PEOPLE)]

    def comment(self, body: str, login: str) -> dict[str, Any]:
        n = next(self.ids)
        stamp = f"2026-12-01T10:{n // 60 % 60:02d}:{n % 60:02d}Z"
        return {
            "id": 9000 + n,
            "body": body,
            "user": {"login": login, "id": 500 + len(login)},
            "created_at": stamp,
            "updated_at": stamp,
        }

    @property
    def comments_path(self) -> str:
        return f"{self.prefix}/repos/{self.full_name}/issues/{self.number}/comments"

    def answer(self, request: Request) -> Answer | None:
        if request.path != self.comments_path:
            return None
        if request.headers.get("Authorization") != self.auth:
            return Answer(401, {"message": "Bad credentials"})
        if request.method == "POST":
            made = self.comment(request.json()["body"], "conveyor-bot")
            self.comments.append(made)
            self.posted.append(made["body"])
            return Answer(201, made)
        return self.listing(request)

    def listing(self, request: Request) -> Answer:
        raise NotImplementedError

    def section(self) -> dict[str, Any]:
        return {"webhook_secret": self.secret, "token": self.token}


class FakeGitHub(_Forge):
    """``GET /repos/{o}/{r}/issues/{n}/comments``: ``per_page`` (30 by default, at most
    100) and ``page``, oldest first, the other pages in ``Link``."""

    name, key, project = "github", "app#42", "acme/widgets"
    token, secret = "ghp_loopback_token_0123456789", "github-webhook-secret-0123456789"
    auth = f"Bearer {token}"

    def listing(self, request: Request) -> Answer:
        size = min(int(request.query.get("per_page", "30")), 100)
        page = int(request.query.get("page", "1"))
        last = max(1, -(-len(self.comments) // size))
        base = f"{self.url}{self.comments_path}?per_page={size}&page="
        rels = {"next": page + 1, "last": last} if page < last else {}
        rels |= {"prev": page - 1, "first": 1} if page > 1 else {}
        link = ", ".join(f'<{base}{n}>; rel="{rel}"' for rel, n in rels.items())
        items = self.comments[(page - 1) * size : page * size]
        return Answer(200, items, (("Link", link),) if link else ())

    def section(self) -> dict[str, Any]:
        return super().section() | {"api_url": self.url}

    def delivery(self, stop: bool) -> tuple[Headers, bytes]:
        return github_payloads.build_delivery(
            secret=self.secret,
            full_name=self.full_name,
            number=self.number,
            label="conveyor:stop" if stop else "conveyor:analyse",
            labels=["conveyor:analyse"] if stop else [],
            api_url=self.url,
        )


class FakeGitea(_Forge):
    """``GET /api/v1/repos/{o}/{r}/issues/{n}/comments``: the whole list, no paging."""

    name, key, project = "gitea", "app#42", "acme/gadgets"
    full_name, prefix = "acme/gadgets", "/api/v1"
    token, secret = "gitea_loopback_token_0123456789", "gitea-webhook-secret-0123456789"
    auth = f"token {token}"

    def listing(self, request: Request) -> Answer:
        return Answer(200, self.comments, (("X-Total-Count", str(len(self.comments))),))

    def section(self) -> dict[str, Any]:
        return super().section() | {"base_url": self.url}

    def delivery(self, stop: bool) -> tuple[Headers, bytes]:
        # Gitea sends the issue's full label list: STOP added to the start label.
        return gitea_payloads.build_delivery(
            secret=self.secret,
            full_name=self.full_name,
            number=self.number,
            label="conveyor:stop" if stop else "conveyor:analyse",
            labels=["conveyor:analyse"] if stop else [],
            base_url=self.url,
        )


class FakeLinear(LoopbackTracker):
    """``POST /graphql``: ``issue(id).comments(first, after)`` with ``pageInfo``, oldest
    first, and ``commentCreate``; GraphQL errors as Linear answers them."""

    name, key, project = "linear", "ENG-42", "ENG"
    api_key, secret = "lin_api_loopback_0123456789", "lin_wh_loopback_0123456789"

    def __init__(self) -> None:
        super().__init__()
        self.issue_id = linear_payloads.issue_id_of(self.key)
        self.bodies = [f"a person's comment {i}" for i in range(PEOPLE)]

    def answer(self, request: Request) -> Answer | None:
        if (request.method, request.path) != ("POST", "/graphql"):
            return None
        if request.headers.get("Authorization") != self.api_key:
            return _graphql_error(401, "Authentication required", "AUTHENTICATION_ERROR")
        doc = request.json()
        variables = doc.get("variables") or {}
        if doc.get("operationName") == "ConveyorComments" and "comments(" in doc["query"]:
            if variables.get("id") != self.issue_id:
                return _graphql_error(200, "Entity not found: Issue", "INVALID_INPUT")
            return Answer(200, {"data": {"issue": {"comments": self.page(variables)}}})
        if doc.get("operationName") == "ConveyorComment" and "commentCreate(" in doc["query"]:
            made = variables["input"]
            if made.get("issueId") != self.issue_id:
                return _graphql_error(200, "Entity not found: Issue", "INVALID_INPUT")
            self.bodies.append(made["body"])
            self.posted.append(made["body"])
            comment = {"id": f"c-{len(self.bodies)}"}
            return Answer(200, {"data": {"commentCreate": {"success": True, "comment": comment}}})
        return None

    def page(self, variables: dict[str, Any]) -> dict[str, Any]:
        start = int(variables["after"].removeprefix("cursor-")) if variables.get("after") else 0
        end = start + min(int(variables.get("first") or 50), 250)
        nodes = [{"body": b} for b in self.bodies[start:end]]
        more = end < len(self.bodies)
        info = {"hasNextPage": more, "endCursor": f"cursor-{end}" if nodes else None}
        return {"nodes": nodes, "pageInfo": info}

    def section(self) -> dict[str, Any]:
        return {
            "webhook_secret": self.secret,
            "api_key": self.api_key,
            "api_url": f"{self.url}/graphql",
        }

    def delivery(self, stop: bool) -> tuple[Headers, bytes]:
        return linear_payloads.issue_update(
            key=self.key,
            state="STOP" if stop else "To Analyse",
            state_type="canceled" if stop else "unstarted",
            secret=self.secret,
            now=time.time(),
        )


def _graphql_error(status: int, message: str, code: str) -> Answer:
    return Answer(status, {"errors": [{"message": message, "extensions": {"code": code}}]})


class FakeJira(LoopbackTracker):
    """``GET/POST /rest/api/3/issue/{idOrKey}/comment``: ``startAt``/``maxResults``
    against ``total``, ``orderBy=-created`` newest first, ADF bodies; comment
    properties are listed only with ``expand=properties`` (conveyor does not ask)."""

    name, key, project = "jira", "OPS-42", "OPS"
    email, api_token = "bot@acme.test", "jira-api-token-loopback-0123456789"
    secret = "jira-webhook-secret-0123456789"

    def __init__(self) -> None:
        super().__init__()
        self.issue_id = jira_payloads.issue_id_of(self.key)
        self.auth = "Basic " + base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
        self.ids = itertools.count(1)
        self.comments = [self.comment(_adf(f"a person's comment {i}")) for i in range(PEOPLE)]

    def comment(self, body: Any) -> dict[str, Any]:
        n = next(self.ids)
        stamp = f"2026-12-01T10:{n // 60 % 60:02d}:{n % 60:02d}.000+0000"
        return {"id": str(10000 + n), "body": body, "created": stamp, "updated": stamp}

    def answer(self, request: Request) -> Answer | None:
        paths = {f"/rest/api/3/issue/{ref}/comment" for ref in (self.issue_id, self.key)}
        if request.path not in paths:
            return None
        if request.headers.get("Authorization") != self.auth:
            return Answer(401, {"errorMessages": ["Client must be authenticated"]})
        if request.method == "POST":
            made = self.comment(request.json()["body"])
            self.comments.append(made)
            self.posted.append(json.dumps(made["body"]))
            return Answer(201, made)
        start = int(request.query.get("startAt", "0"))
        size = min(int(request.query.get("maxResults", "5000")), 5000)
        newest_first = request.query.get("orderBy") == "-created"
        ordered = self.comments[::-1] if newest_first else self.comments
        page = ordered[start : start + size]
        doc = {"startAt": start, "maxResults": size, "total": len(ordered), "comments": page}
        return Answer(200, doc)

    def section(self) -> dict[str, Any]:
        return {
            "webhook_secret": self.secret,
            "base_url": self.url,
            "email": self.email,
            "api_token": self.api_token,
        }

    def delivery(self, stop: bool) -> tuple[Headers, bytes]:
        return jira_payloads.issue_status_change(
            key=self.key,
            state="STOP" if stop else "To Analyse",
            before="To Analyse" if stop else "To Do",
            secret=self.secret,
            now=time.time(),
            base_url=self.url,
        )


def _adf(text: str) -> dict[str, Any]:
    paragraph = {"type": "paragraph", "content": [{"type": "text", "text": text}]}
    return {"type": "doc", "version": 1, "content": [paragraph]}


TRACKERS: dict[str, type[LoopbackTracker]] = {
    kind.name: kind for kind in (FakeGitHub, FakeGitea, FakeLinear, FakeJira)
}
