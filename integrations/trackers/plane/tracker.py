"""Plane behind the tracker port: its webhooks read without I/O (``webhook``), its REST
API (``api``) for comments, reads, reconciliation and the names a delivery lacks."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any

import httpx

from integrations.trackers.base import (
    BadSignature,
    EventKind,
    Gone,
    Headers,
    Notice,
    Projects,
    Signal,
    Ticket,
    TicketRef,
    TrackerError,
    TrackerEvent,
    header,
)
from integrations.trackers.markup import html_to_markdown, notice_html
from integrations.trackers.plane import webhook
from integrations.trackers.plane.api import PlaneClient, ProjectIdentifiers, StateNames
from integrations.trackers.plane.settings import PlaneSettings
from integrations.trackers.plane.webhook import PlaneEvent
from integrations.trackers.vocabulary import Vocabulary

log = logging.getLogger(__name__)

NO_SECRET = (
    "no Plane webhook secret is configured "
    "(trackers.plane.webhook_secret / CONVEYOR_PLANE_WEBHOOK_SECRET); refusing"
)
BAD_SIGNATURE = (
    "X-Plane-Signature is missing or does not match the body "
    "(check that Plane's webhook secret is CONVEYOR_PLANE_WEBHOOK_SECRET)"
)
MAX_DELIVERY_CHARS = 200
MAX_ACTOR_CHARS = 100
_MAX_PAGES = 50

_IGNORED_KINDS = {
    webhook.EventKind.NOT_AN_ISSUE: "not_an_issue_event",
    webhook.EventKind.DELETED: "deleted",
    webhook.EventKind.OTHER_FIELD: "not_a_state_change",
}
_STATE_KINDS = (webhook.EventKind.STATE_CHANGE, webhook.EventKind.CREATED)
_KINDS = {
    webhook.EventKind.STATE_CHANGE: EventKind.STATE_CHANGE,
    webhook.EventKind.CREATED: EventKind.CREATED,
    webhook.EventKind.DELETED: EventKind.DELETED,
}


class PlaneTracker:
    """The Plane adapter (see the module docstring)."""

    def __init__(
        self, settings: PlaneSettings, http: httpx.AsyncClient, projects: Projects
    ) -> None:
        self.settings = settings
        self.projects = dict(projects)
        self._tags = webhook.project_tags(list(self.projects), dict(settings.project_identifiers))
        self.vocabulary = Vocabulary.of(
            settings.start_states, settings.stop_states, settings.confirm_deploy_states
        )
        # State id → name per project, learnt from every delivery's `data.state`: a STOP
        # whose `data` already shows a newer state is still known by its id.
        self.learnt_states: dict[tuple[str, str], str] = {}
        self.client: PlaneClient | None = None
        self._states: StateNames | None = None
        self._identifiers: ProjectIdentifiers | None = None
        if settings.base_url:
            self.client = PlaneClient(
                http,
                base_url=settings.base_url,
                api_key=settings.api_key.get_secret_value(),
                workspace=settings.workspace,
            )
            self._states = StateNames(self.client)
            self._identifiers = ProjectIdentifiers(self.client)

    @property
    def name(self) -> str:
        return "plane"

    @property
    def has_api(self) -> bool:
        return self.client is not None and bool(self.settings.api_key.get_secret_value())

    # -- webhook side (no I/O) ----------------------------------------------------------

    def verify(self, headers: Headers, body: bytes, *, now: float) -> None:
        secret = self.settings.webhook_secret.get_secret_value()
        if not secret:
            raise BadSignature(NO_SECRET, reason="no_secret")
        if not webhook.verify_signature(secret, body, header(headers, "X-Plane-Signature")):
            raise BadSignature(BAD_SIGNATURE)

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        event = self._learn(
            webhook.parse_event(body, event_header=header(headers, "X-Plane-Event"))
        )
        delivery = (header(headers, "X-Plane-Delivery") or "").strip()[:MAX_DELIVERY_CHARS]
        ticket = self._ticket(event) if event.kind is not webhook.EventKind.NOT_AN_ISSUE else None
        actor = (event.actor_name or event.actor_id or "").replace("\x00", "")[:MAX_ACTOR_CHARS]
        state = event.state_name if event.kind in _STATE_KINDS else None
        return TrackerEvent(
            tracker=self.name,
            kind=_KINDS.get(event.kind, EventKind.OTHER),
            delivery_key=event.dedup_key,
            ticket=ticket,
            signal=self.vocabulary.signal(state),
            state_after=state,
            state_id=event.state_id,
            actor=actor or None,
            actor_id=event.actor_id,
            delivery_id=delivery or None,
            ignore=self._ignore_reason(event, self.vocabulary.signal(state)),
        )

    def signal_for_labels(self, added: frozenset[str]) -> Signal | None:
        return None  # Plane's workflow is its states

    async def complete(self, event: TrackerEvent) -> TrackerEvent:
        """The project's identifier for the key and the state's name, from Plane."""
        if event.ignore is not None or event.ticket is None:
            return event
        ticket = event.ticket
        if ticket.ref.project not in self.settings.project_identifiers and self._identifiers:
            identifier = await self._identifiers.resolve(ticket.ref.project)
            if identifier:
                ticket = _with_key(ticket, identifier, self._base_web())
        state = event.state_after
        if state is None and event.state_id and self._states is not None:
            found = await self._states.resolve(ticket.ref.project, event.state_id)
            state = None if found is None else found.name
            if found is not None:
                self.learnt_states[(ticket.ref.project, found.id)] = found.name
        if state is None:
            return dataclasses.replace(event, ticket=ticket, ignore="unknown_state")
        ticket = dataclasses.replace(ticket, state=state, signal=self.vocabulary.signal(state))
        return dataclasses.replace(event, ticket=ticket, state_after=state, signal=ticket.signal)

    # -- API side -----------------------------------------------------------------------

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        client = self._api()
        try:
            item = await client.get_issue(ref.project, ref.issue_id)
        except TrackerError as exc:
            if exc.status in (404, 410):
                return Gone(exc.status)
            raise
        return self._ticket_from_item(ref.project, item)

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        client = self._api()
        found: list[Ticket] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            items, cursor = await client.work_items_page(project, cursor)
            for item in items:
                ticket = self._ticket_from_item(project, item)
                if ticket.updated_at is None or ticket.updated_at < since:
                    return found  # newest first: the rest is older than the watermark
                found.append(ticket)
            if cursor is None:
                return found
        raise TrackerError(f"Plane: more than {_MAX_PAGES} pages of changes in {project}")

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        await self._api().comment(ref.project, ref.issue_id, notice_html(notice))

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """Whether a comment on the work item carries the marker (an HTML comment)."""
        bodies = await self._api().comments_html(ref.project, ref.issue_id)
        return any(marker in body for body in bodies)

    # -- helpers ------------------------------------------------------------------------

    def _api(self) -> PlaneClient:
        if self.client is None:
            raise TrackerError(
                "Plane's API is not configured (trackers.plane.base_url / api_key / workspace)"
            )
        return self.client

    def _learn(self, event: PlaneEvent) -> PlaneEvent:
        """Remember the sent state's name; name the event's state from what was learnt."""
        project = event.project_id or ""
        if event.sent_state_id and event.sent_state_name:
            self.learnt_states[(project, event.sent_state_id)] = event.sent_state_name
        if event.state_name is None and event.state_id:
            known = self.learnt_states.get((project, event.state_id))
            if known is not None:
                return dataclasses.replace(event, state_name=known)
        return event

    def _ignore_reason(self, event: PlaneEvent, signal: Signal | None) -> str | None:
        if event.kind in _IGNORED_KINDS:
            return _IGNORED_KINDS[event.kind]
        if event.kind is webhook.EventKind.CREATED and signal is not Signal.START:
            return "not_a_state_change"  # created elsewhere than a start state
        bot = self.settings.bot_actor_id
        if bot and event.actor_id == bot:
            return "own_change"  # conveyor's own API calls come back as webhooks
        if event.project_id not in self.projects:
            return "unmapped_project"
        return None

    def _ticket(self, event: PlaneEvent) -> Ticket:
        project = event.project_id or ""
        identifier = self.settings.project_identifiers.get(project)
        tag = self._tags.get(project.lower(), "")
        key = webhook.task_key(identifier, event.sequence_id, event.issue_id, tag)
        ticket = Ticket(
            ref=TicketRef(self.name, project, event.issue_id, key),
            title=event.title.replace("\x00", ""),
            description=html_to_markdown(event.description_html),
            url=self._url(project, event.issue_id, key if identifier else None),
            state=event.state_name,
            labels=event.labels,
            signal=self.vocabulary.signal(event.state_name),
            updated_at=_aware(event.updated_at),
        )
        return ticket

    def _ticket_from_item(self, project: str, item: dict[str, Any]) -> Ticket:
        issue_id = str(item.get("id") or "")
        state = item.get("state")
        name = state.get("name") if isinstance(state, dict) else None
        identifier = self.settings.project_identifiers.get(project)
        sequence = item.get("sequence_id")
        seq = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None
        key = webhook.task_key(identifier, seq, issue_id, self._tags.get(project.lower(), ""))
        return Ticket(
            ref=TicketRef(self.name, project, issue_id, key),
            title=str(item.get("name") or ""),
            description=html_to_markdown(str(item.get("description_html") or "")),
            url=self._url(project, issue_id, key if identifier else None),
            state=name if isinstance(name, str) else None,
            signal=self.vocabulary.signal(name if isinstance(name, str) else None),
            updated_at=_aware(item.get("updated_at")),
        )

    def _base_web(self) -> str:
        base = self.settings.base_url.rstrip("/")
        return f"{base}/{self.settings.workspace}" if base and self.settings.workspace else ""

    def _url(self, project: str, issue_id: str, key: str | None) -> str:
        web = self._base_web()
        if not web:
            return ""
        if key:
            return f"{web}/browse/{key}/"
        return f"{web}/projects/{project}/issues/{issue_id}/"


def _with_key(ticket: Ticket, identifier: str, web: str) -> Ticket:
    prefix, _, number = ticket.ref.key.partition("-")
    if prefix != "plane" or not (number.isascii() and number.isdigit()):
        return ticket  # a key made from the issue id has no number to carry over
    key = f"{identifier}-{number}"
    url = f"{web}/browse/{key}/" if web else ticket.url
    return dataclasses.replace(ticket, ref=dataclasses.replace(ticket.ref, key=key), url=url)


def _aware(value: Any) -> datetime | None:
    """Plane's timestamps (``Z`` or an offset such as ``+05:30``) as aware datetimes."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
