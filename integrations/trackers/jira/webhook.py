"""Jira Cloud webhooks without I/O: the signature, the event.

An admin webhook registered with a secret sends ``X-Hub-Signature: sha256=<hex>``
(WebSub style: not ``-256``); one registered without a secret sends none, and is
refused (never fail open). ``X-Atlassian-Webhook-Identifier`` stays the same on Jira's
retries: the dedupe key. Protocol facts: TRACKERS.md (Jira Cloud).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.trackers.base import (
    BadPayload,
    BadSignature,
    EventKind,
    Headers,
    Ticket,
    TrackerEvent,
)
from integrations.trackers.jira import issues, reading
from integrations.trackers.signing import signature_matches
from integrations.trackers.vocabulary import Vocabulary

SIGNATURE_HEADER = "X-Hub-Signature"
SIGNATURE_PREFIX = "sha256="
DELIVERY_HEADER = "X-Atlassian-Webhook-Identifier"
RETRY_HEADER = "X-Atlassian-Webhook-Retry"

NO_SECRET = (
    "no Jira webhook secret is configured: set [trackers.jira] webhook_secret "
    "(CONVEYOR_JIRA_WEBHOOK_SECRET) and register the webhook with the same secret"
)
NO_SIGNATURE = (
    f"{SIGNATURE_HEADER} is missing: register the Jira webhook with a secret "
    "(System → WebHooks → Secret)"
)
BAD_SIGNATURE = f"{SIGNATURE_HEADER} does not match the body (expected {SIGNATURE_PREFIX}<hex>)"
NO_DELIVERY = f"{DELIVERY_HEADER} header is missing: it is the delivery's dedupe key"

_KINDS = {
    "jira:issue_created": EventKind.CREATED,
    "jira:issue_updated": EventKind.STATE_CHANGE,
    "jira:issue_deleted": EventKind.DELETED,
}
_STATUS_FIELDS = frozenset({"status", "Status"})


def verify(secret: str, headers: Headers, body: bytes) -> None:
    """Raise BadSignature unless ``X-Hub-Signature`` signs the raw body."""
    if not secret:
        raise BadSignature(NO_SECRET)
    given = reading.header(headers, SIGNATURE_HEADER)
    if given is None:
        raise BadSignature(NO_SIGNATURE)
    if not signature_matches(secret, body, given, prefix=SIGNATURE_PREFIX):
        raise BadSignature(BAD_SIGNATURE)


def parse(
    headers: Headers,
    body: bytes,
    *,
    vocabulary: Vocabulary,
    projects: Mapping[str, str],
    base_url: str = "",
    bot_account_id: str = "",
) -> TrackerEvent:
    """The normalised event of one delivery; BadPayload saying what is wrong."""
    delivery = reading.header(headers, DELIVERY_HEADER)
    if delivery is None:
        raise BadPayload(NO_DELIVERY)
    doc = reading.load_object(body)
    name = reading.text(doc, "webhookEvent")
    if name is None:
        raise BadPayload("missing field: webhookEvent (jira:issue_updated, …)")
    user = reading.optional_mapping(doc, "user")
    event = TrackerEvent(
        tracker=issues.TRACKER,
        kind=EventKind.OTHER,
        delivery_key=f"jira:{delivery}",
        delivery_id=_attempt_id(delivery, headers),
        actor=reading.text(user, "displayName"),
        actor_id=reading.text(user, "accountId"),
        ignore="not_an_issue_event",
    )
    kind = _KINDS.get(name)
    if kind is None:  # comment_created, worklog_updated, sprint_started, …
        return event
    issue = reading.mapping(doc, "issue", BadPayload)
    ticket = issues.ticket_of(issue, vocabulary=vocabulary, fail=BadPayload, base_url=base_url)
    return _issue_event(doc, kind, ticket, event, vocabulary, projects, bot_account_id)


def _issue_event(
    doc: dict[str, Any],
    kind: EventKind,
    ticket: Ticket,
    event: TrackerEvent,
    vocabulary: Vocabulary,
    projects: Mapping[str, str],
    bot_account_id: str,
) -> TrackerEvent:
    fields = reading.optional_mapping(reading.optional_mapping(doc, "issue"), "fields")
    before, after, after_id = None, None, None
    if kind is EventKind.CREATED:
        after, after_id = issues.status_name(fields), issues.status_id(fields)
    elif kind is EventKind.STATE_CHANGE:
        change = _status_change(doc)
        if change is None:
            kind = EventKind.OTHER
        else:
            before, after, after_id = change
    return TrackerEvent(
        tracker=event.tracker,
        kind=kind,
        delivery_key=event.delivery_key,
        delivery_id=event.delivery_id,
        ticket=ticket,
        signal=vocabulary.signal(after),
        state_before=before,
        state_after=after,
        state_id=after_id,
        actor=event.actor,
        actor_id=event.actor_id,
        ignore=_ignored(kind, ticket, event.actor_id, projects, bot_account_id),
    )


def _status_change(doc: dict[str, Any]) -> tuple[str | None, str, str | None] | None:
    """(from, to, to id) of the changelog's status item; None when the status stayed."""
    items = reading.optional_mapping(doc, "changelog").get("items")
    if not isinstance(items, list):
        return None
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("fieldId") == "status" or item.get("field") in _STATUS_FIELDS:
            after = reading.text(item, "toString")
            if after is None:
                raise BadPayload("the changelog's status item has no toString")
            return reading.text(item, "fromString"), after, reading.text(item, "to")
    return None


def _ignored(
    kind: EventKind,
    ticket: Ticket,
    actor_id: str | None,
    projects: Mapping[str, str],
    bot_account_id: str,
) -> str | None:
    if bot_account_id and actor_id == bot_account_id:
        return "own_change"
    if ticket.ref.project not in projects:
        return "unmapped_project"
    if kind is EventKind.OTHER:
        return "not_a_state_change"
    return None


def _attempt_id(delivery: str, headers: Headers) -> str:
    """The identifier plus the retry count: correlation for one attempt."""
    retry = reading.header(headers, RETRY_HEADER)
    return f"{delivery}#{retry}" if retry else delivery
