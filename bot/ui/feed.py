"""What `GET /events` streams: changes the store records, found by polling it.

Four times a second while someone listens, the feed reads a fingerprint (the counts per
stage and status that triggers keep, the newest audit event and job ids, the open stops
with their steps); when it moved, and every `FULL_POLL_SECONDS` anyway, it reads a small
snapshot: audit events past a cursor, the live tasks (and those that were live last
time), the queued and running jobs (and new ones, and those that were live), the open
stops (and those that were, and those its new audit events name). The difference from
the previous snapshot becomes events: `stage` (a task entered
a stage), `job` (a job was queued, started or finished), `stop` (a stop was recorded, a
reset step finished, the stop closed) and `audit` (an audit event was written). Because
it reads the database, a change made by another process sharing it shows the same way.
The steady-state poll costs a few indexed reads; the diff O(live tasks + live jobs + open
stops + new audit rows); nothing at all runs while nobody listens (`bench/events_feed.py`).

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
from state.models import JOB_TERMINAL, OPEN_STOP_STATUSES, TERMINAL, JobStatus, Stage, step_rank
from state.queue import iso
from state.schema import audit_events, counts, jobs, stop_records, tasks
from state.store import Store, original_key

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
FULL_POLL_SECONDS = 2.0  # the whole diff at least this often, whatever the fingerprint says
IDLE_SECONDS = 30.0  # the poller stops this long after the last listener left
BUFFER = 2000
LIVE_STAGES = tuple(s.value for s in Stage if s not in TERMINAL)
LIVE_SET = frozenset(LIVE_STAGES)
LIVE_JOBS = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
MAX_KEYS = 10_000  # task keys remembered for events (task id -> key)


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

    fingerprint: tuple[Any, ...] = ()
    audit_cursor: int = 0
    job_cursor: int = 0
    tasks: dict[int, str] = field(default_factory=dict)  # live task id -> stage
    jobs: dict[int, str] = field(default_factory=dict)  # live job id -> status
    stops: dict[str, tuple[int, str, frozenset[str]]] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=dict)  # task id -> original key


Change = tuple[str, dict[str, Any]]
LATE = float("inf")  # a change with no recorded time sorts after those with one

# The audit events that move a task into a stage (with the stage, or None: detail's).
ENTERS: dict[str, str | None] = {
    "started": "analysis",
    "relaunched": "analysis",
    "advanced": None,
    "retry_requested": None,  # a blocked task back in its stage (POST /tasks/{ref}/retry)
    "blocked": "blocked",
    "cancelled": "cancelled",
}


def entered_stage(kind: str, detail: dict[str, Any]) -> str | None:
    """The stage an audit event moved its task into, if it did."""
    if kind not in ENTERS:
        return None
    stage = ENTERS[kind] or detail.get("stage")
    return str(stage) if stage else None


def read_changes(conn: Connection, seen: Snapshot) -> tuple[Snapshot, list[Change]]:
    """One poll: the new snapshot and the changes since `seen`, in the order they were
    recorded (a change's own time: the audit event's, the job's start or finish, the
    step's), so a task's stages, a job's start and finish, a reset's steps keep theirs."""
    now = Snapshot(keys=seen.keys if len(seen.keys) < MAX_KEYS else {})
    timed: list[tuple[float, Change]] = []
    announced: dict[int, str] = {}  # task id -> the last stage an audit event gave

    audit_rows = conn.execute(
        select(
            audit_events.c.id,
            audit_events.c.task_id,
            audit_events.c.kind,
            audit_events.c.at,
            audit_events.c.detail,
            audit_events.c.stop_id,
        )
        .where(audit_events.c.id > seen.audit_cursor)
        .order_by(audit_events.c.id)
        .limit(500)
    ).all()
    now.audit_cursor = max([seen.audit_cursor, *(r.id for r in audit_rows)])
    # A stop that opened and closed between two polls is found through its audit events.
    told_stops = {r.stop_id for r in audit_rows if r.stop_id}
    for arow in audit_rows:
        task_id = arow.task_id
        akey = _key(conn, now, task_id) if task_id is not None else None
        base = {"task_id": task_id, "task": akey, "at": iso(arow.at)}
        timed.append((arow.at, ("audit", {**base, "kind": arow.kind})))
        detail = _json(arow.detail)
        stage = entered_stage(arow.kind, detail)
        if stage and task_id is not None:
            announced[task_id] = stage
            data = {**base, "stage": stage, "outcome": detail.get("outcome")}
            timed.append((arow.at, ("stage", data)))

    # Tasks and jobs: first only (id, stage/status) of the live ones and of those live last
    # time; whole rows only for what changed. Steady state: two light indexed reads.
    task_states = dict(
        conn.execute(select(tasks.c.id, tasks.c.stage).where(tasks.c.stage.in_(LIVE_STAGES))).all()
    )
    _add_gone(conn, task_states, seen.tasks, tasks.c.id, tasks.c.stage)
    now.tasks = {i: st for i, st in task_states.items() if st in LIVE_SET}
    moved = [i for i, st in task_states.items() if seen.tasks.get(i) != st]
    for row in _rows(
        conn, moved, tasks.c.id, tasks.c.key, tasks.c.stage, tasks.c.outcome, tasks.c.updated_at
    ):
        task_id, raw_key, stage, outcome, updated_at = row
        key = original_key(raw_key)
        now.keys[task_id] = key
        if announced.get(task_id) != stage:  # a change no audit event told
            data = {
                "task_id": task_id,
                "task": key,
                "stage": stage,
                "outcome": outcome,
                "at": iso(updated_at),
            }
            timed.append((updated_at, ("stage", data)))

    job_states = dict(
        conn.execute(
            select(jobs.c.id, jobs.c.status).where(
                or_(jobs.c.status.in_(LIVE_JOBS), jobs.c.id > seen.job_cursor)
            )
        ).all()
    )
    _add_gone(conn, job_states, seen.jobs, jobs.c.id, jobs.c.status)
    now.jobs = {i: st for i, st in job_states.items() if st in LIVE_JOBS}
    now.job_cursor = max([seen.job_cursor, *job_states])
    changed_jobs = [i for i, st in job_states.items() if seen.jobs.get(i) != st]
    columns = (
        jobs.c.id,
        jobs.c.task_id,
        jobs.c.stage,
        jobs.c.status,
        jobs.c.pid,
        jobs.c.exit_code,
        jobs.c.created_at,
        jobs.c.started_at,
        jobs.c.finished_at,
    )
    for jrow in _rows(conn, changed_jobs, *columns):
        prior = seen.jobs.get(jrow.id)
        status = JobStatus(jrow.status)
        base = {
            "task_id": jrow.task_id,
            "task": _key(conn, now, jrow.task_id),
            "job": jrow.id,
            "stage": jrow.stage,
            "pid": jrow.pid,
        }
        if prior is None:  # a new job: it was queued, whatever it did since
            timed.append((jrow.created_at, ("job", {**base, "status": "queued"})))
        started = prior in (None, JobStatus.QUEUED.value) and jrow.started_at is not None
        if started and status is not JobStatus.QUEUED:
            data = {**base, "status": "running", "at": iso(jrow.started_at)}
            timed.append((jrow.started_at, ("job", data)))
        if status in JOB_TERMINAL and prior != status.value:
            at = jrow.finished_at
            data = {**base, "status": status.value, "exit_code": jrow.exit_code, "at": iso(at)}
            timed.append((LATE if at is None else at, ("job", data)))

    stop_rows = conn.execute(
        select(
            stop_records.c.id,
            stop_records.c.task_id,
            stop_records.c.status,
            stop_records.c.steps,
            stop_records.c.outcome,
            stop_records.c.requested_at,
            stop_records.c.closed_at,
        ).where(
            or_(
                stop_records.c.status.in_(OPEN_STOP_STATUSES),
                stop_records.c.id.in_([*seen.stops, *told_stops]),
            )
        )
    ).all()
    for srow in stop_rows:
        steps = _json(srow.steps)
        was_stop = seen.stops.get(srow.id)
        done_before = was_stop[2] if was_stop else frozenset()
        base = {"task_id": srow.task_id, "task": _key(conn, now, srow.task_id), "stop_id": srow.id}
        if was_stop is None:
            data = {**base, "status": "requested", "at": iso(srow.requested_at)}
            timed.append((srow.requested_at, ("stop", data)))
        for name, result in sorted(steps.items(), key=lambda item: step_rank(item[0])):
            if name in done_before:
                continue
            at = result.get("at") if isinstance(result, dict) else None
            when = at if isinstance(at, int | float) else LATE
            data = {**base, "step": name, "at": iso(when) if when != LATE else None}
            timed.append((when, ("stop", data)))
        if (
            was_stop is not None
            and was_stop[1] != srow.status
            or (was_stop is None and srow.status not in OPEN_STOP_STATUSES)
        ):
            closed = srow.closed_at
            data = {**base, "status": srow.status, "outcome": srow.outcome, "at": iso(closed)}
            timed.append((LATE if closed is None else closed, ("stop", data)))
        if srow.status in OPEN_STOP_STATUSES:
            now.stops[srow.id] = (srow.task_id, srow.status, frozenset(steps))

    timed.sort(key=lambda item: item[0])  # stable: same-time changes keep their order
    return now, [change for _, change in timed]


def _add_gone(
    conn: Connection, states: dict[Any, Any], before: dict[Any, Any], key: Any, value: Any
) -> None:
    """Add the current value of what was live last time and is not any more."""
    gone = [i for i in before if i not in states]
    if gone:
        states.update(conn.execute(select(key, value).where(key.in_(gone))).all())


def _rows(conn: Connection, ids: list[Any], key: Any, *columns: Any) -> list[Any]:
    if not ids:
        return []
    return list(conn.execute(select(key, *columns).where(key.in_(ids)).order_by(key)).all())


def _json(text: str | None) -> dict[str, Any]:
    try:
        doc = json.loads(text or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def fingerprint(conn: Connection) -> tuple[Any, ...]:
    """What changes whenever something the feed reports changes, in a few indexed reads:
    the task and job counts per stage and status (kept by triggers, migration 0002), the
    newest audit event and job, and the open stops with their steps."""
    return (
        tuple(
            tuple(row)
            for row in conn.execute(
                select(counts.c.kind, counts.c.name, counts.c.n).order_by(
                    counts.c.kind, counts.c.name
                )
            )
        ),
        conn.execute(select(func.max(audit_events.c.id))).scalar(),
        conn.execute(select(func.max(jobs.c.id))).scalar(),
        tuple(
            tuple(row)
            for row in conn.execute(
                select(stop_records.c.id, stop_records.c.status, stop_records.c.steps)
                .where(stop_records.c.status.in_(OPEN_STOP_STATUSES))
                .order_by(stop_records.c.id)
            )
        ),
    )


def poll_once(
    conn: Connection, seen: Snapshot, *, force: bool = False
) -> tuple[Snapshot, list[Change], bool]:
    """One poll: the fingerprint first, the whole diff only when it moved (or `force`:
    two changes that cancel out in the counts, such as two jobs trading statuses, are
    still found within `FULL_POLL_SECONDS`). Also whether the whole diff ran."""
    mark = fingerprint(conn)
    if mark == seen.fingerprint and not force:
        return seen, [], False
    now, changes = read_changes(conn, seen)
    now.fingerprint = mark
    return now, changes, True


def start_snapshot(conn: Connection) -> Snapshot:
    """Where a feed starts: everything now is known, nothing is news."""
    audit_max = conn.execute(select(func.max(audit_events.c.id))).scalar()
    job_max = conn.execute(select(func.max(jobs.c.id))).scalar()
    seen = Snapshot(audit_cursor=audit_max or 0, job_cursor=job_max or 0)
    mark = fingerprint(conn)
    now, _ = read_changes(conn, seen)
    now.fingerprint = mark
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
        # Set (and replaced) on every publish: waiting on an Event is safe to time out,
        # unlike a Condition's wait_for under asyncio.wait_for on Python 3.11.
        self._changed = asyncio.Event()
        self._listeners = 0
        self._poller: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self.ending = False  # the server is shutting down: streams end now

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
        """Events after `cursor`, waiting at most `wait_seconds` for one (or the end)."""
        if self._seq <= cursor and not self.ending:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait_seconds)
        return [e for e in self._events if e.seq > cursor]

    async def _ensure_polling(self) -> None:
        """Start the poller (from a snapshot of now) unless it runs: once this returns,
        every later change becomes an event."""
        if self._poller is not None and not self._poller.done():
            return
        async with self._starting:
            if self._poller is not None and not self._poller.done():
                return
            try:
                seen = await self.store.run_read(start_snapshot)
            except StoreError:
                log.warning("the dashboard feed cannot read the store", exc_info=True)
                seen = Snapshot()
            if self._poller is not None:  # it stopped while idle: changes may be missed
                await self._publish([("resync", {"reason": "the feed was idle"})])
            self._poller = asyncio.get_running_loop().create_task(self._poll(seen), name="feed")

    async def _poll(self, seen: Snapshot) -> None:
        idle_since: float | None = None
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_seconds)
            if self._listeners == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > IDLE_SECONDS:
                    return
            else:
                idle_since = None
            force = time.monotonic() - last_full >= FULL_POLL_SECONDS
            try:
                seen, changes, full = await self.store.run_read(poll_once, seen, force=force)
            except StoreError:
                log.warning("the dashboard feed cannot read the store", exc_info=True)
                continue
            if full:
                last_full = time.monotonic()
            if changes:
                await self._publish(changes)

    async def _publish(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, data in changes:
            self._seq += 1
            self._events.append(Event(self.boot, self._seq, kind, data))
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def end_streams(self) -> None:
        """The server is shutting down: every open stream ends (it would hold it up)."""
        self.ending = True
        self._wake()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
