"""The store: transactions, tasks with compare-and-set, and tombstones.

Functions take a `Connection` so that callers compose several of them into one
transaction; `Store` hands out those transactions (and runs them off the event loop).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine, Insert, bindparam, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from state.errors import StaleVersionError, StoreError
from state.models import NewTask, Stage, Task
from state.prepared import Prepared
from state.schema import audit_events, tasks
from state.writer import GroupWriter

T = TypeVar("T")
MAX_TASK_ID = 2**31 - 1  # task ids are 32-bit integers on both databases
_MATCH_ROWS = 50  # a ticket restarted more often than this shows its newest tasks
# `\Z`, not `$`: `$` also matches before a trailing newline ("x#cancelled-7\n").
TOMBSTONE_RE = re.compile(r"^(?P<original>.*)#cancelled-(?P<task_id>[0-9]+)\Z", re.DOTALL)


WRITE_ATTEMPTS = 6
CAS_ATTEMPTS = 50
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure


def _retryable(exc: StoreError) -> bool:
    orig = getattr(exc.__cause__, "orig", None)
    return getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


class Store:
    """Hands out transactions on one engine; `run` executes one off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite has one writer at a time: async writes queue on one thread of ours,
        # which commits those that queued together in one transaction (state/writer.py).
        self._writer = (
            GroupWriter(self.begin, self.write) if engine.dialect.name == "sqlite" else None
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction (IMMEDIATE on SQLite)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except DBAPIError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (never takes SQLite's write lock)."""
        try:
            with self.engine.connect() as raw:
                conn = raw.execution_options(readonly=True)
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(conn, *args, **kwargs)` in one write transaction; a transaction PostgreSQL
        aborted as a deadlock victim (or a serialization failure) is run again from the
        start, which is safe because `fn` touches nothing but the database."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.begin() as conn:
                    return fn(conn, *args, **kwargs)
            except StoreError as exc:
                if attempt == WRITE_ATTEMPTS - 1 or not _retryable(exc):
                    raise
                time.sleep(0.005 * 2**attempt)
        raise AssertionError("unreachable")

    def query(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.read() as conn:
            return fn(conn, *args, **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(conn, *args, **kwargs)` in a write transaction, off the event loop."""
        if self._writer is None:
            return await anyio.to_thread.run_sync(partial(self.write, fn, *args, **kwargs))
        value: T = await self._writer.submit_async(fn, *args, **kwargs)
        return value

    async def run_until_current(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`run`, again while a compare-and-set loses: `fn` re-reads and re-decides."""
        for attempt in range(CAS_ATTEMPTS):
            try:
                return await self.run(fn, *args, **kwargs)
            except StaleVersionError:
                if attempt == CAS_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.005)
        raise AssertionError("unreachable")

    async def run_read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(self.query, fn, *args, **kwargs))

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def dispose(self) -> None:
        if self._writer is not None:
            self._writer.shutdown()
        self.engine.dispose()


def insert_ignore(conn: Connection, table: Any) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING for the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()  # type: ignore[no-any-return]


def per_dialect(build: Callable[[Any], T]) -> dict[str, T]:
    """A statement built once for each database (`build` gets the dialect's module),
    looked up by `conn.dialect.name` when it runs.

    Hot statements are built once, at import, with their values bound at execution:
    building a Core statement and its cache key on every call cost several times what
    executing the cached compiled form does (a `select(tasks)` ~150 µs against ~25 µs).
    """
    return {"sqlite": build(sqlite), "postgresql": build(postgresql)}


def insert_ignore_returning(table: Any, *returning: Any) -> dict[str, Insert]:
    """`insert_ignore(…).returning(…)` built once per dialect (see `per_dialect`)."""
    cols = returning or (table,)
    return per_dialect(lambda d: d.insert(table).on_conflict_do_nothing().returning(*cols))


# -- tasks -----------------------------------------------------------------------------


class DuplicateTaskError(StoreError):
    """A live task already exists for this (tracker, issue_id)."""


_INSERT_TASK = Prepared(insert_ignore_returning(tasks))


def insert_task(conn: Connection, new: NewTask, now: float) -> Task:
    """Create a task; a live one for the same ticket raises DuplicateTaskError."""
    values = dict(
        tracker=new.tracker,
        issue_id=new.issue_id,
        key=new.key,
        repo=new.repo,
        title=new.title,
        project_id=new.project_id,
        url=new.url,
        description=new.description,
        labels=json.dumps(list(new.labels)),
        ticket_state=new.ticket_state,
        stage=new.stage.value,
        version=1,
        created_at=now,
        updated_at=now,
        **new.extra,
    )
    row = _INSERT_TASK.first(conn, values)
    if row is None:
        raise DuplicateTaskError(f"a live task exists for {new.tracker}:{new.issue_id}")
    return Task.from_row(row)


_BY_ID = Prepared(select(tasks).where(tasks.c.id == bindparam("_id")))


def get_task(conn: Connection, task_id: int) -> Task | None:
    row = _BY_ID.first(conn, {"_id": task_id})
    return Task.from_row(row) if row else None


_BY_ISSUE = Prepared(
    select(tasks).where(
        tasks.c.tracker == bindparam("_tracker"), tasks.c.issue_id == bindparam("_issue")
    )
)


def live_task_for_issue(conn: Connection, tracker: str, issue_id: str) -> Task | None:
    """The ticket's task under its untombstoned key, if any (terminal `done` included)."""
    row = _BY_ISSUE.first(conn, {"_tracker": tracker, "_issue": issue_id})
    return Task.from_row(row) if row else None


_LATEST_BY_ISSUE = Prepared(
    select(tasks)
    .where(
        tasks.c.tracker == bindparam("_tracker"),
        or_(
            tasks.c.issue_id == bindparam("_issue"),
            tasks.c.issue_id.like(bindparam("_pattern"), escape="\\"),
        ),
    )
    .order_by(tasks.c.id.desc())
    .limit(1)
)


def latest_task_for_issue(conn: Connection, tracker: str, issue_id: str) -> Task | None:
    """The newest task of a ticket, tombstoned ones included."""
    pattern = _like_literal(issue_id) + "#cancelled-%"
    params = {"_tracker": tracker, "_issue": issue_id, "_pattern": pattern}
    row = _LATEST_BY_ISSUE.first(conn, params)
    return Task.from_row(row) if row else None


def _like_literal(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def key_shared_with_other_ticket(conn: Connection, task: Task) -> bool:
    """True when an earlier task of another ticket has the same key, whatever its case,
    its ``#``/``-`` spelling or its tombstone: the later task's names get its id."""
    key = original_key(task.key).lower()
    spellings = {key, key.replace("#", "-")}
    if "-" in key:
        head, _, number = key.rpartition("-")
        spellings.add(f"{head}#{number}")
    lowered = func.lower(tasks.c.key)
    matches = [lowered == k for k in spellings] + [
        lowered.like(_like_literal(k) + "#cancelled-%", escape="\\") for k in spellings
    ]
    rows = conn.execute(
        select(tasks.c.tracker, tasks.c.issue_id).where(tasks.c.id < task.id, or_(*matches))
    )
    mine = (task.tracker, original_key(task.issue_id))
    return any((row.tracker, original_key(row.issue_id)) != mine for row in rows)


def recent_tasks(conn: Connection, limit: int) -> list[Task]:
    """The most recently changed tasks, newest first."""
    rows = conn.execute(
        select(tasks).order_by(tasks.c.updated_at.desc(), tasks.c.id.desc()).limit(limit)
    )
    return [Task.from_row(row) for row in rows]


def find_task(conn: Connection, ref: str) -> Task | None:
    """A task by id, issue id or key: the live one first, else the newest tombstoned.

    Across trackers sharing a key it takes the newest match; the HTTP API resolves refs
    with `state.refs.resolve_task` instead, which refuses that ambiguity.
    """
    ref = ref.strip()
    if not ref or "\x00" in ref:  # PostgreSQL refuses NUL in text; nothing matches it
        return None
    if ref.isascii() and ref.isdigit() and len(ref) <= 10 and 0 < int(ref) <= MAX_TASK_ID:
        task = get_task(conn, int(ref))
        if task:
            return task
    found = tasks_matching(conn, ref)
    return max(found, key=lambda t: (ref in (t.issue_id, t.key), t.id), default=None)


def tasks_matching(conn: Connection, ref: str, tracker: str | None = None) -> list[Task]:
    """Per tracker, the task whose issue id or key is `ref`: the live one, else the
    newest tombstoned one. Sorted by tracker name."""
    pattern = _like_literal(ref) + "#cancelled-%"
    query = (
        select(tasks)
        .where(
            or_(
                tasks.c.issue_id == ref,
                tasks.c.key == ref,
                tasks.c.issue_id.like(pattern, escape="\\"),
                tasks.c.key.like(pattern, escape="\\"),
            )
        )
        .order_by(((tasks.c.issue_id == ref) | (tasks.c.key == ref)).desc(), tasks.c.id.desc())
        .limit(_MATCH_ROWS)
    )
    if tracker is not None:
        query = query.where(tasks.c.tracker == tracker)
    best: dict[str, Task] = {}
    for row in conn.execute(query):
        task = Task.from_row(row)
        best.setdefault(task.tracker, task)
    return [best[name] for name in sorted(best)]


_CAS = Prepared(
    update(tasks)
    .where(tasks.c.id == bindparam("_id"), tasks.c.version == bindparam("_seen"))
    .returning(tasks)
)


def update_task(conn: Connection, task: Task, now: float, **changes: Any) -> Task:
    """Compare-and-set on `version`; raises StaleVersionError when someone else won."""
    values = {k: (v.value if isinstance(v, Stage) else v) for k, v in changes.items()}
    values.update(version=task.version + 1, updated_at=now, _id=task.id, _seen=task.version)
    # Parameters at execution, not in .values(): the statement's compiled form is cached
    # per set of columns, which matters on the webhook path.
    row = _CAS.first(conn, values)
    if row is None:
        raise StaleVersionError(f"task {task.id} changed since version {task.version}")
    return Task.from_row(row)


def tombstone_key(issue_id: str, task_id: int) -> str:
    return f"{issue_id}#cancelled-{task_id}"


def parse_tombstone(value: str) -> tuple[str, int] | None:
    """(original key, task id) of a tombstoned key, or None if it is not one."""
    match = TOMBSTONE_RE.match(value)
    return (match["original"], int(match["task_id"])) if match else None


def tombstone_task_keys(conn: Connection, task: Task, now: float) -> Task:
    """Free the ticket's natural keys so a new task can be made for it (idempotent)."""
    if parse_tombstone(task.issue_id):
        return task
    return update_task(
        conn,
        task,
        now,
        issue_id=tombstone_key(task.issue_id, task.id),
        key=tombstone_key(task.key, task.id),
    )


def original_key(value: str) -> str:
    parsed = parse_tombstone(value)
    return parsed[0] if parsed else value


# -- audit ------------------------------------------------------------------------------


_ADD_EVENT = Prepared(audit_events.insert())


def add_event(
    conn: Connection,
    task_id: int | None,
    kind: str,
    now: float,
    *,
    actor: str | None = None,
    stop_id: str | None = None,
    **detail: Any,
) -> None:
    """Append one audit event to the task's trail."""
    _ADD_EVENT.count(
        conn,
        {
            "task_id": task_id,
            "kind": kind,
            "at": now,
            "actor": actor,
            "stop_id": stop_id,
            "detail": json.dumps(detail, default=str, sort_keys=True),
        },
    )


def events_for_task(conn: Connection, task_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(audit_events).where(audit_events.c.task_id == task_id).order_by(audit_events.c.id)
    )
    return [
        {
            "at": r.at,
            "kind": r.kind,
            "actor": r.actor,
            "stop_id": r.stop_id,
            "detail": json.loads(r.detail),
        }
        for r in rows
    ]
