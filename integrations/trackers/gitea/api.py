"""Gitea's (and Forgejo's) REST API for issues, under ``/api/v1``.

Comments and reads have GitHub's shape, so ``IssuesApi`` serves both; listing pages by
``page``/``limit`` instead of ``Link`` and has no ETag. An issue's comment list has no
paging at all: Gitea answers every comment at once (``ListIssueComments`` takes only
``since``/``before``), with ``X-Total-Count``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import httpx

from integrations.trackers.base import Ticket, TicketRef, TrackerError
from integrations.trackers.github.api import MAX_PAGES, IssuesApi, oldest_first
from integrations.trackers.labels.issues import since_param

PAGE_SIZE = 50  # Gitea's default MAX_RESPONSE_ITEMS

HINTS = {
    401: ": the token was refused; check CONVEYOR_GITEA_TOKEN",
    403: ": the token may not do this; it needs the write:issue and read:repository scopes",
}


def api_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}", "Accept": "application/json"}


@dataclass
class GiteaIssuesApi(IssuesApi):
    """Issues of the mapped repositories on one Gitea or Forgejo instance."""

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """Whether a comment on the issue carries ``marker`` (Gitea keeps the Markdown as
        posted, the hidden ``<!-- marker -->`` included). One request: the list is whole."""
        path = self.issue_path(ref) + "/comments"
        response = await self.api.request("GET", path)
        return any(marker in body for body in self.comment_bodies(ref, response, path))

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        """Issues updated at or after ``since``, oldest first, page by page."""
        path = self.issues_path(project)
        params = {"state": "all", "type": "issues", "since": since_param(since)}
        params["limit"] = str(PAGE_SIZE)
        tickets: list[Ticket] = []
        seen = 0
        for page in range(1, MAX_PAGES + 1):
            response = await self.api.request("GET", path, params={**params, "page": str(page)})
            items = self.api.json_of(response, "GET", path)
            tickets += self.tickets(project, items)
            seen += len(items)
            if _last_page(response, len(items), seen):
                return oldest_first(tickets)
        raise TrackerError(f"{self.api.name}: {project} lists more than {MAX_PAGES} pages")


def _last_page(response: httpx.Response, count: int, seen: int) -> bool:
    """An empty page, or a short one, ends the list; ``X-Total-Count`` wins when sent (an
    instance whose MAX_RESPONSE_ITEMS is below our limit answers short pages throughout)."""
    if count == 0:
        return True
    total = response.headers.get("X-Total-Count", "")
    if total.isdigit():
        return seen >= int(total)
    return count < PAGE_SIZE
