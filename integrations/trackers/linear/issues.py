"""A Linear issue (a webhook's ``data`` or a GraphQL node) as the port's Ticket."""

from __future__ import annotations

from typing import Any

from integrations.trackers.base import Ticket, TicketRef
from integrations.trackers.linear import reading
from integrations.trackers.linear.reading import Fail
from integrations.trackers.vocabulary import Vocabulary

TRACKER = "linear"


def ticket_of(
    node: dict[str, Any], *, vocabulary: Vocabulary, fail: Fail, url: str = "", team: str = ""
) -> Ticket:
    """``url`` and ``team`` stand in when the node lacks them (webhooks carry ``url`` at
    the top level; a node without ``team`` keeps the team it was asked for)."""
    ref = TicketRef(
        tracker=TRACKER,
        project=team_key(node) or team,
        issue_id=reading.issue_id(node.get("id"), fail),
        key=reading.identifier(node.get("identifier"), fail),
    )
    state = state_name(node)
    return Ticket(
        ref=ref,
        title=reading.text(node, "title") or "",
        description=reading.text(node, "description") or "",
        url=reading.text(node, "url") or url,
        state=state,
        labels=labels(node),
        signal=vocabulary.signal(state),
        updated_at=reading.timestamp(node.get("updatedAt")),
    )


def team_key(node: dict[str, Any]) -> str | None:
    team = node.get("team")
    return reading.text(team, "key") if isinstance(team, dict) else None


def state_name(node: dict[str, Any]) -> str | None:
    state = node.get("state")
    return reading.text(state, "name") if isinstance(state, dict) else None


def state_id(node: dict[str, Any]) -> str | None:
    state = node.get("state")
    return reading.text(state, "id") if isinstance(state, dict) else None


def labels(node: dict[str, Any]) -> tuple[str, ...]:
    """Webhooks send ``labels: [{name}]``; GraphQL answers ``labels: {nodes: [{name}]}``."""
    raw = node.get("labels")
    if isinstance(raw, dict):
        raw = raw.get("nodes")
    if not isinstance(raw, list):
        return ()
    names = (reading.text(label, "name") for label in raw if isinstance(label, dict))
    return tuple(name for name in names if name)
