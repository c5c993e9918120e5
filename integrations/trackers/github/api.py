"""GitHub's REST API for issues: a comment, one issue, the issues changed since a time.

Every call goes through ``JsonApi`` (retries, ``Retry-After``, the token never in a
message). Gitea's issue API has the same shape under ``/api/v1``: ``gitea/api.py``
reuses this class and lists with its own paging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from integrations.trackers.base import BadPayload, Gone, Notice, Ticket, TicketRef, TrackerError
from integrations.trackers.http_api import JsonApi, segment
from integrations.trackers.labels.fields import is_pull_request, issue_number
from integrations.trackers.labels.issues import ProjectMap, since_param, split_issue_id, ticket_of
from integrations.trackers.labels.rules import LabelRules

API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 50  # 5,000 changed issues in one pass: more means the watermark is far off
MAX_COMMENT_PAGES = 50  # 5,000 comments on one issue: more is not a ticket conveyor works on

HINTS = {
    401: ": the token was refused; check CONVEYOR_GITHUB_TOKEN",
    403: (
        ": the token may not do this; a fine-grained token needs Issues: read and write on "
        "the repository (a classic token: the repo scope)"
    ),
}


def api_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
    }


def rate_limited(response: httpx.Response) -> bool:
    """429, or GitHub's 403 secondary limit (``Retry-After``, or no requests remaining)."""
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    headers = response.headers
    return "Retry-After" in headers or headers.get("X-RateLimit-Remaining") == "0"


@dataclass(frozen=True)
class _Listed:
    """The last answer to one project's list query, for ``If-None-Match``."""

    since: str
    etag: str
    tickets: tuple[Ticket, ...]


@dataclass
class IssuesApi:
    """Issues of the mapped repositories, through one ``JsonApi``."""

    api: JsonApi
    projects: ProjectMap
    rules: LabelRules
    _listed: dict[str, _Listed] = field(default_factory=dict)

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        path = self.issue_path(ref) + "/comments"
        await self.api.request("POST", path, json={"body": notice.as_markdown()})

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """Whether a comment on the issue carries ``marker``: GitHub keeps the Markdown as
        posted, the hidden ``<!-- marker -->`` included. Pages by ``Link: rel="next"``
        (oldest first, 100 a page) and stops at the first comment that has it."""
        path = self.issue_path(ref) + "/comments"
        response = await self.api.request("GET", path, params={"per_page": str(PER_PAGE)})
        for page in range(1, MAX_COMMENT_PAGES + 1):
            if any(marker in body for body in self.comment_bodies(ref, response, path)):
                return True
            next_url = response.links.get("next", {}).get("url")
            if not next_url:
                return False
            if page == MAX_COMMENT_PAGES:
                break
            path = self._same_api(next_url)
            response = await self.api.request("GET", path)
        raise TrackerError(
            f"{self.api.name}: {ref.key} has more than {MAX_COMMENT_PAGES} pages of comments"
        )

    def comment_bodies(self, ref: TicketRef, response: httpx.Response, path: str) -> list[str]:
        """The ``body`` of every comment in one list answer (both forges' shape)."""
        items = self.api.json_of(response, "GET", path)
        if not isinstance(items, list):
            raise TrackerError(f"{self.api.name}: the comments of {ref.key} are not a list")
        return [
            item["body"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("body"), str)
        ]

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        """The issue now; Gone on 410, or on 404 when the repository itself is readable."""
        path = self.issue_path(ref)
        response = await self.api.request("GET", path, ok=(404, 410))
        if response.status_code == 404:
            await self._repository_is_readable(ref)
        if response.status_code in (404, 410):
            return Gone(response.status_code)
        return self.ticket(self.api.json_of(response, "GET", path), ref)

    async def _repository_is_readable(self, ref: TicketRef) -> None:
        # A private repository answers 404 to a token that cannot see it: that is a
        # credentials problem, and reading it as "every issue is gone" would stop them all.
        owner, name, _ = self.split(ref.issue_id)
        path = f"/repos/{segment(owner)}/{segment(name)}"
        response = await self.api.request("GET", path, ok=(404,))
        if response.status_code == 404:
            raise TrackerError(
                f"{self.api.name}: repository {ref.project} answers 404: it was renamed or "
                "deleted, or the token cannot see it",
                status=404,
            )

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        """Issues updated at or after ``since``, oldest first (pull requests skipped)."""
        path = self.issues_path(project)
        params = {
            "state": "all",
            "since": since_param(since),
            "sort": "updated",
            "direction": "desc",
            "per_page": str(PER_PAGE),
        }
        listed = self._listed.get(project)
        headers = (
            {"If-None-Match": listed.etag} if listed and listed.since == params["since"] else {}
        )
        response = await self.api.request("GET", path, params=params, headers=headers, ok=(304,))
        if response.status_code == 304:
            if listed is None or not headers:
                raise TrackerError(f"{self.api.name}: 304 for a list that was never asked for")
            # Sorted by update, newest first: an unchanged first page means nothing changed.
            return list(listed.tickets)
        tickets = await self._pages(project, response, path)
        etag = response.headers.get("ETag")
        if etag:
            self._listed[project] = _Listed(params["since"], etag, tuple(tickets))
        return tickets

    async def _pages(self, project: str, first: httpx.Response, path: str) -> list[Ticket]:
        tickets = self.tickets(project, self.api.json_of(first, "GET", path))
        response, pages = first, 1
        while next_url := response.links.get("next", {}).get("url"):
            if pages >= MAX_PAGES:
                raise TrackerError(f"{self.api.name}: {project} lists more than {MAX_PAGES} pages")
            next_path = self._same_api(next_url)
            response = await self.api.request("GET", next_path)
            tickets += self.tickets(project, self.api.json_of(response, "GET", next_path))
            pages += 1
        return oldest_first(tickets)

    def _same_api(self, url: str) -> str:
        """A ``Link`` URL as a path under the API: the token is never sent anywhere else."""
        base = self.api.base_url + "/"
        if not url.startswith(base):
            raise TrackerError(f"{self.api.name}: a next-page link leaves {self.api.base_url}")
        return "/" + url[len(base) :]

    # -- shapes --------------------------------------------------------------------------

    def tickets(self, project: str, items: Any) -> list[Ticket]:
        """Tickets of a list answer, pull requests skipped."""
        if not isinstance(items, list):
            raise TrackerError(f"{self.api.name}: the issue list of {project} is not a list")
        tickets = []
        for item in items:
            if not isinstance(item, dict):
                raise TrackerError(f"{self.api.name}: the issue list of {project} has a non-object")
            if not is_pull_request(item):
                tickets.append(self.ticket(item, self.listed_ref(project, item)))
        return tickets

    def listed_ref(self, project: str, item: Mapping[str, Any]) -> TicketRef:
        try:
            ref = self.projects.ref(project, issue_number(item.get("number"), "number"))
        except BadPayload as exc:
            raise TrackerError(f"{self.api.name}: an issue of {project}: {exc.message}") from None
        if ref is None:
            raise TrackerError(f"{self.api.name}: {project} is not a mapped tracker_project")
        return ref

    def ticket(self, issue: Any, ref: TicketRef) -> Ticket:
        if not isinstance(issue, dict):
            raise TrackerError(f"{self.api.name}: issue {ref.issue_id} is not a JSON object")
        try:
            return ticket_of(issue, ref, self.rules)
        except BadPayload as exc:
            raise TrackerError(f"{self.api.name}: issue {ref.issue_id}: {exc.message}") from None

    def split(self, issue_id: str) -> tuple[str, str, str]:
        """(owner, name, number) of ``owner/name#12``, or TrackerError."""
        try:
            return split_issue_id(issue_id)
        except ValueError as exc:
            raise TrackerError(f"{self.api.name}: {exc}") from None

    def issue_path(self, ref: TicketRef) -> str:
        owner, name, number = self.split(ref.issue_id)
        return f"/repos/{segment(owner)}/{segment(name)}/issues/{segment(number)}"

    def issues_path(self, project: str) -> str:
        found = self.projects.find(project)
        if found is None:
            raise TrackerError(f"{self.api.name}: {project} is not a mapped tracker_project")
        owner, name, _ = self.split(f"{found[0]}#1")
        return f"/repos/{segment(owner)}/{segment(name)}/issues"


def oldest_first(tickets: list[Ticket]) -> list[Ticket]:
    """In the tracker's order of change, as reconciliation applies them."""
    return sorted(tickets, key=lambda t: t.updated_at or datetime.min.replace(tzinfo=UTC))
