"""What `GET /events` streams: changes the store records, found by polling it.

The feed reads a small snapshot a few times a second while someone listens: audit events
past a cursor, the live tasks (and those that were live last time), the queued and
running jobs (and new ones, and those that were live), the open stops (and those that
were). The difference from the previous snapshot becomes events: `stage` (a task entered
a stage), `job` (a job was queued, started or finished), `stop` (a stop was recorded, a
reset step finished, the stop closed) and `audit` (an audit event was written). Because
it reads the database, a change made by another process sharing it shows the same way.
The cost is O(live tasks + live jobs + open stops + new audit rows) per poll, all through
indexes, and nothing at all while nobody listens.

Events are numbered `<boot>.<n>`; the last `BUFFER` are kept, so a client reconnecting
with `Last-Event-ID` gets what it missed, or one `resync` event when it missed too much
(or the id is from an earlier server run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, or_, select

from state.errors import StoreError
from state.models import JOB_TERMINAL, OPEN_STOP_STATUSES, TERMINAL, JobStatus, Stage
from state.queue import iso
from state.schema import audit_events, jobs, stop_records, tasks
from state.store import Store, original_key

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
IDLE_SECONDS = 30.0  # the poller stops this long after the last listener left
BUFFER = 2000
LIVE_STAGES = tuple(s.value for s in Stage if s not in TERMINAL)
LIVE_JOBS = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


@dataclass(frozen=True)
class Event:
    boot: str
    seq: int
    kind: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.boot}.{self.seq}"

    def frame(self) -> str:
        """The event as an SSE frame."""
        return f"id: {self.id}\nevent: {self.kind}\ndata: {json.dumps(self.data)}\n\n"


@dataclass
class Snapshot:
    """What the feed knew after its last poll."""

    audit_cursor: int = 0
    job_cursor: int = 0
    tasks: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (key, stage)
    jobs: dict[int, tuple[int, str]] = field(default_factory=dict)  # id -> (task, status)
    stops: dict[str, tuple[int, str, frozenset[str]]] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=dict)  # task id -> original key


Change = tuple[str, dict[str, Any]]


def read_changes(conn: Connection, seen: Snapshot) -> tuple[Snapshot, list[Change]]:
    """One poll: the new snapshot and the changes since `seen`, oldest first."""
    out: list[Change] = []
    now = Snapshot(keys=dict(seen.keys))

    task_rows = conn.execute(
        select(tasks.c.id, tasks.c.key, tasks.c.stage, tasks.c.outcome).where(
            or_(tasks.c.stage.in_(LIVE_STAGES), tasks.c.id.in_(list(seen.tasks)))
        )
    ).all()
    for row in task_rows:
        key = original_key(row.key)
        now.keys[row.id] = key
        before = seen.tasks.get(row.id)
        if before is None or before[1] != row.stage:
            out.append(
                (
                    "stage",
                    {
                        "task_id": row.id,
                        "task": key,
                        "stage": row.stage,
                        "from": before[1] if before else None,
                        "outcome": row.outcome,
                    },
                )
            )
        if row.stage in LIVE_STAGES:
            now.tasks[row.id] = (key, row.stage)

    job_rows = conn.execute(
        select(
            jobs.c.id, jobs.c.task_id, jobs.c.stage, jobs.c.status, jobs.c.pid, jobs.c.exit_code
        ).where(
            or_(
                jobs.c.status.in_(LIVE_JOBS),
                jobs.c.id > seen.job_cursor,
                jobs.c.id.in_(list(seen.jobs)),
            )
        )
    ).all()
    now.job_cursor = max([seen.job_cursor, *(r.id for r in job_rows)])
    for jrow in sorted(job_rows, key=lambda r: r.id):
        jbefore = seen.jobs.get(jrow.id)
        if jbefore is None or jbefore[1] != jrow.status:
            out.append(
                (
                    "job",
                    {
                        "task_id": jrow.task_id,
                        "task": _key(conn, now, jrow.task_id),
                        "job": jrow.id,
                        "stage": jrow.stage,
                        "status": jrow.status,
                        "pid": jrow.pid,
                        "exit_code": jrow.exit_code,
                    },
                )
            )
        if JobStatus(jrow.status) not in JOB_TERMINAL:
            now.jobs[jrow.id] = (jrow.task_id, jrow.status)

    stop_rows = conn.execute(
        select(
            stop_records.c.id,
            stop_records.c.task_id,
            stop_records.c.status,
            stop_records.c.steps,
            stop_records.c.outcome,
        ).where(
            or_(
                stop_records.c.status.in_(OPEN_STOP_STATUSES),
                stop_records.c.id.in_(list(seen.stops)),
            )
        )
    ).all()
    for srow in stop_rows:
        steps = json.loads(srow.steps or "{}")
        sbefore = seen.stops.get(srow.id)
        done_before = sbefore[2] if sbefore else frozenset()
        base = {"task_id": srow.task_id, "task": _key(conn, now, srow.task_id), "stop_id": srow.id}
        status = {**base, "status": srow.status, "outcome": srow.outcome}
        if sbefore is None:
            out.append(("stop", status))
        for name in steps:
            if name not in done_before:
                out.append(("stop", {**base, "status": srow.status, "step": name}))
        if sbefore is not None and sbefore[1] != srow.status:
            out.append(("stop", status))
        if srow.status in OPEN_STOP_STATUSES:
            now.stops[srow.id] = (srow.task_id, srow.status, frozenset(steps))

    audit_rows = conn.execute(
        select(audit_events.c.id, audit_events.c.task_id, audit_events.c.kind, audit_events.c.at)
        .where(audit_events.c.id > seen.audit_cursor)
        .order_by(audit_events.c.id)
        .limit(500)
    ).all()
    now.audit_cursor = max([seen.audit_cursor, *(r.id for r in audit_rows)])
    for arow in audit_rows:
        task_id = arow.task_id
        akey = _key(conn, now, task_id) if task_id is not None else None
        out.append(
            ("audit", {"task_id": task_id, "task": akey, "kind": arow.kind, "at": iso(arow.at)})
        )
    return now, out


def start_snapshot(conn: Connection) -> Snapshot:
    """Where a feed starts: everything now is known, nothing is news."""
    audit_max = conn.execute(select(func.max(audit_events.c.id))).scalar()
    job_max = conn.execute(select(func.max(jobs.c.id))).scalar()
    seen = Snapshot(audit_cursor=audit_max or 0, job_cursor=job_max or 0)
    now, _ = read_changes(conn, seen)
    return now


def _key(conn: Connection, snap: Snapshot, task_id: int) -> str:
    if task_id not in snap.keys:
        key = conn.execute(select(tasks.c.key).where(tasks.c.id == task_id)).scalar()
        snap.keys[task_id] = original_key(key or str(task_id))
    return snap.keys[task_id]


class Subscription:
    """A listener's place in the feed."""

    def __init__(self, feed: Feed, cursor: int) -> None:
        self.feed = feed
        self.cursor = cursor
        self.backlog: list[Event] = []

    async def next(self, wait_seconds: float) -> list[Event]:
        """The next events (an empty list when none came within `wait_seconds`)."""
        if self.backlog:
            out, self.backlog = self.backlog, []
            return out
        fresh = await self.feed.wait_after(self.cursor, wait_seconds)
        if fresh:
            self.cursor = fresh[-1].seq
        return fresh


class Feed:
    """The change feed of one app: one poller, any number of listeners."""

    def __init__(self, store: Store, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.boot = format(int(time.time() * 1000), "x")
        self._seq = 0
        self._events: deque[Event] = deque(maxlen=BUFFER)
        self._changed = asyncio.Condition()
        self._listeners = 0
        self._poller: asyncio.Task[None] | None = None
        self._gap = False  # the poller was idle: events may have been missed

    @property
    def last_id(self) -> str:
        return f"{self.boot}.{self._seq}"

    def since(self, last_event_id: str | None) -> list[Event] | None:
        """Events after `last_event_id` (none without one), or None when some of them
        are no longer kept or the id is not one of this run's."""
        if not last_event_id:
            return []
        boot, _, raw = last_event_id.strip().partition(".")
        if boot != self.boot or not raw.isdigit() or int(raw) > self._seq:
            return None
        wanted = int(raw)
        kept_from = self._events[0].seq if self._events else self._seq + 1
        if wanted + 1 < kept_from and wanted < self._seq:
            return None
        return [e for e in self._events if e.seq > wanted]

    @contextlib.asynccontextmanager
    async def subscription(self, last_event_id: str | None) -> AsyncIterator[Subscription]:
        """One listener: first what it missed (or `resync`), then live events."""
        self._listeners += 1
        try:
            await self._ensure_polling()
            sub = Subscription(self, self._seq)
            missed = self.since(last_event_id)
            if missed is None:
                sub.backlog.append(Event(self.boot, self._seq, "resync", {"reason": "missed"}))
            else:
                sub.backlog.extend(missed)
            yield sub
        finally:
            self._listeners -= 1

    async def wait_after(self, cursor: int, wait_seconds: float) -> list[Event]:
        """Events after `cursor`, waiting at most `wait_seconds` for one."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._seq > cursor), wait_seconds
                )
        return [e for e in self._events if e.seq > cursor]

    async def _ensure_polling(self) -> None:
        if self._poller is not None and not self._poller.done():
            return
        if self._poller is not None:
            self._gap = True
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="ui-feed")

    async def _poll(self) -> None:
        try:
            seen = await self.store.run_read(start_snapshot)
        except StoreError:
            log.warning("the dashboard feed cannot read the store; retrying", exc_info=True)
            seen = Snapshot()
        if self._gap:
            await self._publish([("resync", {"reason": "the feed was idle"})])
            self._gap = False
        idle_since: float | None = None
        while True:
            await asyncio.sleep(self.poll_seconds)
            if self._listeners == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > IDLE_SECONDS:
                    return
            else:
                idle_since = None
            try:
                seen, changes = await self.store.run_read(read_changes, seen)
            except StoreError:
                log.warning("the dashboard feed cannot read the store", exc_info=True)
                continue
            if changes:
                await self._publish(changes)

    async def _publish(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        async with self._changed:
            for kind, data in changes:
                self._seq += 1
                self._events.append(Event(self.boot, self._seq, kind, data))
            self._changed.notify_all()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
