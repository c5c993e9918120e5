"""What conveyor asks Jira Cloud (REST v3, Basic ``email:api_token``): post a comment
in Atlassian Document Format, read an issue, list a project's changed issues through
``POST /rest/api/3/search/jql`` (the old ``/search`` is being removed)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import zoneinfo
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import httpx

from integrations.trackers.base import Gone, Notice, Ticket, TicketRef, TrackerError
from integrations.trackers.http_api import Clock, JsonApi, Sleep, segment
from integrations.trackers.jira import adf, issues, reading
from integrations.trackers.vocabulary import Vocabulary

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_COMMENT_PAGES = 50
COMMENT_PROPERTY = "conveyor"  # the comment property that carries a Notice's marker
# JQL reads a date in the API user's time zone. Unknown, the wall clock of UTC-12 is the
# earliest reading any zone can give: more issues come back, none is missed.
_EARLIEST_ZONE = timezone(timedelta(hours=-12))
_HINTS = {
    401: " (check [trackers.jira] email and api_token: an Atlassian API token for that account)",
    403: " (check that the API token's account may browse and comment in this project)",
}


class JiraApi:
    """The port's API side for one Jira Cloud site."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        email: str,
        api_token: str,
        vocabulary: Vocabulary,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        basic = base64.b64encode(f"{email}:{api_token}".encode()).decode("ascii")
        self.base_url = base_url.rstrip("/")
        self.vocabulary = vocabulary
        self.api = JsonApi(
            http,
            "jira",
            self.base_url,
            headers={"Authorization": f"Basic {basic}"},
            secrets=[api_token, basic],
            hints=_HINTS,
            sleep=sleep,
            clock=clock,
        )
        self._zone: tzinfo | None = None

    def __repr__(self) -> str:
        return f"JiraApi({self.base_url!r})"  # never the token

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        body: dict[str, Any] = {"body": adf.notice_document(notice)}
        if notice.marker:
            # The marker is in the body as text (ADF keeps no HTML comments), and rides
            # along as a comment property as well.
            body["properties"] = [{"key": COMMENT_PROPERTY, "value": {"marker": notice.marker}}]
        await self.api.request("POST", f"/rest/api/3/issue/{_id_or_key(ref)}/comment", json=body)

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """Whether a comment on the issue carries ``marker``: in its ADF body (where
        ``comment`` puts it as text) or in its properties, should Jira list them. Newest
        first (``orderBy=-created``), paged by ``startAt``/``maxResults`` against ``total``."""
        path = f"/rest/api/3/issue/{_id_or_key(ref)}/comment"
        start = 0
        for _ in range(MAX_COMMENT_PAGES):
            params = {"startAt": str(start), "maxResults": str(PAGE_SIZE), "orderBy": "-created"}
            page = await self.api.get_json(path, params)
            comments = page.get("comments") if isinstance(page, dict) else None
            if not isinstance(comments, list):
                raise TrackerError(f"jira comments of {ref.key}: the answer has no comments list")
            if any(_carries(comment, marker) for comment in comments):
                return True
            start += len(comments)
            total = page.get("total")
            if not comments or not isinstance(total, int) or start >= total:
                return False
        raise TrackerError(f"jira: {ref.key} has more than {MAX_COMMENT_PAGES} pages of comments")

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        path = f"/rest/api/3/issue/{_id_or_key(ref)}"
        params = {"fields": ",".join(issues.FIELDS)}
        response = await self.api.request("GET", path, params=params, ok=(404, 410))
        if response.status_code in (404, 410):
            return Gone(response.status_code)
        return self._ticket(self.api.json_of(response, "GET", path))

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        """Every issue of the project updated at or after ``since``, oldest first."""
        if not reading.is_project_key(project):
            raise TrackerError(f"{project!r} is not a Jira project key (PROJ)")
        if since.tzinfo is None:
            raise ValueError("since must be an aware datetime")
        stamp = since.astimezone(await self._user_zone()).strftime("%Y-%m-%d %H:%M")
        query: dict[str, Any] = {
            "jql": f'project = "{project}" AND updated >= "{stamp}" ORDER BY updated ASC',
            "fields": list(issues.FIELDS),
            "maxResults": PAGE_SIZE,
        }
        found: list[Ticket] = []
        while True:
            page = await self._search(query)
            found += [self._ticket(issue) for issue in page["issues"]]
            token = page.get("nextPageToken")
            if page.get("isLast") is True or not isinstance(token, str) or not token:
                break
            if token == query.get("nextPageToken"):
                raise TrackerError(f"jira search for {project}: nextPageToken did not advance")
            query["nextPageToken"] = token
        # JQL has minute resolution (the stamp was rounded down): drop what is older.
        fresh = [t for t in found if t.updated_at is None or t.updated_at >= since]
        return sorted(fresh, key=lambda t: t.updated_at or since)

    async def _search(self, query: dict[str, Any]) -> dict[str, Any]:
        path = "/rest/api/3/search/jql"
        response = await self.api.request("POST", path, json=query)
        page = self.api.json_of(response, "POST", path)
        if not isinstance(page, dict) or not isinstance(page.get("issues"), list):
            raise TrackerError("jira search/jql answered without an issues list")
        return page

    async def _user_zone(self) -> tzinfo:
        """The API user's time zone (``GET /myself``), which JQL dates are read in."""
        if self._zone is None:
            me = await self.api.get_json("/rest/api/3/myself")
            name = me.get("timeZone") if isinstance(me, dict) else None
            self._zone = _zone(name)
        return self._zone

    def _ticket(self, issue: Any) -> Ticket:
        if not isinstance(issue, dict):
            raise TrackerError("jira answered an issue that is not an object")
        return issues.ticket_of(
            issue, vocabulary=self.vocabulary, fail=_answer_error, base_url=self.base_url
        )


def _carries(comment: Any, marker: str) -> bool:
    if not isinstance(comment, dict):
        return False
    if marker in adf.plain_text(comment.get("body")):
        return True
    properties = comment.get("properties")
    return isinstance(properties, list) and any(
        isinstance(p, dict)
        and p.get("key") == COMMENT_PROPERTY
        and isinstance(p.get("value"), dict)
        and p["value"].get("marker") == marker
        for p in properties
    )


def _id_or_key(ref: TicketRef) -> str:
    # The id survives a move to another project; the key does not.
    return segment(ref.issue_id if reading.is_issue_id(ref.issue_id) else ref.key)


def _zone(name: Any) -> tzinfo:
    if isinstance(name, str) and name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    log.warning("jira user time zone unknown", extra={"zone": str(name)[:64]})
    return _EARLIEST_ZONE


def _answer_error(message: str) -> Exception:
    return TrackerError(f"jira answered an issue conveyor cannot read: {message}")
