"""The last state and labels seen per ticket (`tickets_seen`): webhooks and
reconciliation passes both write it, in the transaction that acts on what they saw."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from state.schema import tickets_seen


@dataclass(frozen=True)
class SeenTicket:
    tracker: str
    issue_id: str
    project: str
    key: str
    state: str | None
    labels: tuple[str, ...]
    signal: str | None
    seen_at: float
    updated_at: float | None = None


def last_seen(conn: Connection, tracker: str, issue_id: str) -> SeenTicket | None:
    row = conn.execute(
        select(tickets_seen).where(
            tickets_seen.c.tracker == tracker, tickets_seen.c.issue_id == issue_id
        )
    ).first()
    if row is None:
        return None
    m = row._mapping
    return SeenTicket(
        tracker=m["tracker"],
        issue_id=m["issue_id"],
        project=m["project"],
        key=m["key"],
        state=m["state"],
        labels=tuple(json.loads(m["labels"] or "[]")),
        signal=m["signal"],
        seen_at=m["seen_at"],
        updated_at=m["updated_at"],
    )


def remember(conn: Connection, seen: SeenTicket) -> None:
    """Insert or replace what was seen of a ticket."""
    values = {
        "tracker": seen.tracker,
        "issue_id": seen.issue_id,
        "project": seen.project,
        "key": seen.key,
        "state": seen.state,
        "labels": json.dumps(list(seen.labels)),
        "signal": seen.signal,
        "seen_at": seen.seen_at,
        "updated_at": seen.updated_at,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(tickets_seen).values(values)
    keys = ("tracker", "issue_id")
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: stmt.excluded[k] for k in values if k not in keys},
        )
    )
