"""GitHub and Gitea/Forgejo behind the tracker port, in one class: webhooks read without
I/O by the forge's own ``Reader`` and signature check, the issues API on demand. Each
forge's ``tracker.build`` fills it in from its settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import SecretStr

from integrations.trackers.base import (
    Gone,
    Headers,
    Notice,
    Signal,
    Ticket,
    TicketRef,
    TrackerError,
    TrackerEvent,
)
from integrations.trackers.labels.rules import LabelRules

Verify = Callable[[Headers, bytes, str], None]  # (headers, raw body, secret); raises


class Issues(Protocol):
    """A forge's issues API (``github.api.IssuesApi``, ``gitea.api.GiteaIssuesApi``)."""

    async def read(self, ref: TicketRef) -> Ticket | Gone: ...

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]: ...

    async def comment(self, ref: TicketRef, notice: Notice) -> None: ...

    async def has_comment(self, ref: TicketRef, marker: str) -> bool: ...


class Reader(Protocol):
    """A forge's sans-I/O reading of its ``issues`` deliveries."""

    @property
    def rules(self) -> LabelRules: ...

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent: ...


@dataclass
class LabelTracker:
    """One GitHub or Gitea/Forgejo instance and the repositories mapped to conveyor."""

    tracker: str
    secret: SecretStr
    check_signature: Verify
    reader: Reader
    issues: Issues | None  # None without API credentials
    no_api: str  # what to set, when something needs the API and there is none

    @property
    def name(self) -> str:
        return self.tracker

    @property
    def has_api(self) -> bool:
        return self.issues is not None

    def verify(self, headers: Headers, body: bytes, *, now: float) -> None:
        self.check_signature(headers, body, self.secret.get_secret_value())

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        return self.reader.parse(headers, body)

    def signal_for_labels(self, added: frozenset[str]) -> Signal | None:
        return self.reader.rules.for_labels(added)

    async def complete(self, event: TrackerEvent) -> TrackerEvent:
        return event  # both forges' deliveries carry the whole issue

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        return await self._api().read(ref)

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        return await self._api().changed_since(project, since)

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        await self._api().comment(ref, notice)

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """``CommentLookup``: whether a comment on the issue carries the Notice's marker."""
        return await self._api().has_comment(ref, marker)

    def _api(self) -> Issues:
        if self.issues is None:
            raise TrackerError(self.no_api)
        return self.issues
