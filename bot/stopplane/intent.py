"""The stop plane: one `request_stop` behind every entry point, the reset (DESIGN steps
2–9), each step idempotent and recorded on the stop record so a resumed reset never
does anything twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from bot.services import Services
from bot.stopplane import notify as reset_notify
from bot.stopplane import owners
from bot.stopplane import reset as resetsteps
from state import jobs, stops
from state.errors import StaleVersionError
from state.machine import Facts, Trigger, critical_window, decide
from state.models import Job, JobStatus, ServerIdentity, Stage, StopRecord, StopStatus, Task
from state.savepoints import savepoint
from state.store import add_event, get_task, original_key, update_task

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 50


@dataclass(frozen=True)
class StopResult:
    """What a stop request decided: stop_requested, stop_deferred or noop_already_terminal."""

    outcome: str
    task: str
    task_id: int
    stop_id: str | None = None
    new: bool = False
    # The task had no process, worktree, branch or pull request when the stop was
    # decided (a hint for the reset, which checks again in its own transaction).
    untouched: bool = False


def task_facts(conn: Connection, task: Task) -> Facts:
    """What the critical window depends on, read in the caller's transaction; unknown
    when the store cannot say (the window then counts as open: fail-closed)."""
    return _facts_and_running_job(conn, task)[0]


def _facts_and_running_job(conn: Connection, task: Task) -> tuple[Facts, Job | None]:
    """`task_facts`, and the job running now (None when none is, or when unknown)."""
    try:
        with savepoint(conn):  # a failed read must not poison the caller's transaction
            live = jobs.live_jobs_for_task(conn, task.id)
            holds_lease = jobs.lease_of_task(conn, task.id) is not None
    except (SQLAlchemyError, ValueError) as exc:
        log.warning("critical window undeterminable", extra={"task": task.key, "error": str(exc)})
        return Facts(has_running_job=None, holds_lease=None), None
    running = [j for j in live if j.status is JobStatus.RUNNING]
    facts = Facts(
        has_running_job=bool(running),
        running_job_stage=running[0].stage if running else None,
        holds_lease=holds_lease,
    )
    return facts, running[0] if running else None


async def request_stop(
    svc: Services, task: Task, *, requested_by: str, reason: str, correlation: str | None
) -> StopResult:
    """Record the stop intent durably and decide: noop, deferred, or start the reset."""
    result = await svc.store.run(
        decide_stop,
        task.id,
        requested_by,
        reason,
        correlation,
        svc.clock.now(),
        server=svc.server,
    )
    after_decision(svc, result, correlation)
    return result


def after_decision(svc: Services, result: StopResult, correlation: str | None) -> None:
    """What follows a committed stop decision: the reset, or the one deferral notice."""
    log.info(
        "stop %s",
        result.outcome,
        extra={
            "task": result.task,
            "stop_id": result.stop_id,
            "outcome": result.outcome,
            "delivery": correlation,
        },
    )
    if svc.metrics is not None and (result.new or result.outcome == "noop_already_terminal"):
        svc.metrics.stop_requested(result.outcome)
    if result.new and result.outcome == "stop_requested" and result.stop_id:
        svc.stop_timings.started[result.stop_id] = svc.clock.monotonic()
        # The intent is durable: ask this server's agents to exit right away.
        svc.stop_timings.asked_to_exit[result.stop_id] = svc.agents.request_exit(result.task_id)
        launch_reset(svc, result.stop_id, untouched=result.untouched)
    elif result.new and result.outcome == "stop_deferred" and result.stop_id:
        svc.launch(
            reset_notify.notify_deferred(svc, result.stop_id), name=f"notify-{result.stop_id}"
        )


def launch_reset(svc: Services, stop_id: str, *, untouched: bool | None = None) -> None:
    """Run the reset behind the answer, once per process per stop (`untouched`: the
    decision's hint, see `StopResult`)."""
    active = svc.resets
    if stop_id in active:
        return
    active.add(stop_id)

    async def run() -> None:
        try:
            await resetsteps.run_reset(svc, stop_id, untouched=untouched)
        finally:
            active.discard(stop_id)

    svc.launch(run(), name=f"reset-{stop_id}")


def decide_stop(
    conn: Connection,
    task_id: int,
    requested_by: str,
    reason: str,
    correlation: str | None,
    now: float,
    *,
    server: ServerIdentity | None = None,
    task: Task | None = None,
) -> StopResult:
    """Record the stop and decide, inside the caller's transaction. A lost compare-and-set
    rolls back to a SAVEPOINT and re-decides, so a webhook can record its delivery, its
    stop and its answer in one transaction. With `server` (the one deciding), agents
    other servers run are handed to them in the same transaction. `task`, when given, is
    the task as the caller read it in this transaction: the first attempt decides on it
    instead of reading it again (a retry after a lost compare-and-set re-reads)."""
    saw_live = False
    for _ in range(CAS_ATTEMPTS):
        try:
            with savepoint(conn):
                current = task if task is not None and task.id == task_id else None
                result = _decide(
                    conn, task_id, requested_by, reason, correlation, now, saw_live, current
                )
                # SQLite is one server: every agent is its own.
                if server is not None and conn.dialect.name == "postgresql" and result.new:
                    _hand_over(conn, result, server)
            return result
        except StaleVersionError:
            saw_live, task = True, None
    raise StaleVersionError(f"task {task_id} kept changing; stop not recorded, try again")


def _decide(
    conn: Connection,
    task_id: int,
    requested_by: str,
    reason: str,
    correlation: str | None,
    now: float,
    saw_live: bool,
    task: Task | None = None,
) -> StopResult:
    """Decide one stop; `saw_live`: an earlier attempt found the task live (and lost its
    compare-and-set), so a task now terminal finished first and the stop is superseded.
    `task`: the task as already read in this transaction (else it is read here)."""
    if task is None:
        task = get_task(conn, task_id)
    if task is None:
        raise LookupError(f"task {task_id} vanished")
    if task.terminal:
        return _terminal(conn, task, requested_by, reason, correlation, now, saw_live)
    existing = stops.open_stop(conn, task.id)
    if existing is not None:
        return _same(task, existing)
    # One read of the jobs and the lease: the window and the running job recorded on the
    # stop. When it fails, the window is unknown (deferred) and no job is recorded.
    facts, running = _facts_and_running_job(conn, task)
    window = critical_window(task, facts)
    kw: dict[str, Any] = dict(
        task_id=task.id,
        now=now,
        requested_by=requested_by,
        reason=reason,
        correlation_id=correlation,
        job_id=running.id if running else None,
        run_id=running.run_id if running else None,
    )
    if window is not None:
        changes = decide(task, Trigger.DEFER_STOP, now=now, facts=facts).changes
        status, outcome = StopStatus.DEFERRED, "stop_deferred"
    else:
        # The intent goes on the task row in the same compare-and-set: a worker finishing
        # a stage re-reads it and never advances a task that is being stopped.
        changes = {"cancel_requested_at": task.cancel_requested_at or now}
        status, outcome = StopStatus.OPEN, "stop_requested"
    update_task(conn, task, now, **changes)
    rec, new = stops.insert_stop(conn, status=status, window=window, **kw)
    add_event(
        conn,
        task.id,
        outcome,
        now,
        actor=requested_by,
        stop_id=rec.id,
        reason=reason,
        correlation=correlation,
        **({"window": window} if window else {}),
    )
    untouched = resetsteps.never_touched(task, running=running is not None)
    return StopResult(outcome, original_key(task.key), task.id, rec.id, new, untouched)


def _hand_over(conn: Connection, result: StopResult, server: ServerIdentity) -> None:
    if result.outcome != "stop_requested":
        return
    rec = stops.get_stop(conn, result.stop_id or "")
    running = [
        j for j in jobs.live_jobs_for_task(conn, result.task_id) if j.status is JobStatus.RUNNING
    ]
    if rec is not None and running:
        owners.hand_over_in(conn, rec, running, server)


def _same(task: Task, rec: StopRecord) -> StopResult:
    outcome = "stop_deferred" if rec.status is StopStatus.DEFERRED else "stop_requested"
    return StopResult(outcome, original_key(task.key), task.id, rec.id, False)


def _terminal(
    conn: Connection,
    task: Task,
    requested_by: str,
    reason: str,
    correlation: str | None,
    now: float,
    saw_live: bool,
) -> StopResult:
    # Late callers of a stop that already finished get its stop_id: one stop, one id. The
    # task turns terminal one step before the stop closes (its comment is the last step),
    # so the stop that cancelled it may still be open.
    ending = (StopStatus.DONE, StopStatus.OPEN)
    closing = next(
        (r for r in reversed(stops.stops_for_task(conn, task.id)) if r.status in ending),
        None,
    )
    if task.stage is Stage.CANCELLED and closing is not None:
        # Cancelled by a stop, even one that won this stop's race (a lost compare-and-set,
        # then that stop's whole reset, before this one read the task again).
        return StopResult("noop_already_terminal", original_key(task.key), task.id, closing.id)
    if saw_live:
        # The task was live when this stop began and finished otherwise before the stop
        # could commit: the stop lost the race and is closed as superseded.
        rec, _ = stops.insert_stop(
            conn,
            task_id=task.id,
            status=StopStatus.SUPERSEDED,
            now=now,
            requested_by=requested_by,
            reason=reason,
            correlation_id=correlation,
            job_id=None,
            run_id=None,
            outcome="superseded",
        )
        add_event(conn, task.id, "stop_superseded", now, actor=requested_by, stop_id=rec.id)
        return StopResult("noop_already_terminal", original_key(task.key), task.id, rec.id)
    stop_id = closing.id if closing else None
    return StopResult("noop_already_terminal", original_key(task.key), task.id, stop_id)


def deferred_ready(conn: Connection, rec: StopRecord, now: float) -> bool:
    """True when a deferred stop's window has closed; flips it to open (compare-and-set)."""
    task = get_task(conn, rec.task_id)
    if task is None:
        return False
    if not task.terminal and critical_window(task, task_facts(conn, task)) is not None:
        return False
    if not stops.update_stop(conn, rec.id, expect=StopStatus.DEFERRED, status=StopStatus.OPEN):
        return False
    add_event(conn, rec.task_id, "deferred_stop_applied", now, stop_id=rec.id, window=rec.window)
    return True
