"""The tracker port: what conveyor asks of a tracker, and the one fake of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from integrations.errors import IntegrationError


class TrackerError(IntegrationError):
    """A tracker's API refused or failed a request; the message says which and why."""


@dataclass(frozen=True)
class IssueRef:
    """Where a ticket lives: the tracker's name, its issue id and, for Plane, its project."""

    tracker: str
    issue_id: str
    project_id: str | None


class Tracker(Protocol):
    async def comment(self, issue: IssueRef, html: str) -> None:
        """Post an HTML comment on the ticket."""
        ...

    async def set_state(self, issue: IssueRef, state_id: str) -> None:
        """Move the ticket to the state with this tracker id."""
        ...


@dataclass
class RecordingTracker:
    """The fake of Tracker: records what was asked; ``fail_next(n)`` makes calls raise.

    A failing call raises TrackerError and records nothing, like a refused request.
    """

    comments: list[tuple[IssueRef, str]] = field(default_factory=list)
    states: list[tuple[IssueRef, str]] = field(default_factory=list)
    failures_left: int = 0
    failure_message: str = "tracker unavailable (RecordingTracker told to fail)"

    def fail_next(self, calls: int = 1, message: str | None = None) -> None:
        """Make the next ``calls`` calls (of either kind) raise TrackerError."""
        self.failures_left = calls
        if message is not None:
            self.failure_message = message

    async def comment(self, issue: IssueRef, html: str) -> None:
        self._maybe_fail()
        self.comments.append((issue, html))

    async def set_state(self, issue: IssueRef, state_id: str) -> None:
        self._maybe_fail()
        self.states.append((issue, state_id))

    def _maybe_fail(self) -> None:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise TrackerError(self.failure_message)
