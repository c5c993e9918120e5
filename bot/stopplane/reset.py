"""The reset, step by step (DESIGN "The stop plane", steps 2–9).

Each step reads what it needs, does its one thing, and returns a small JSON result that
is stored on the stop record with the time it finished. An outside step's record goes
into the next write the reset makes anyway (the jobs' cancel, or a store steps'
transaction), so a reset commits four times on SQLite; a step already recorded is
skipped, and one done but not yet recorded when the server died runs again, which every
step allows: a reset resumed after a crash does nothing twice.

The steps that only write the store (`lease`, `tombstone`, `terminal`, and
`pull_request` while there is no pull request) do their write and record themselves in
one transaction, and consecutive ones share it (`lease` + `pull_request`, `tombstone` +
`terminal`): a crash leaves such a step either done and recorded or not done at all, so
for them `done:<step>` (effect out, record not in) cannot happen; its failpoint fires
just before that transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any, cast

from bot.engine import pr_open
from bot.engine.workers import owned_here
from bot.services import Services
from bot.stopplane import owners
from bot.stopplane.groups import stop_jobs, summarise
from bot.stopplane.notify import notify, reset_counts
from bot.stopplane.outside import delete_branch, remove_worktree
from bot.stopplane.pull_request import close_pull_request
from integrations.processes import stop_process_group
from state import hosts, jobs, stops
from state.errors import StaleVersionError
from state.machine import Facts, Trigger, decide
from state.models import Job, JobStatus, StopRecord, StopStatus, Task
from state.store import add_event, get_task, original_key, tombstone_task_keys, update_task

log = logging.getLogger(__name__)

Step = Callable[[Services, StopRecord, Task], Awaitable[dict[str, Any]]]
# A step that only writes the store: (conn, stop record so far, task id, now) → result
# (None: the step has outside work after all and runs as an outside step).
StoreStep = Callable[[Any, StopRecord, int, float], dict[str, Any] | None]


async def run_reset(svc: Services, stop_id: str, *, untouched: bool | None = None) -> None:
    """Run every step not yet recorded for this stop, in order; on one server at a time
    (another server's live claim on the reset wins). `untouched`: whether the stop's
    decision saw a task that never touched the outside world (None: not known, look)."""
    if not await _claim(svc, stop_id):
        log.info("reset runs on another server", extra={"stop_id": stop_id})
        return
    try:
        await _run_steps(svc, stop_id, untouched)
    finally:
        svc.reset_claims.pop(stop_id, None)


async def _run_steps(svc: Services, stop_id: str, untouched: bool | None) -> None:
    rec, task, task_jobs = await _begin(svc, stop_id, untouched)
    # Outside steps done whose records go into the next write (a store steps'
    # transaction, or the jobs' cancel): a crash before it runs them again, which every
    # step allows.
    carried: dict[str, Any] = {}
    fresh = False  # `task` was read after the last outside step finished
    for position, (name, step) in enumerate(STEPS):
        if rec is None or task is None or rec.status is not StopStatus.OPEN:
            return
        done = stops.stop_steps(rec)
        if name in done or name in carried:
            continue
        if _store_only(svc, name, task):
            rec, task = await _run_store_steps(svc, stop_id, name, task, done, carried)
            carried, fresh = {}, True
            continue
        if name in _NEEDS_FRESH_TASK and not fresh:  # a worker may have recorded a push
            task = await svc.store.run_read(get_task, rec.task_id)
            if task is None:
                return
        # The worktree and the remote branch are independent (different locks, one the
        # clone's worktrees, the other a push): both run at once, each recorded as its
        # own step. A crash before either record runs both again; both are idempotent.
        batch: list[tuple[str, Step]] = [(name, cast(Step, step))]
        if name == "processes" and task_jobs is not None:  # read with the stop, just now
            batch = [(name, partial(stop_processes, task_jobs=task_jobs))]
        if name == "worktree" and "remote_branch" not in done:
            batch.append(("remote_branch", delete_branch))
        handed: dict[str, Any] = {}
        if name == "jobs" and carried:  # the cancel is a write: it records them too
            handed, carried = carried, {}
            batch = [(name, partial(cancel_jobs, carried=handed))]
        for each, _ in batch:
            failpoint(f"before:{each}")
        if not await _claim(svc, stop_id):
            return
        results = await asyncio.gather(*(fn(svc, rec, task) for _, fn in batch))
        _recorded(task, stop_id, handed)
        finished = svc.clock.now()
        for (each, _), result in zip(batch, results, strict=True):
            failpoint(f"done:{each}")  # the step's effect is out, its record not yet in
            carried[each] = {**result, "at": finished}
        fresh = False
        following = [n for n, _ in STEPS[position + len(batch) :] if n not in done]
        if _carry_on(svc, task, following, carried):
            continue
        # The stop closes with its last step, so a crash before the comment resumes and
        # still sends it, and nobody sees a closed stop with a step missing.
        close_at = finished if STEPS[-1][0] in carried else None
        rec = await svc.store.run(stops.mark_steps, stop_id, carried, close_at=close_at)
        _recorded(task, stop_id, carried)
        carried = {}


async def _begin(
    svc: Services, stop_id: str, untouched: bool | None
) -> tuple[StopRecord | None, Task | None, list[Job] | None]:
    """The stop, its task and the task's jobs as the reset starts (one read). A task that
    never touched the outside world (stopped while queued) is reset right here instead,
    steps 2–8 in one transaction (its jobs are then not read: None)."""
    if not untouched:
        rec, task, task_jobs = await svc.store.run_read(_reset_view, stop_id)
        if untouched is False or not _untouched(rec, task, task_jobs):
            return rec, task, task_jobs
    reset = await svc.store.run(reset_untouched, stop_id, svc.clock.now())
    if reset is None:
        return await svc.store.run_read(_reset_view, stop_id)
    _observe_terminal(svc, reset[0], "cancelled_graceful")
    return (*reset, None)


def _store_only(svc: Services, name: str, task: Task) -> bool:
    """Whether step `name` only writes the store for this task: the store steps, and the
    pull request's when there is none (no forge, or none opened; the transaction
    re-reads the task and leaves it to run as an outside step if one was opened)."""
    if name == "pull_request":
        return svc.forge_for(task.repo) is None or task.pr_number is None
    return name in STORE_STEPS


def _carry_on(svc: Services, task: Task, following: list[str], carried: dict[str, Any]) -> bool:
    """Whether the records carried can wait for the next step's write: it is a store
    step, or the jobs' cancel; and no carried result waits on another server (which
    amends the record when it is done, so the record must be in first)."""
    if any(isinstance(r, dict) and r.get("pending_on") for r in carried.values()):
        return False
    if not following:
        return False
    return following[0] == "jobs" or _store_only(svc, following[0], task)


def _recorded(task: Task, stop_id: str, results: dict[str, Any]) -> None:
    for each, result in results.items():
        failpoint(f"after:{each}")
        _log_step(task, stop_id, each, result)


async def _run_store_steps(
    svc: Services,
    stop_id: str,
    first: str,
    task: Task,
    done: dict[str, Any],
    carried: dict[str, Any],
) -> tuple[StopRecord | None, Task | None]:
    """The store-only steps from `first` up to the next other step, those not yet
    recorded, done and recorded in one transaction with the records `carried`; the record
    and the task as they then stand (None: the stop vanished meanwhile)."""
    order = [each for each, _ in STEPS]
    names: list[str] = []
    for each in order[order.index(first) :]:
        if not _store_only(svc, each, task):
            break
        if each not in done:
            names.append(each)
    for each in names:
        failpoint(f"before:{each}")
    if not await _claim(svc, stop_id):
        return None, None
    for each in names:
        failpoint(f"done:{each}")  # one transaction: nothing of these is out yet
    rec_after, task_after, results = await svc.store.run_until_current(
        _store_steps, stop_id, task.id, names, carried, svc.clock.now()
    )
    _recorded(task, stop_id, {**carried, **results})
    if "terminal" in results and rec_after is not None:
        _observe_terminal(svc, rec_after, str(results["terminal"]["outcome"]))
    return rec_after, task_after


def _store_steps(
    conn: Any,
    stop_id: str,
    task_id: int,
    names: list[str],
    carried: dict[str, Any],
    now: float,
) -> tuple[StopRecord | None, Task | None, dict[str, dict[str, Any]]]:
    """The records carried, then each named store step's write and its record, in this
    one transaction (never the last step: `notify` closes the stop); a step that finds
    it has outside work after all (a pull request opened) ends the run before it."""
    rec = stops.get_stop(conn, stop_id)
    if rec is not None and rec.status is StopStatus.OPEN and carried:
        rec = stops.mark_steps(conn, stop_id, carried)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if rec is None or rec.status is not StopStatus.OPEN:
            break
        result = STORE_STEPS[name](conn, rec, task_id, now)
        if result is None:
            break
        results[name] = result
        rec = stops.mark_step(conn, stop_id, name, result, at=now)
    return rec, get_task(conn, task_id), results


def _log_step(task: Task, stop_id: str, step: str, result: Any) -> None:
    log.info(
        "reset step done",
        extra={
            "task": original_key(task.key),
            "stop_id": stop_id,
            "action": step,
            "outcome": result,
        },
    )


_NEEDS_FRESH_TASK = frozenset({"pull_request", "worktree", "remote_branch"})
# How long a server's claim on a reset lasts without renewal (renewed before every
# step): longer than any one step waits, so a live runner is never overtaken.
RUNNER_SLACK_SECONDS = 60.0


async def _claim(svc: Services, stop_id: str) -> bool:
    """Take or renew this server's claim on running the reset. SQLite is one server:
    nothing to claim. On PostgreSQL the claim is renewed when a third of it is used."""
    if svc.store.dialect == "sqlite":
        return True
    ttl = svc.settings.stop.grace_seconds + owners.PROCESSES_SLACK_SECONDS + RUNNER_SLACK_SECONDS
    now = svc.clock.monotonic()
    held = svc.reset_claims.get(stop_id)
    if held is not None and now - held < ttl / 3:
        return True
    claimed = await svc.store.run(hosts.claim_reset, stop_id, svc.server.id, svc.clock.now(), ttl)
    if claimed:
        svc.reset_claims[stop_id] = now
    else:
        svc.reset_claims.pop(stop_id, None)
    return claimed


def failpoint(point: str) -> None:
    """Crash-test hook: `CONVEYOR_FAILPOINT=after:jobs` SIGKILLs this server right there
    (`before:`, `done:` (done, not yet recorded) or `after:` any step of STEPS).

    Only the kill -9 acceptance tests set it; it proves a reset resumes from any step.
    """
    if os.environ.get("CONVEYOR_FAILPOINT") == point:
        log.warning("failpoint reached; killing the server", extra={"action": point})
        os.kill(os.getpid(), signal.SIGKILL)


# -- step 2: the process tree -------------------------------------------------------------


async def stop_processes(
    svc: Services, rec: StopRecord, task: Task, *, task_jobs: list[Job] | None = None
) -> dict[str, Any]:
    """SIGTERM (+SIGCONT), grace, SIGKILL, confirm: every running job's process group;
    another server's agents are handed to that server and waited for within a bound.
    `task_jobs`: the task's jobs when just read (else they are read here)."""
    # The grace runs from the request: a reset resumed after a crash waits only what is
    # left of it. A deferred stop's processes get the whole grace (it waited for a window).
    started = svc.clock.now() if rec.window else rec.requested_at
    grace = max(0.0, svc.settings.stop.grace_seconds - (svc.clock.now() - started))
    if task_jobs is None:
        task_jobs = await svc.store.run_read(jobs.jobs_for_task, task.id)
    running = [j for j in task_jobs if j.status is JobStatus.RUNNING]
    own = [j for j in running if j.pgid and owned_here(j, svc.server)]
    handed = [
        owners.hand_off_processes(svc, rec, task, server_id, theirs, grace)
        for server_id, theirs in owners.foreign_owners(running, svc.server).items()
    ]
    local, *theirs = await asyncio.gather(stop_jobs(svc, own, grace), *handed)
    _observe_group_empty(svc, rec)
    summary = summarise(list(local))
    # Agents that left on the SIGTERM sent right after the intent committed were gone by
    # the time this step looked: they still count as stopped.
    asked = svc.stop_timings.asked_to_exit.pop(rec.id, 0)
    summary["processes"] = max(summary["processes"], asked)
    return owners.merge_process_results(summary, list(theirs)) if theirs else summary


def _observe_group_empty(svc: Services, rec: StopRecord) -> None:
    started = svc.stop_timings.started.get(rec.id)
    if svc.metrics is not None and started is not None:
        svc.metrics.stop_group_empty(svc.clock.monotonic() - started)


# -- steps 3 and 4: jobs and lease ---------------------------------------------------------


async def cancel_jobs(
    svc: Services, rec: StopRecord, task: Task, *, carried: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every non-terminal job → cancelled (in the write that also records the steps
    `carried`); then stop any process that slipped past step 2."""
    count = await svc.store.run(_cancel_recording, rec.id, task.id, carried or {}, svc.clock.now())
    late = await _stop_late_starters(svc, task)
    return {"cancelled": count, "late_processes": late}


async def _stop_late_starters(svc: Services, task: Task) -> int:
    # A worker that spawned between step 2's read and the cancel above sees its job
    # cancelled on its next check; stopping it here makes the reset not wait for that.
    refs = svc.agents.live_processes_of_task(task.id)
    reports = await asyncio.gather(
        *(stop_process_group(ref, svc.settings.stop.grace_seconds, reap=reap) for ref, reap in refs)
    )
    return len(reports)


def _cancel_recording(
    conn: Any, stop_id: str, task_id: int, carried: dict[str, Any], now: float
) -> int:
    if carried:
        stops.mark_steps(conn, stop_id, carried)
    return jobs.cancel_task_jobs(conn, task_id, now)


def release_lease(conn: Any, rec: StopRecord, task_id: int, now: float) -> dict[str, Any]:
    return {"released": jobs.release_lease(conn, task_id)}


def no_pull_request(conn: Any, rec: StopRecord, task_id: int, now: float) -> dict[str, Any] | None:
    """Step 4b for a task without a pull request: nothing to close. None when one was
    opened after all (the step then runs as an outside step)."""
    task = get_task(conn, task_id)
    if task is not None and task.pr_number is not None:
        return None
    return dict(pr_open.NO_PULL_REQUEST)


# -- step 5: the worktree, by the server whose data dir holds it ----------------------------


async def worktree(svc: Services, rec: StopRecord, task: Task) -> dict[str, Any]:
    """Remove the worktree here, or hand it to the server that made it."""
    owner = task.worktree_server
    if not task.worktree_path or not owner or owner == svc.server.id:
        return await remove_worktree(svc, rec, task)
    result = await owners.hand_off(
        svc,
        rec,
        task,
        server_id=owner,
        step="worktree",
        detail={"path": task.worktree_path, "branch": task.branch},
        wait_seconds=owners.WORKTREE_WAIT_SECONDS,
    )
    return {"removed": False, **result}


# -- steps 7 and 8: tombstone and terminal -------------------------------------------------


def tombstone(conn: Any, rec: StopRecord, task_id: int, now: float) -> dict[str, Any]:
    """Free the ticket's keys so the start status can make a fresh task later."""
    done = _apply(conn, lambda conn, t: tombstone_task_keys(conn, t, now), task_id)
    return {"issue_id": done.issue_id, "key": done.key}


def make_terminal(conn: Any, rec: StopRecord, task_id: int, now: float) -> dict[str, Any]:
    """Stage `cancelled`, the outcome, one audit event with the counts (from the steps
    recorded so far)."""
    steps = stops.stop_steps(rec)
    outcome = (
        "cancelled_forced" if steps.get("processes", {}).get("forced") else "cancelled_graceful"
    )
    counts = reset_counts(steps)
    trigger = Trigger.FINALIZE_CANCEL if rec.window else Trigger.STOP

    def apply(conn: Any, current: Task) -> Task:
        return _cancel(conn, rec, current, trigger, outcome, counts, now)

    final = _apply(conn, apply, task_id)
    return {"outcome": final.outcome, "effects_committed": final.merged_at is not None, **counts}


def _cancel(
    conn: Any,
    rec: StopRecord,
    current: Task,
    trigger: Trigger,
    outcome: str,
    counts: dict[str, Any],
    now: float,
) -> Task:
    """The task `cancelled` (compare-and-set), its audit event with the counts."""
    if current.terminal:
        return current
    decision = decide(current, trigger, now=now, facts=Facts(), outcome=outcome)
    if not decision.allowed:
        raise StaleVersionError(f"cannot cancel yet: {decision.refusal}")
    done = update_task(conn, current, now, **decision.changes)
    add_event(
        conn,
        current.id,
        "cancelled",
        now,
        actor=rec.requested_by,
        stop_id=rec.id,
        outcome=outcome,
        effects_committed=current.merged_at is not None,
        **counts,
    )
    stops.update_stop(conn, rec.id, outcome=outcome)
    return done


def _reset_view(conn: Any, stop_id: str) -> tuple[StopRecord | None, Task | None, list[Job]]:
    """The stop, its task and the task's jobs."""
    rec = stops.get_stop(conn, stop_id)
    task = None if rec is None else get_task(conn, rec.task_id)
    return rec, task, [] if task is None else jobs.jobs_for_task(conn, task.id)


def _untouched(rec: StopRecord | None, task: Task | None, task_jobs: list[Job]) -> bool:
    """No step done yet, and no process, worktree, branch or pull request: the task was
    stopped while queued."""
    if rec is None or task is None or rec.status is not StopStatus.OPEN or rec.steps != "{}":
        return False
    return never_touched(task, running=any(j.status is JobStatus.RUNNING for j in task_jobs))


def never_touched(task: Task, *, running: bool) -> bool:
    """No process (`running`: a job of it runs), worktree, branch or pull request: nothing
    outside the store to undo."""
    return not (task.worktree_path or task.branch or task.pr_number is not None or running)


def reset_untouched(conn: Any, stop_id: str, now: float) -> tuple[StopRecord, Task] | None:
    """Steps 2–8 in one transaction for a task that never touched the outside world (no
    process, worktree or branch: stopped while queued): the record and the task as they
    then stand. None when it did."""
    rec, task, task_jobs = _reset_view(conn, stop_id)
    if rec is None or task is None or not _untouched(rec, task, task_jobs):
        return None
    steps: dict[str, Any] = {
        "processes": summarise([]),
        "jobs": {"cancelled": jobs.cancel_task_jobs(conn, task.id, now), "late_processes": 0},
        "lease": {"released": jobs.release_lease(conn, task.id)},
        "pull_request": dict(pr_open.NO_PULL_REQUEST),
        "worktree": {"removed": False, "reason": "no worktree"},
        "remote_branch": {"deleted": False, "reason": "no branch"},
    }
    dead = tombstone_task_keys(conn, task, now)
    steps["tombstone"] = {"issue_id": dead.issue_id, "key": dead.key}
    counts = reset_counts(steps)
    trigger = Trigger.FINALIZE_CANCEL if rec.window else Trigger.STOP
    final = _cancel(conn, rec, dead, trigger, "cancelled_graceful", counts, now)
    steps["terminal"] = {"outcome": final.outcome, "effects_committed": False, **counts}
    # Nothing was handed to another server: nobody amends this record meanwhile.
    read = rec if dead.terminal else replace(rec, outcome=final.outcome)  # as `_cancel` wrote
    return stops.mark_steps(conn, stop_id, steps, at=now, read=read) or read, final


def _observe_terminal(svc: Services, rec: StopRecord, outcome: str) -> None:
    started = svc.stop_timings.started.pop(rec.id, None)
    if svc.metrics is not None:
        svc.metrics.stop_finished(
            outcome, None if started is None else svc.clock.monotonic() - started
        )


def _apply(conn: Any, fn: Callable[[Any, Task], Task], task_id: int) -> Task:
    task = get_task(conn, task_id)
    if task is None:
        raise LookupError(f"task {task_id} vanished")
    return fn(conn, task)


STORE_STEPS: dict[str, StoreStep] = {
    "lease": release_lease,
    "pull_request": no_pull_request,  # when there is none; else the outside step below
    "tombstone": tombstone,
    "terminal": make_terminal,
}

STEPS: list[tuple[str, Step | StoreStep]] = [
    ("processes", stop_processes),
    ("jobs", cancel_jobs),
    ("lease", release_lease),
    ("pull_request", close_pull_request),  # pull-request mode: closed, never merged
    ("worktree", worktree),
    ("remote_branch", delete_branch),
    ("tombstone", tombstone),
    ("terminal", make_terminal),
    ("notify", notify),
]
