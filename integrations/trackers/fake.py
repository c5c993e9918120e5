"""The one fake of the tracker port, used by tests of every layer.

Its webhook side reads a small JSON format of its own, signed like the real trackers
(``X-Fake-Signature``: hex HMAC-SHA256 of the raw body); ``over(tracker)`` keeps a real
adapter's webhook side instead (Plane payloads in, in-memory API out). Its API side is
an in-memory tracker: tickets with states, labels and ``updated_at``, a change log that
``changed_since`` reads, 404 for deleted tickets, comments recorded, and injectable
failures and rate limits. Every API call is counted in ``requests``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from integrations.trackers.base import (
    BadPayload,
    BadSignature,
    EventKind,
    Gone,
    Headers,
    Notice,
    Signal,
    Ticket,
    TicketRef,
    Tracker,
    TrackerError,
    TrackerEvent,
    header,
)
from integrations.trackers.signing import hmac_sha256_hex, signature_matches
from integrations.trackers.vocabulary import Vocabulary

SIGNATURE_HEADER = "X-Fake-Signature"
_KINDS = {kind.value: kind for kind in EventKind}


@dataclass
class Failure:
    """What the next failing API call raises."""

    status: int = 500
    retry_after: float | None = None
    message: str = "fake tracker told to fail"


@dataclass
class FakeTracker:
    """An in-memory tracker behind the port (see the module docstring)."""

    tracker_name: str = "fake"
    secret: str = "fake-webhook-secret-0123456789"
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    webhooks: Tracker | None = None  # a real adapter's webhook side, when given
    api: bool = True
    base_url: str = "https://fake-tracker.invalid"
    tickets: dict[str, Ticket] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    comments: list[tuple[TicketRef, str]] = field(default_factory=list)
    notices: list[tuple[TicketRef, Notice]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    fail_always: Failure | None = None

    @classmethod
    def over(cls, tracker: Tracker, **kwargs: Any) -> FakeTracker:
        """The real adapter's webhook side in front of this in-memory API side."""
        return cls(tracker_name=tracker.name, webhooks=tracker, **kwargs)

    # -- the port: webhook side ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self.tracker_name

    @property
    def has_api(self) -> bool:
        return self.api

    def verify(self, headers: Headers, body: bytes, *, now: float) -> None:
        if self.webhooks is not None:
            self.webhooks.verify(headers, body, now=now)
            return
        if not signature_matches(self.secret, body, header(headers, SIGNATURE_HEADER)):
            raise BadSignature(f"{SIGNATURE_HEADER} is missing or does not match the body")

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        if self.webhooks is not None:
            return self.webhooks.parse(headers, body)
        doc = _load(body)
        ticket = self._ticket_from(doc.get("ticket"))
        kind = _KINDS.get(str(doc.get("event", "")))
        if kind is None:
            raise BadPayload(f"event must be one of {sorted(_KINDS)}")
        state = ticket.state if kind in (EventKind.STATE_CHANGE, EventKind.CREATED) else None
        return TrackerEvent(
            tracker=self.name,
            kind=kind,
            delivery_key=f"{self.name}:{_text(doc, 'delivery')}",
            ticket=ticket,
            signal=self.vocabulary.signal(state),
            state_before=doc.get("before") if isinstance(doc.get("before"), str) else None,
            state_after=state,
            actor=doc.get("actor") if isinstance(doc.get("actor"), str) else None,
            ignore=None if kind is not EventKind.OTHER else "not_a_state_change",
        )

    def signal_for_labels(self, added: frozenset[str]) -> Signal | None:
        if self.webhooks is not None:
            return self.webhooks.signal_for_labels(added)
        return self.vocabulary.signal_for_labels(added)

    async def complete(self, event: TrackerEvent) -> TrackerEvent:
        if self.webhooks is not None:
            return await self.webhooks.complete(event)
        return event

    # -- the port: API side -------------------------------------------------------------

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        self._call(f"read {ref.issue_id}")
        if ref.issue_id in self.deleted or ref.issue_id not in self.tickets:
            return Gone(404)
        return self.tickets[ref.issue_id]

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        self._call(f"list {project}")
        changed = [
            t
            for t in self.tickets.values()
            if t.ref.project == project
            and t.ref.issue_id not in self.deleted
            and t.updated_at is not None
            and t.updated_at >= since
        ]
        return sorted(changed, key=lambda t: t.updated_at or since)

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        self._call(f"comment {ref.issue_id}")
        self.notices.append((ref, notice))
        self.comments.append((ref, notice.as_markdown()))

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        self._call(f"comments {ref.issue_id}")
        return any(r.issue_id == ref.issue_id and marker in text for r, text in self.comments)

    # -- driving it from a test ---------------------------------------------------------

    def put(self, ticket: Ticket) -> Ticket:
        """Add or replace a ticket (its signal follows from its state)."""
        stored = dataclasses.replace(
            ticket,
            signal=self.vocabulary.signal(ticket.state)
            or self.vocabulary.signal_for_labels(ticket.labels),
            updated_at=ticket.updated_at or datetime.now(UTC),
        )
        self.tickets[ticket.ref.issue_id] = stored
        self.deleted.discard(ticket.ref.issue_id)
        return stored

    def move(self, issue_id: str, state: str, at: datetime | None = None) -> Ticket:
        """Move a ticket to a state, as a person would (no webhook is sent)."""
        ticket = self.tickets[issue_id]
        return self.put(
            dataclasses.replace(ticket, state=state, updated_at=at or datetime.now(UTC))
        )

    def delete(self, issue_id: str) -> None:
        self.deleted.add(issue_id)

    def fail_next(self, calls: int = 1, **failure: Any) -> None:
        """Make the next ``calls`` API calls raise TrackerError (status, retry_after)."""
        self.failures.extend(Failure(**failure) for _ in range(calls))

    def delivery(
        self,
        ticket: Ticket,
        *,
        event: str = "state_change",
        delivery: str,
        before: str | None = None,
        actor: str = "ada",
    ) -> tuple[dict[str, str], bytes]:
        """Headers and a signed body announcing ``ticket`` as it is now."""
        ref = ticket.ref
        doc = {
            "event": event,
            "delivery": delivery,
            "before": before,
            "actor": actor,
            "ticket": {
                "id": ref.issue_id,
                "project": ref.project,
                "key": ref.key,
                "title": ticket.title,
                "description": ticket.description,
                "url": ticket.url,
                "state": ticket.state,
                "labels": list(ticket.labels),
            },
        }
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: self.sign(body)}
        return headers, body

    def sign(self, body: bytes) -> str:
        return hmac_sha256_hex(self.secret, body)

    def _call(self, what: str) -> None:
        self.requests.append(what)
        failure = self.failures.pop(0) if self.failures else self.fail_always
        if failure is not None:
            raise TrackerError(
                f"{self.name}: HTTP {failure.status} {failure.message}",
                status=failure.status,
                retry_after=failure.retry_after,
            )

    def _ticket_from(self, raw: Any) -> Ticket:
        if not isinstance(raw, dict):
            raise BadPayload("missing field: ticket")
        ref = TicketRef(self.name, _text(raw, "project"), _text(raw, "id"), _text(raw, "key"))
        labels = raw.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise BadPayload("field ticket.labels must be a list of strings")
        state = raw.get("state") if isinstance(raw.get("state"), str) else None
        return Ticket(
            ref=ref,
            title=_optional_text(raw, "title"),
            description=_optional_text(raw, "description"),
            url=_optional_text(raw, "url"),
            state=state,
            labels=tuple(labels),
            signal=self.vocabulary.signal(state) or self.vocabulary.signal_for_labels(labels),
        )


def _load(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadPayload("body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadPayload("body is not a JSON object")
    return doc


def _optional_text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    return value if isinstance(value, str) else ""


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadPayload(f"missing field: {name}")
    return value
