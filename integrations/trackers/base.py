"""The tracker port: a sans-I/O webhook side and an API side, one Protocol for every
tracker (Plane, GitHub, Gitea, Linear, Jira, and the in-package fake).

The lifecycle only ever sees the frozen dataclasses below, in the domain's words. An
adapter is one subpackage that fills them in from its tracker's payloads and API, plus
a settings model and an `Adapter` entry for the registry (`bot/trackers.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, SecretStr

from integrations.errors import IntegrationError

if TYPE_CHECKING:
    import httpx


# -- errors ----------------------------------------------------------------------------


class TrackerError(IntegrationError):
    """A tracker's API refused or failed a request; the message says which and why.

    ``retry_after`` (seconds) is set when the tracker said how long to wait (429,
    ``Retry-After``, rate-limit headers); ``status`` is the HTTP status when there was one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Refused(IntegrationError):
    """A webhook delivery refused before anything is stored: 401 or 400, with a reason."""

    status = 400
    reason = "bad_payload"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class BadSignature(Refused):
    """No secret configured, or the signature is missing or does not match: 401."""

    status = 401
    reason = "bad_signature"


class BadPayload(Refused):
    """The body is not this tracker's event (not JSON, missing fields, bad ids): 400."""

    status = 400
    reason = "bad_payload"


# -- what the lifecycle sees -------------------------------------------------------------


class EventKind(StrEnum):
    """What a delivery is about, as far as conveyor cares."""

    STATE_CHANGE = "state_change"  # a workflow state moved, a label added/removed, a close
    CREATED = "created"  # a ticket created (possibly straight into a start state)
    DELETED = "deleted"  # the ticket is gone
    OTHER = "other"  # anything else: a comment, another field, a ping


class Signal(StrEnum):
    """What a ticket's state (or an added label) asks conveyor to do."""

    START = "start"
    STOP = "stop"
    CONFIRM_DEPLOY = "confirm_deploy"


@dataclass(frozen=True)
class TicketRef:
    """Where a ticket lives. ``project`` is the tracker's project (Plane project id,
    GitHub/Gitea ``owner/name``, Linear team key, Jira project key); ``issue_id`` the
    tracker's own id of the ticket; ``key`` the human key (``PROJ-42``, ``app#12``)."""

    tracker: str
    project: str
    issue_id: str
    key: str


@dataclass(frozen=True)
class Ticket:
    """A ticket as a webhook or the API showed it: enough for an agent to start from."""

    ref: TicketRef
    title: str = ""
    description: str = ""  # Markdown (converted from the tracker's HTML/ADF)
    url: str = ""  # the ticket's web page
    state: str | None = None  # workflow state name (None for label trackers)
    labels: tuple[str, ...] = ()
    signal: Signal | None = None  # what its current state/labels ask, as a level
    updated_at: datetime | None = None  # aware


@dataclass(frozen=True)
class TrackerEvent:
    """One webhook delivery, read and normalised.

    ``signal`` is what this event asks (an edge: moved into STOP, label added);
    ``ignore`` names why conveyor does not act on it (``ping``, ``own_change``,
    ``not_a_state_change``, ``pull_request``…). ``labels_to_diff`` is set by senders that
    send only the full label list (Gitea): the intake compares it with the labels last
    seen for the ticket and asks the tracker's ``signal_for_labels`` what the added ones
    mean.
    """

    tracker: str
    kind: EventKind
    delivery_key: str  # stable across the sender's retries: the dedupe key
    ticket: Ticket | None = None
    signal: Signal | None = None
    state_before: str | None = None
    state_after: str | None = None  # state name, or the label that was added
    actor: str | None = None  # display name, for `requested_by`
    actor_id: str | None = None
    delivery_id: str | None = None  # the sender's per-attempt id: correlation only
    ignore: str | None = None
    labels_to_diff: tuple[str, ...] | None = None
    state_id: str | None = None  # the tracker's id of state_after, when it has one


@dataclass(frozen=True)
class Gone:
    """A read found no such ticket (404/410): deleted, or moved out of reach."""

    status: int


@dataclass(frozen=True)
class Notice:
    """A comment conveyor posts, in neutral form; each adapter renders it (HTML,
    Markdown, Atlassian Document Format). ``marker`` is a tag that makes the comment
    recognisable later (``CommentLookup``): a hidden HTML comment where the tracker keeps
    the text as posted (Plane, GitHub, Gitea), a last line of inline code where it does
    not (Linear's Markdown, Jira's ADF)."""

    headline: str
    items: tuple[str, ...] = ()
    closing: str = ""
    marker: str = ""

    def as_markdown(self) -> str:
        lines = [self.headline]
        if self.items:
            lines += ["", *(f"- {item}" for item in self.items)]
        if self.closing:
            lines += ["", self.closing]
        if self.marker:
            lines += ["", f"<!-- {self.marker} -->"]
        return "\n".join(lines)

    def as_text(self) -> str:
        parts = [self.headline, *(f"- {item}" for item in self.items)]
        return "\n".join([*parts, self.closing] if self.closing else parts)


# -- the port ----------------------------------------------------------------------------

Headers = Mapping[str, str]


def header(headers: Headers, name: str) -> str | None:
    """A header's value by case-insensitive name (a plain dict of headers is fine too)."""
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


class Tracker(Protocol):
    """One tracker: verify and read its webhooks (no I/O), and talk to its API."""

    @property
    def name(self) -> str:
        """The name in ``POST /webhooks/{name}`` and in ``[[repos]] tracker``."""
        ...

    @property
    def has_api(self) -> bool:
        """True when API credentials are configured (comments, reads, reconciliation)."""
        ...

    def verify(self, headers: Headers, body: bytes, *, now: float) -> None:
        """Raise BadSignature unless the raw body is signed with the configured secret."""
        ...

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        """The normalised event; raise BadPayload saying what is wrong."""
        ...

    def signal_for_labels(self, added: frozenset[str]) -> Signal | None:
        """What adding these labels asks (label trackers); None for state trackers."""
        ...

    async def complete(self, event: TrackerEvent) -> TrackerEvent:
        """Fill in what the delivery lacked from the API (a state name, a project key);
        the event unchanged when there is nothing to add or no API."""
        ...

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        """The ticket as the tracker has it now; Gone on 404/410; TrackerError otherwise."""
        ...

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        """The project's tickets updated at or after ``since`` (paged through)."""
        ...

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        """Post a comment on the ticket; TrackerError when the tracker refuses."""
        ...


@runtime_checkable
class CommentLookup(Protocol):
    """A tracker that can tell whether a comment carrying a Notice's marker is already on
    the ticket: what makes the stop's one comment idempotent across a crash between the
    post and its record."""

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """True when a comment on the ticket carries ``marker``; TrackerError otherwise."""
        ...


class TrackerSettings(BaseModel):
    """What every tracker's settings section has; adapters add their own keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_secret: SecretStr = SecretStr("")

    def secrets(self) -> list[str]:
        """Every secret value of the section (for redaction and the agent environment)."""
        out = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
        return out


Projects = Mapping[str, str]
"""The tracker projects conveyor serves (``[[repos]] tracker_project``) → the repo's name."""


@dataclass(frozen=True)
class Adapter:
    """A tracker package's entry in the registry: its settings section (with the env
    variables that override it) and how to build the tracker from them, the shared
    httpx client and the projects mapped to repos (GitHub keys use the repo's name)."""

    name: str
    settings: type[TrackerSettings]
    build: Callable[[TrackerSettings, httpx.AsyncClient, Projects], Tracker]
    env: Mapping[str, str] = field(default_factory=dict)  # CONVEYOR_X -> settings key
