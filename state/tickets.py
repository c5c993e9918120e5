"""The last state and labels seen per ticket (`tickets_seen`): webhooks and
reconciliation passes both write it, in the transaction that acts on what they saw."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from state.prepared import Prepared
from state.schema import reconcile_watermarks, tickets_seen
from state.store import per_dialect


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


_LAST_SEEN = Prepared(
    select(tickets_seen).where(
        tickets_seen.c.tracker == bindparam("_tracker"),
        tickets_seen.c.issue_id == bindparam("_issue"),
    )
)


def last_seen(conn: Connection, tracker: str, issue_id: str) -> SeenTicket | None:
    m = _LAST_SEEN.first(conn, {"_tracker": tracker, "_issue": issue_id})
    if m is None:
        return None
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
    _REMEMBER.count(conn, values)


def _upsert_seen(dialect: Any) -> Any:
    # Built once: making the statement (and its `excluded` columns) on every call was
    # most of a reconciliation pass's time per changed ticket (py-spy, bench/reconcile.py).
    stmt = dialect.insert(tickets_seen)
    keys = ("tracker", "issue_id")
    changing = [c.name for c in tickets_seen.columns if c.name not in keys]
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={name: stmt.excluded[name] for name in changing}
    )


_REMEMBER = Prepared(per_dialect(_upsert_seen))


def watermark(conn: Connection, tracker: str, project: str) -> float | None:
    """Up to when (epoch seconds) a tracker project has been reconciled, if ever."""
    value = conn.execute(
        select(reconcile_watermarks.c.watermark).where(
            reconcile_watermarks.c.tracker == tracker, reconcile_watermarks.c.project == project
        )
    ).scalar_one_or_none()
    return None if value is None else float(value)


def set_watermark(conn: Connection, tracker: str, project: str, at: float, now: float) -> None:
    """Move a project's watermark forward (never back)."""
    values = {"tracker": tracker, "project": project, "watermark": at, "updated_at": now}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(reconcile_watermarks).values(values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["tracker", "project"],
            set_={"watermark": stmt.excluded.watermark, "updated_at": stmt.excluded.updated_at},
            where=reconcile_watermarks.c.watermark < stmt.excluded.watermark,
        )
    )


def next_live_ticket(
    conn: Connection, tracker: str, after_task: int
) -> tuple[int, str, str, str] | None:
    """(task id, project, issue id, key) of the tracker's first live (non-terminal) task
    after task id `after_task`, wrapping round to the first: one row, whatever the count
    of live tasks (the round-robin read for deletions)."""
    from state.schema import tasks

    query = (
        select(tasks.c.id, tasks.c.project_id, tasks.c.issue_id, tasks.c.key)
        .where(tasks.c.tracker == tracker, tasks.c.stage.not_in(("done", "cancelled")))
        .order_by(tasks.c.id)
        .limit(1)
    )
    row = conn.execute(query.where(tasks.c.id > after_task)).first()
    if row is None and after_task > 0:
        row = conn.execute(query).first()
    return None if row is None else (row.id, row.project_id or "", row.issue_id, row.key)
