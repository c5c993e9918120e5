"""Who a delivery is about: the repository mapped to a conveyor repo, and the ticket."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from integrations.trackers.base import EventKind, Ticket, TicketRef, TrackerEvent
from integrations.trackers.labels.fields import (
    ISSUE_ID,
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    MAX_URL_CHARS,
    free_text,
    full_name,
    issue_number,
    label_names,
    login,
    mapping,
    optional_text,
    text,
    timestamp,
)
from integrations.trackers.labels.rules import LabelRules


@dataclass(frozen=True)
class ProjectMap:
    """``owner/name`` → conveyor repo, matched case-insensitively as both forges do."""

    tracker: str
    projects: Mapping[str, str]

    def find(self, name: str) -> tuple[str, str] | None:
        """(the configured spelling of the project, the repo name), or None if unmapped."""
        folded = name.casefold()
        return next(
            (
                (project, repo)
                for project, repo in self.projects.items()
                if project.casefold() == folded
            ),
            None,
        )

    def ref(self, name: str, number: int) -> TicketRef | None:
        found = self.find(name)
        if found is None:
            return None
        project, repo = found
        return TicketRef(self.tracker, project, f"{project}#{number}", f"{repo}#{number}")


def split_issue_id(issue_id: str) -> tuple[str, str, str]:
    """(owner, name, number) of ``owner/name#12``; ValueError for anything else."""
    match = ISSUE_ID.fullmatch(issue_id)
    if match is None:
        raise ValueError(f"not an issue id of the form owner/name#12: {issue_id[:80]!r}")
    owner, name = match.group(1).split("/")
    if {".", ".."} & {owner, name}:
        raise ValueError(f"not an issue id of the form owner/name#12: {issue_id[:80]!r}")
    return owner, name, match.group(2)


@dataclass(frozen=True)
class IssueDelivery:
    """The parts of an issue delivery both forges share, read and checked."""

    tracker: str
    delivery: str  # the delivery id header's value
    action: str
    ticket: Ticket | None  # None when the repository is not mapped to a conveyor repo
    actor: str | None
    actor_id: str | None

    def event(self, kind: EventKind, **fields: Any) -> TrackerEvent:
        """The normalised event, with this delivery's ticket, actor and keys."""
        return TrackerEvent(
            tracker=self.tracker,
            kind=kind,
            delivery_key=f"{self.tracker}:{self.delivery}",
            delivery_id=self.delivery,
            ticket=self.ticket,
            actor=self.actor,
            actor_id=self.actor_id,
            **fields,
        )


def ignored(tracker: str, delivery: str, reason: str) -> TrackerEvent:
    """An event conveyor does not act on and that names no ticket (ping, pull requests…)."""
    return TrackerEvent(
        tracker=tracker,
        kind=EventKind.OTHER,
        delivery_key=f"{tracker}:{delivery}",
        delivery_id=delivery,
        ignore=reason,
    )


def read_issue_delivery(
    tracker: str, doc: Mapping[str, Any], delivery: str, projects: ProjectMap, rules: LabelRules
) -> IssueDelivery:
    """Action, repository, number, sender and ticket of an ``issues`` delivery."""
    issue = mapping(doc, "issue", "issue")
    action = text(doc, "action", "action")
    repository = mapping(doc, "repository", "repository")
    name = full_name(repository.get("full_name"))
    ref = projects.ref(name, issue_number(issue.get("number")))
    actor, actor_id = login(doc)
    ticket = ticket_of(issue, ref, rules) if ref is not None else None
    return IssueDelivery(tracker, delivery, action, ticket, actor, actor_id)


def is_own(actor: str | None, bot_login: str) -> bool:
    """True for conveyor's own changes coming back (logins compare case-insensitively)."""
    return bool(bot_login) and actor is not None and actor.casefold() == bot_login.casefold()


def ticket_of(issue: Mapping[str, Any], ref: TicketRef, rules: LabelRules) -> Ticket:
    """The ticket an issue object describes; BadPayload naming a field it cannot read."""
    labels = label_names(issue.get("labels"), "issue.labels")
    closed = issue.get("state") == "closed"
    reason = issue.get("state_reason") if isinstance(issue.get("state_reason"), str) else None
    return Ticket(
        ref=ref,
        title=free_text(issue.get("title"), "issue.title", MAX_TITLE_CHARS),
        description=free_text(issue.get("body"), "issue.body", MAX_DESCRIPTION_CHARS),
        url=optional_text(issue, "html_url", "issue.html_url", MAX_URL_CHARS),
        state=None,
        labels=labels,
        signal=rules.level(labels, closed=closed, state_reason=reason),
        updated_at=timestamp(issue.get("updated_at"), "issue.updated_at"),
    )


def since_param(since: datetime) -> str:
    """``since`` for both forges' issue lists: UTC, ``Z``, whole seconds (a naive time is UTC)."""
    aware = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
