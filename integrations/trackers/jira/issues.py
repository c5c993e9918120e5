"""A Jira issue (a webhook's ``issue`` or a REST v3 answer) as the port's Ticket."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from integrations.trackers.base import Ticket, TicketRef
from integrations.trackers.jira import adf, reading, wiki
from integrations.trackers.jira.reading import Fail
from integrations.trackers.vocabulary import Vocabulary

TRACKER = "jira"
FIELDS = ("status", "summary", "description", "labels", "updated", "project")


def ticket_of(
    issue: dict[str, Any], *, vocabulary: Vocabulary, fail: Fail, base_url: str = ""
) -> Ticket:
    """``base_url`` (the site) makes the ticket's link; without it, the issue's ``self``."""
    key = reading.issue_key(issue.get("key"), fail)
    fields = reading.optional_mapping(issue, "fields")
    project = reading.text(reading.optional_mapping(fields, "project"), "key")
    if project is None or not reading.is_project_key(project):
        project = reading.project_of(key)
    ref = TicketRef(
        tracker=TRACKER, project=project, issue_id=reading.issue_id(issue.get("id"), fail), key=key
    )
    state = status_name(fields)
    return Ticket(
        ref=ref,
        title=reading.text(fields, "summary") or "",
        description=description(fields.get("description")),
        url=f"{base_url or _site(issue)}/browse/{key}",
        state=state,
        labels=_labels(fields),
        signal=vocabulary.signal(state),
        updated_at=reading.timestamp(fields.get("updated")),
    )


def status_name(fields: dict[str, Any]) -> str | None:
    return reading.text(reading.optional_mapping(fields, "status"), "name")


def status_id(fields: dict[str, Any]) -> str | None:
    return reading.text(reading.optional_mapping(fields, "status"), "id")


def description(value: Any) -> str:
    """Markdown of a description: ADF (REST v3) or wiki markup (webhooks, REST v2)."""
    if isinstance(value, dict):
        return adf.to_markdown(value)
    if isinstance(value, str):
        return wiki.to_markdown(value)
    return ""


def _labels(fields: dict[str, Any]) -> tuple[str, ...]:
    raw = fields.get("labels")
    if not isinstance(raw, list):
        return ()
    return tuple(label for label in raw if isinstance(label, str) and label)


def _site(issue: dict[str, Any]) -> str:
    """``https://SITE.atlassian.net`` from ``self`` (…/rest/api/2/issue/10042)."""
    parts = urlsplit(reading.text(issue, "self") or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
