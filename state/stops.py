"""Stop records, pending cleanups and webhook deliveries."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, bindparam, literal, select, update

from state.models import OPEN_STOP_STATUSES, StopRecord, StopStatus

__all__ = ["StopStatus"]
from state.prepared import Prepared
from state.schema import pending_cleanups, stop_records, webhook_deliveries
from state.store import insert_ignore, insert_ignore_returning

# Statements built once, values bound at execution (see `state.store.per_dialect`).
_OPEN_STOP = Prepared(
    select(stop_records).where(
        stop_records.c.task_id == bindparam("_task"),
        # Bound one by one, not as an expanding list: the driver can run it as it is.
        stop_records.c.status.in_([literal(s) for s in OPEN_STOP_STATUSES]),
    )
)
_INSERT_STOP = Prepared(insert_ignore_returning(stop_records))
_BY_ID = select(stop_records).where(stop_records.c.id == bindparam("_id"))
_STOP_BY_ID = Prepared(_BY_ID)
_LOCKED_STOP = Prepared({"sqlite": _BY_ID, "postgresql": _BY_ID.with_for_update()})
_STOPS_OF_TASK = Prepared(
    select(stop_records)
    .where(stop_records.c.task_id == bindparam("_task"))
    .order_by(stop_records.c.requested_at)
)
_UPDATE = update(stop_records).where(stop_records.c.id == bindparam("_id"))
_UPDATE_STOP = Prepared(_UPDATE)
_UPDATE_STOP_EXPECTING = Prepared(_UPDATE.where(stop_records.c.status == bindparam("_expect")))
_RECORD_DELIVERY = Prepared(insert_ignore_returning(webhook_deliveries, webhook_deliveries.c.id))
_SETTLE_DELIVERY = Prepared(
    update(webhook_deliveries).where(webhook_deliveries.c.id == bindparam("_row"))
)

# -- stop records -----------------------------------------------------------------------


def open_stop(conn: Connection, task_id: int) -> StopRecord | None:
    """The task's open (or deferred) stop, if any: there is at most one."""
    row = _OPEN_STOP.first(conn, {"_task": task_id})
    return StopRecord.from_row(row) if row else None


def insert_stop(
    conn: Connection,
    *,
    task_id: int,
    status: StopStatus,
    now: float,
    requested_by: str,
    reason: str,
    correlation_id: str | None,
    job_id: int | None,
    run_id: str | None,
    window: str | None = None,
    outcome: str | None = None,
) -> tuple[StopRecord, bool]:
    """Record a stop; (record, True) if new, (the open one, False) if one was already open."""
    stop_id = uuid.uuid4().hex
    values = dict(
        id=stop_id,
        task_id=task_id,
        status=status.value,
        requested_at=now,
        requested_by=requested_by,
        reason=reason,
        correlation_id=correlation_id,
        job_id=job_id,
        run_id=run_id,
        window=window,
        outcome=outcome,
        closed_at=now if status not in (StopStatus.OPEN, StopStatus.DEFERRED) else None,
    )
    row = _INSERT_STOP.first(conn, values)
    if row is not None:
        return StopRecord.from_row(row), True
    existing = open_stop(conn, task_id)
    if existing is None:  # pragma: no cover - the unique index allows no other conflict
        raise RuntimeError("stop insert conflicted but no open stop exists")
    return existing, False


def get_stop(conn: Connection, stop_id: str) -> StopRecord | None:
    row = _STOP_BY_ID.first(conn, {"_id": stop_id})
    return StopRecord.from_row(row) if row else None


def stops_for_task(conn: Connection, task_id: int) -> list[StopRecord]:
    rows = _STOPS_OF_TASK.rows(conn, {"_task": task_id})
    return [StopRecord.from_row(r) for r in rows]


def stops_with_status(conn: Connection, status: StopStatus) -> list[StopRecord]:
    rows = conn.execute(
        select(stop_records)
        .where(stop_records.c.status == status.value)
        .order_by(stop_records.c.requested_at)
    )
    return [StopRecord.from_row(r) for r in rows]


def update_stop(
    conn: Connection, stop_id: str, *, expect: StopStatus | None = None, **changes: Any
) -> bool:
    """Change a stop record; with `expect`, only if it still has that status."""
    if "status" in changes and isinstance(changes["status"], StopStatus):
        changes["status"] = changes["status"].value
    if expect is None:
        return _UPDATE_STOP.count(conn, {"_id": stop_id, **changes}) == 1
    params = {"_id": stop_id, "_expect": expect.value, **changes}
    return _UPDATE_STOP_EXPECTING.count(conn, params) == 1


def _locked_stop(conn: Connection, stop_id: str) -> StopRecord | None:
    row = _LOCKED_STOP.first(conn, {"_id": stop_id})
    return StopRecord.from_row(row) if row else None


def amend_step(conn: Connection, stop_id: str, step: str, changes: dict[str, Any]) -> bool:
    """Merge `changes` into a recorded step's result (a host step finished late)."""
    current = _locked_stop(conn, stop_id)
    if current is None:
        return False
    steps = stop_steps(current)
    if step not in steps:
        return False
    steps[step] = {**steps[step], **changes}
    encoded = json.dumps(steps, sort_keys=True, default=str)
    _UPDATE_STOP.count(conn, {"_id": stop_id, "steps": encoded})
    return True


def stop_steps(record: StopRecord) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(record.steps or "{}")
    return loaded


def mark_step(
    conn: Connection,
    stop_id: str,
    step: str,
    result: Any,
    *,
    close_at: float | None = None,
    at: float | None = None,
) -> StopRecord | None:
    """Record that a reset step finished, so a resumed reset never does it twice; with
    `close_at`, the stop is done in the same write; `at` (when the step finished) goes
    into a dict result as its `at`. The record as it now stands."""
    return mark_steps(conn, stop_id, {step: result}, close_at=close_at, at=at)


def mark_steps(
    conn: Connection,
    stop_id: str,
    results: dict[str, Any],
    *,
    close_at: float | None = None,
    at: float | None = None,
    read: StopRecord | None = None,
) -> StopRecord | None:
    """`mark_step` for several steps finished together (in their order), in one write.
    `read`: the record as this transaction already read it, when no host step can amend
    it meanwhile (a reset that handed nothing to another server)."""
    # The row is locked while its steps are rewritten: the owner of a host step may
    # amend a step while the runner records the next one.
    current = read if read is not None and read.id == stop_id else _locked_stop(conn, stop_id)
    if current is None:
        return None
    steps = stop_steps(current)
    for step, result in results.items():
        timed = at is not None and isinstance(result, dict)
        steps[step] = {**result, "at": at} if timed else result
    encoded = json.dumps(steps, sort_keys=True, default=str)
    closing: dict[str, Any] = {}
    if close_at is not None:
        closing = {"status": StopStatus.DONE.value, "closed_at": close_at}
    _UPDATE_STOP.count(conn, {"_id": stop_id, "steps": encoded, **closing})
    if close_at is not None:
        return replace(current, steps=encoded, status=StopStatus.DONE, closed_at=close_at)
    return replace(current, steps=encoded)


# -- pending cleanups -------------------------------------------------------------------


def add_cleanup(
    conn: Connection,
    *,
    task_id: int,
    stop_id: str | None,
    step: str,
    detail: dict[str, Any],
    error: str,
    now: float,
    retry_at: float,
) -> None:
    """Keep a failed outside step for the finalizer to retry (one row per task and step)."""
    conn.execute(
        insert_ignore(conn, pending_cleanups).values(
            task_id=task_id,
            stop_id=stop_id,
            step=step,
            status="pending",
            attempts=1,
            last_error=error,
            detail=json.dumps(detail, default=str),
            next_attempt_at=retry_at,
            created_at=now,
        )
    )


def due_cleanups(conn: Connection, now: float, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(pending_cleanups)
        .where(pending_cleanups.c.status == "pending", pending_cleanups.c.next_attempt_at <= now)
        .order_by(pending_cleanups.c.next_attempt_at)
        .limit(limit)
    )
    return [{**r._mapping, "detail": json.loads(r.detail)} for r in rows]


def settle_cleanup(
    conn: Connection, cleanup_id: int, status: str, now: float, note: str | None = None
) -> None:
    """Close a cleanup: `done`, or `conflict` (someone else's push: never deleted)."""
    conn.execute(
        update(pending_cleanups)
        .where(pending_cleanups.c.id == cleanup_id)
        .values(status=status, resolved_at=now, last_error=note)
    )


def retry_cleanup_later(
    conn: Connection, cleanup_id: int, attempts: int, error: str, retry_at: float
) -> None:
    conn.execute(
        update(pending_cleanups)
        .where(pending_cleanups.c.id == cleanup_id)
        .values(attempts=attempts, last_error=error, next_attempt_at=retry_at)
    )


def cleanups_for_task(conn: Connection, task_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(pending_cleanups).where(pending_cleanups.c.task_id == task_id))
    return [{**r._mapping, "detail": json.loads(r.detail)} for r in rows]


# -- webhook deliveries -----------------------------------------------------------------


def record_delivery(
    conn: Connection, tracker: str, dedup_key: str, delivery_id: str | None, now: float
) -> int | None:
    """Remember a delivery by its content key; None if it was seen before (a duplicate)."""
    row = _RECORD_DELIVERY.first(
        conn,
        {
            "tracker": tracker,
            "dedup_key": dedup_key,
            "delivery_id": delivery_id,
            "received_at": now,
        },
    )
    return int(row["id"]) if row else None


def settle_delivery(
    conn: Connection, delivery_row: int, outcome: str, reason: str | None, task_id: int | None
) -> None:
    _SETTLE_DELIVERY.count(
        conn,
        {"_row": delivery_row, "outcome": outcome, "reason": reason, "task_id": task_id},
    )
