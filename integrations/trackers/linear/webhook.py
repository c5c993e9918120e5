"""Linear webhooks without I/O: the signature, the replay window, the event.

Linear signs the raw body (``Linear-Signature``: hex HMAC-SHA256) and puts the send
time in the signed body (``webhookTimestamp``, milliseconds), so a captured delivery
replayed later is refused. Protocol facts: TRACKERS.md (Linear).
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
from integrations.trackers.linear import issues, reading
from integrations.trackers.signing import signature_matches
from integrations.trackers.vocabulary import Vocabulary

SIGNATURE_HEADER = "Linear-Signature"
DELIVERY_HEADER = "Linear-Delivery"
EVENT_HEADER = "Linear-Event"
TOLERANCE_SECONDS = 60.0

NO_SECRET = (
    "no Linear webhook secret is configured: set [trackers.linear] webhook_secret "
    "(CONVEYOR_LINEAR_WEBHOOK_SECRET) to the webhook's signing secret"
)
BAD_SIGNATURE = f"{SIGNATURE_HEADER} is missing or does not match the body"
NO_TIMESTAMP = (
    "body has no webhookTimestamp: a delivery whose send time is unknown could be a replay"
)
STALE = (
    "webhookTimestamp is {seconds:.0f} s {direction} (more than {tolerance:.0f} s): refused "
    "as a possible replay; if every delivery is refused, check this machine's clock"
)
NO_DELIVERY = f"{DELIVERY_HEADER} header is missing: it is the delivery's dedupe key"


def verify(secret: str, headers: Headers, body: bytes, *, now: float) -> None:
    """Raise BadSignature unless the body is signed and was sent within the window."""
    if not secret:
        raise BadSignature(NO_SECRET)
    if not signature_matches(secret, body, reading.header(headers, SIGNATURE_HEADER)):
        raise BadSignature(BAD_SIGNATURE)
    sent = reading.load_object(body).get("webhookTimestamp")
    if not isinstance(sent, int | float) or isinstance(sent, bool):
        raise BadSignature(NO_TIMESTAMP, reason="stale_timestamp")
    age = now - sent / 1000
    if abs(age) > TOLERANCE_SECONDS:
        direction = "old" if age > 0 else "in the future"
        message = STALE.format(seconds=abs(age), direction=direction, tolerance=TOLERANCE_SECONDS)
        raise BadSignature(message, reason="stale_timestamp")


def parse(
    headers: Headers,
    body: bytes,
    *,
    vocabulary: Vocabulary,
    projects: Mapping[str, str],
    bot_actor_id: str = "",
) -> TrackerEvent:
    """The normalised event of one delivery; BadPayload saying what is wrong."""
    delivery = reading.header(headers, DELIVERY_HEADER)
    if delivery is None:
        raise BadPayload(NO_DELIVERY)
    doc = reading.load_object(body)
    entity = reading.text(doc, "type")
    if entity is None:
        raise BadPayload("missing field: type (Issue, Comment, …)")
    actor_id, actor = _actor(doc)
    event = TrackerEvent(
        tracker=issues.TRACKER,
        kind=EventKind.OTHER,
        delivery_key=f"linear:{delivery}",
        delivery_id=delivery,
        actor=actor,
        actor_id=actor_id,
        ignore="not_an_issue_event",
    )
    if entity != "Issue":
        return event
    return _issue_event(doc, event, vocabulary, projects, bot_actor_id)


def _issue_event(
    doc: dict[str, Any],
    event: TrackerEvent,
    vocabulary: Vocabulary,
    projects: Mapping[str, str],
    bot_actor_id: str,
) -> TrackerEvent:
    action = reading.text(doc, "action")
    if action is None:
        raise BadPayload("missing field: action (create, update or remove)")
    data = reading.mapping(doc, "data", BadPayload)
    url = reading.text(doc, "url") or ""
    ticket = issues.ticket_of(data, vocabulary=vocabulary, fail=BadPayload, url=url)
    kind = _kind(action, doc)
    state = ticket.state if kind in (EventKind.STATE_CHANGE, EventKind.CREATED) else None
    if kind is EventKind.STATE_CHANGE and state is None:
        raise BadPayload("a state change without data.state.name: cannot tell the new state")
    return TrackerEvent(
        tracker=event.tracker,
        kind=kind,
        delivery_key=event.delivery_key,
        delivery_id=event.delivery_id,
        ticket=ticket,
        signal=vocabulary.signal(state),
        state_after=state,
        state_id=issues.state_id(data) if state else None,
        actor=event.actor,
        actor_id=event.actor_id,
        ignore=_ignored(kind, ticket, event.actor_id, projects, bot_actor_id),
    )


def _kind(action: str, doc: dict[str, Any]) -> EventKind:
    if action == "create":
        return EventKind.CREATED
    if action == "remove":
        return EventKind.DELETED
    updated_from = doc.get("updatedFrom")
    if action == "update" and isinstance(updated_from, dict) and "stateId" in updated_from:
        return EventKind.STATE_CHANGE
    return EventKind.OTHER


def _ignored(
    kind: EventKind,
    ticket: Ticket,
    actor_id: str | None,
    projects: Mapping[str, str],
    bot_actor_id: str,
) -> str | None:
    if bot_actor_id and actor_id == bot_actor_id:
        return "own_change"
    # A payload without data.team (only teamId) cannot be mapped without asking Linear.
    if ticket.ref.project not in projects:
        return "unmapped_project"
    if kind is EventKind.OTHER:
        return "not_a_state_change"
    return None


def _actor(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    actor = doc.get("actor")
    if not isinstance(actor, dict):
        return None, None
    return reading.text(actor, "id"), reading.text(actor, "name")
