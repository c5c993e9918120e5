"""Servers sharing one database, and the host-local reset steps handed to their owner."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, or_, select, update

from state.listen import listening_servers
from state.models import HostStep, HostStepStatus, ServerIdentity, Task
from state.schema import host_steps, servers, stop_records, tasks
from state.store import insert_ignore, original_key

# A server silent this long is gone: nothing waits for it, GET /queue names it (its
# presence beat is every few seconds; a restart must not look like a lost machine).
SILENT_AFTER_SECONDS = 30.0

# -- servers ----------------------------------------------------------------------------


def register_server(
    conn: Connection, ident: ServerIdentity, *, data_dir: str, pid: int, now: float
) -> None:
    """This server is up (again): its row, fresh, with no stop recorded."""
    values = dict(host=ident.host, data_dir=data_dir, pid=pid, started_at=now, seen_at=now)
    conn.execute(insert_ignore(conn, servers).values(id=ident.id, **values))
    conn.execute(
        update(servers)
        .where(servers.c.id == ident.id)
        .values(**values, stopped_at=None, retired_at=None)
    )


def server_seen(conn: Connection, server_id: str, now: float) -> None:
    """The presence beat: this server is alive at `now`."""
    conn.execute(update(servers).where(servers.c.id == server_id).values(seen_at=now))


def server_stopped(conn: Connection, server_id: str, now: float) -> None:
    """A clean shutdown: nothing waits for this server until it is back."""
    conn.execute(update(servers).where(servers.c.id == server_id).values(stopped_at=now))


def list_servers(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(servers).order_by(servers.c.host, servers.c.id))
    return [dict(r._mapping) for r in rows]


def get_server(conn: Connection, server_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(servers).where(servers.c.id == server_id)).first()
    return dict(row._mapping) if row else None


def is_gone(server: dict[str, Any] | None, now: float, silent_after: float) -> bool:
    """True when a server is not there to act: unknown, stopped, retired, or silent for
    longer than `silent_after` seconds (killed, or its machine lost)."""
    if server is None or server["stopped_at"] is not None or server["retired_at"] is not None:
        return True
    return bool(now - server["seen_at"] > silent_after)


def owner_absent(conn: Connection, server_id: str, now: float, silent_after: float) -> bool:
    """The owner is not there to act: gone by its record, or (PostgreSQL) its listening
    session is not connected, which ends the moment a killed server's process does."""
    if is_gone(get_server(conn, server_id), now, silent_after):
        return True
    listening = listening_servers(conn)
    return listening is not None and server_id not in listening


def retire_server(conn: Connection, server_id: str, now: float) -> int:
    """An operator retired a server for good: its pending steps are abandoned (they
    stay in the audit with what was left); how many."""
    conn.execute(update(servers).where(servers.c.id == server_id).values(retired_at=now))
    result = conn.execute(
        update(host_steps)
        .where(
            host_steps.c.server_id == server_id,
            host_steps.c.status == HostStepStatus.PENDING.value,
        )
        .values(status=HostStepStatus.ABANDONED.value, done_at=now)
    )
    return int(result.rowcount)


# -- host steps -------------------------------------------------------------------------


def add_host_step(
    conn: Connection,
    *,
    stop_id: str,
    task_id: int,
    server_id: str,
    step: str,
    detail: dict[str, Any],
    now: float,
) -> HostStep:
    """Hand one step of a reset to its owner (idempotent per stop, owner and step)."""
    conn.execute(
        insert_ignore(conn, host_steps).values(
            stop_id=stop_id,
            task_id=task_id,
            server_id=server_id,
            step=step,
            status=HostStepStatus.PENDING.value,
            detail=json.dumps(detail, sort_keys=True, default=str),
            created_at=now,
        )
    )
    row = conn.execute(
        select(host_steps).where(
            host_steps.c.stop_id == stop_id,
            host_steps.c.server_id == server_id,
            host_steps.c.step == step,
        )
    ).one()
    return HostStep.from_row(row)


def host_steps_for_stop(conn: Connection, stop_id: str) -> list[HostStep]:
    rows = conn.execute(
        select(host_steps).where(host_steps.c.stop_id == stop_id).order_by(host_steps.c.id)
    )
    return [HostStep.from_row(r) for r in rows]


def host_steps_for_task(conn: Connection, task_id: int) -> list[HostStep]:
    rows = conn.execute(
        select(host_steps).where(host_steps.c.task_id == task_id).order_by(host_steps.c.id)
    )
    return [HostStep.from_row(r) for r in rows]


def pending_for_server(conn: Connection, server_id: str) -> list[HostStep]:
    """The steps this server owes, oldest first (processes before worktree per stop)."""
    rows = conn.execute(
        select(host_steps)
        .where(
            host_steps.c.server_id == server_id,
            host_steps.c.status == HostStepStatus.PENDING.value,
        )
        .order_by(host_steps.c.id)
    )
    return [HostStep.from_row(r) for r in rows]


def finish_host_step(conn: Connection, step_id: int, result: dict[str, Any], now: float) -> bool:
    """Record what the owner did (compare-and-set: once, by one process)."""
    done = conn.execute(
        update(host_steps)
        .where(host_steps.c.id == step_id, host_steps.c.status == HostStepStatus.PENDING.value)
        .values(
            status=HostStepStatus.DONE.value,
            result=json.dumps(result, sort_keys=True, default=str),
            done_at=now,
        )
    )
    return done.rowcount == 1


def step_result(step: HostStep) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(step.result or "{}")
    return loaded


def step_detail(step: HostStep) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(step.detail or "{}")
    return loaded


def pending_summary(conn: Connection, now: float, silent_after: float) -> list[dict[str, Any]]:
    """Host steps still owed, for GET /queue: the task, the step, the owner named."""
    rows = conn.execute(
        select(
            tasks.c.key,
            host_steps.c.stop_id,
            host_steps.c.step,
            host_steps.c.created_at,
            host_steps.c.server_id,
            servers,
        )
        .join(tasks, tasks.c.id == host_steps.c.task_id)
        .join(servers, servers.c.id == host_steps.c.server_id, isouter=True)
        .where(host_steps.c.status == HostStepStatus.PENDING.value)
        .order_by(host_steps.c.id)
    )
    listening = listening_servers(conn)
    found = []
    for r in rows:
        server = None if r.id is None else dict(r._mapping)
        absent = listening is not None and r.server_id not in listening
        found.append(
            {
                "task": original_key(r.key),
                "stop_id": r.stop_id,
                "step": r.step,
                "server": r.server_id,
                "host": r.host or "",
                "since": r.created_at,
                "owner_seen_at": None if server is None else server["seen_at"],
                "owner_gone": absent or is_gone(server, now, silent_after),
            }
        )
    return found


# -- who runs a reset -------------------------------------------------------------------


def claim_reset(conn: Connection, stop_id: str, server_id: str, now: float, ttl: float) -> bool:
    """Take (or keep) the running of a stop's reset; another server's live claim wins."""
    result = conn.execute(
        update(stop_records)
        .where(
            stop_records.c.id == stop_id,
            (stop_records.c.runner.is_(None))
            | (stop_records.c.runner == server_id)
            | (stop_records.c.runner_until < now),
        )
        .values(runner=server_id, runner_until=now + ttl)
    )
    return result.rowcount == 1


# -- the worktrees sweep --------------------------------------------------------------------


def tasks_by_worktree(conn: Connection, paths: list[str], server_id: str) -> dict[str, list[Task]]:
    """The tasks that name each path as their worktree on this server (several tasks of
    one ticket share its path: a cancelled one and the fresh one after it)."""
    found: dict[str, list[Task]] = {}
    if not paths:
        return found
    rows = conn.execute(
        select(tasks).where(
            tasks.c.worktree_path.in_(paths),
            or_(tasks.c.worktree_server.is_(None), tasks.c.worktree_server == server_id),
        )
    )
    for row in rows:
        task = Task.from_row(row)
        found.setdefault(task.worktree_path or "", []).append(task)
    return found
