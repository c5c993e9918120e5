"""Host-local reset steps across servers (DESIGN "Scale-out").

Stopping an agent's process tree and removing a worktree under a data dir can only be
done by the server that owns them. The server running a reset hands such a step to its
owner through the database (`host_steps`; PostgreSQL NOTIFYs the owner at commit) and
waits for it within a bound; the owner does it and records what it did. A step the
owner has not done in time stays pending, named with its host in GET /queue, and the
owner does it when it is back (at start-up, on a notification, or on its finalizer's
schedule).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.engine.workers import owned_here, ran_here
from bot.gitops import UnknownRepoError, off_loop
from bot.services import Services
from bot.stopplane import outside
from bot.stopplane.groups import stop_jobs, summarise
from integrations import git
from integrations.errors import IntegrationError
from integrations.processes import ProcessRef, group_size, stop_process_group_sync
from state import hosts, jobs, stops
from state.models import HostStep, HostStepStatus, Job, ServerIdentity, StopRecord, Task
from state.store import add_event, get_task, original_key

log = logging.getLogger(__name__)

WAIT_POLL_SECONDS = 0.05
MAX_WAIT_POLL_SECONDS = 0.5
PROCESSES_SLACK_SECONDS = 5.0  # beyond the grace: the confirm (2 s) and the hand-over
WORKTREE_WAIT_SECONDS = 15.0
SILENT_AFTER_SECONDS = hosts.SILENT_AFTER_SECONDS
OWNER_LOOK_SECONDS = 1.0  # how often a waiting reset checks that the owner is still there


def foreign_owners(running: list[Job], server: ServerIdentity) -> dict[str, list[Job]]:
    """Running jobs another server claimed, by that server's id."""
    found: dict[str, list[Job]] = {}
    for job in running:
        if job.server_id and not owned_here(job, server):
            found.setdefault(job.server_id, []).append(job)
    return found


# -- the server running the reset ------------------------------------------------------


async def hand_off(
    svc: Services,
    rec: StopRecord,
    task: Task,
    *,
    server_id: str,
    step: str,
    detail: dict[str, Any],
    wait_seconds: float,
) -> dict[str, Any]:
    """Hand `step` to its owner and wait for its result up to `wait_seconds`; the result,
    or a note that it is pending on that host."""
    recorded = await svc.store.run(
        hosts.add_host_step,
        stop_id=rec.id,
        task_id=task.id,
        server_id=server_id,
        step=step,
        detail={**detail, "requested_at": rec.requested_at},
        now=svc.clock.now(),
    )
    owner = await svc.store.run_read(hosts.get_server, server_id)
    host = owner["host"] if owner else ""
    deadline = svc.clock.monotonic() + wait_seconds
    next_look = svc.clock.monotonic() + OWNER_LOOK_SECONDS
    absent = await _absent(svc, server_id)
    pause = WAIT_POLL_SECONDS
    while recorded.status is HostStepStatus.PENDING and not absent:
        if svc.clock.monotonic() >= deadline:
            break
        # Backing off: twenty resets waiting at once must not crowd out the intake.
        await asyncio.sleep(pause)
        pause = min(MAX_WAIT_POLL_SECONDS, pause * 2)
        recorded = await _reread(svc, recorded)
        if svc.clock.monotonic() >= next_look:  # killed meanwhile? no need to wait then
            next_look += OWNER_LOOK_SECONDS
            absent = await _absent(svc, server_id)
    if recorded.status is HostStepStatus.DONE:
        return {"by": server_id, "host": host, **hosts.step_result(recorded)}
    log.warning(
        "host step pending on its owner",
        extra={"task": original_key(task.key), "stop_id": rec.id, "action": step, "host": host},
    )
    return {"pending_on": server_id, "host": host}


async def hand_off_processes(
    svc: Services, rec: StopRecord, task: Task, server_id: str, theirs: list[Job], grace: float
) -> dict[str, Any]:
    """Hand another server's agents to it; when it is gone and ran them on this very
    host, stop them here instead (the recorded pid, group and start time prove them)."""
    result = await hand_off(
        svc,
        rec,
        task,
        server_id=server_id,
        step="processes",
        detail={"jobs": [j.id for j in theirs]},
        wait_seconds=processes_wait(svc),
    )
    local = [j for j in theirs if j.pgid and ran_here(j)]
    if "pending_on" not in result or not local or len(local) != len(theirs):
        return result
    summary = summarise(await stop_jobs(svc, local, grace))
    summary["stood_in_for"] = server_id
    for step in await svc.store.run_read(hosts.host_steps_for_stop, rec.id):
        if step.server_id == server_id and step.step == "processes":
            await svc.store.run(hosts.finish_host_step, step.id, summary, svc.clock.now())
    log.info(
        "gone server's agents stopped on its host",
        extra={"task": original_key(task.key), "stop_id": rec.id, "server": server_id},
    )
    return {"by": svc.server.id, "host": result["host"], **summary}


async def _absent(svc: Services, server_id: str) -> bool:
    return await svc.store.run_read(
        hosts.owner_absent, server_id, svc.clock.now(), SILENT_AFTER_SECONDS
    )


async def _reread(svc: Services, step: HostStep) -> HostStep:
    for found in await svc.store.run_read(hosts.host_steps_for_stop, step.stop_id):
        if found.id == step.id:
            return found
    return step


def merge_process_results(local: dict[str, Any], handed: list[dict[str, Any]]) -> dict[str, Any]:
    """One `processes` step result from this server's stops and its owners' results."""
    merged = dict(local)
    for other in handed:
        merged["groups"] = merged.get("groups", 0) + other.get("groups", 0)
        merged["processes"] = merged.get("processes", 0) + other.get("processes", 0)
        merged["forced"] = bool(merged.get("forced")) or bool(other.get("forced"))
        merged["outcomes"] = [*merged.get("outcomes", []), *other.get("outcomes", [])]
        for name in ("unconfirmed", "refused"):
            merged[name] = merged.get(name, 0) + other.get(name, 0)
        for name in ("term_to_kill_seconds", "term_to_empty_seconds"):
            values = [v for v in (merged.get(name), other.get(name)) if v is not None]
            merged[name] = max(values) if values else None
    merged["hosts"] = handed
    pending = [h for h in handed if "pending_on" in h]
    if pending:
        merged["pending_on"] = [h["pending_on"] for h in pending]
    return merged


def processes_wait(svc: Services) -> float:
    return svc.settings.stop.grace_seconds + PROCESSES_SLACK_SECONDS


# -- the owner ------------------------------------------------------------------------------


def do_owed(svc: Services) -> None:
    """Start every step this server owes that is not already under way here (SQLite is
    one server: it never owes one)."""
    if svc.store.dialect != "sqlite":
        svc.launch(catch_up(svc), name="host-steps")


async def catch_up(svc: Services) -> None:
    """Do every step this server owes (at start-up: what was handed over while it was
    away), each stop's steps in order, the stops side by side."""
    if not svc.server.id:
        return
    owed = await svc.store.run_read(hosts.pending_for_server, svc.server.id)
    by_stop: dict[str, list[HostStep]] = {}
    for step in owed:
        if step.id not in svc.owed:
            svc.owed.add(step.id)
            by_stop.setdefault(step.stop_id, []).append(step)
    await asyncio.gather(*(_do_in_order(svc, steps) for steps in by_stop.values()))


async def _do_in_order(svc: Services, steps: list[HostStep]) -> None:
    """One stop's steps here, in the order they were handed over (processes first)."""
    try:
        for step in steps:
            await do_step(svc, step)
    finally:
        for step in steps:
            svc.owed.discard(step.id)


def hand_over_in(conn: Any, rec: StopRecord, running: list[Job], server: ServerIdentity) -> None:
    """Inside the stop's own transaction: hand other servers' agents to them, so the
    NOTIFY reaches their owners the moment the intent commits."""
    for server_id, theirs in foreign_owners(running, server).items():
        hosts.add_host_step(
            conn,
            stop_id=rec.id,
            task_id=rec.task_id,
            server_id=server_id,
            step="processes",
            detail={"jobs": [j.id for j in theirs], "requested_at": rec.requested_at},
            now=rec.requested_at,
        )


async def do_step(svc: Services, step: HostStep) -> None:
    """Do one owed step and record its result; a failure leaves it pending for later."""
    try:
        if step.step == "processes":
            result = await _stop_owned(svc, step)
        else:
            task = await svc.store.run_read(get_task, step.task_id)
            if task is None:
                result = {"removed": False, "reason": "task vanished"}
            else:
                result = await _remove_owned(svc, step, task)
    except (IntegrationError, UnknownRepoError) as exc:
        log.warning(
            "host step failed; retried later", extra={"action": step.step, "error": str(exc)}
        )
        return
    now = svc.clock.now()
    if not await svc.store.run(hosts.finish_host_step, step.id, result, now):
        return  # another process of this server recorded it first
    await svc.store.run(_record_done, step, result, svc.server.host, now)
    log.info(
        "host step done",
        extra={"stop_id": step.stop_id, "action": step.step, "outcome": result},
    )


async def _stop_owned(svc: Services, step: HostStep) -> dict[str, Any]:
    """TERM, grace, KILL, confirm: the task's agents this server runs (or ran, when it
    comes back after a crash: the recorded pid, group and start time find them). The
    SIGTERM goes out first; the counting and the waiting run off the event loop, so
    twenty stops at once do not queue behind each other's scans of /proc."""
    asked_refs = svc.agents.ask_to_exit(step.task_id)
    counted = asyncio.ensure_future(off_loop(lambda: sum(group_size(r.pgid) for r in asked_refs)))
    detail = hosts.step_detail(step)
    wanted = set(detail.get("jobs", []))
    found = await svc.store.run_read(jobs.jobs_for_task, step.task_id)
    mine = [j for j in found if j.id in wanted and j.pgid and owned_here(j, svc.server)]
    elapsed = svc.clock.now() - float(detail.get("requested_at", svc.clock.now()))
    grace = max(0.0, svc.settings.stop.grace_seconds - elapsed)
    asked = await counted
    # A job the reaper re-queued forgot its process: the step carries it.
    refs = [(_ref(j), svc.agents.reaper_for(j.id)) for j in mine]
    known = {r for r, _ in refs}
    for recorded in detail.get("refs", []):
        ref = ProcessRef(*map(int, recorded))
        if ref not in known:
            refs.append((ref, None))
            known.add(ref)
    reports = await asyncio.gather(
        *(off_loop(stop_process_group_sync, r, grace, reap=reap) for r, reap in refs)
    )
    summary = summarise(list(reports))
    summary["processes"] = max(summary["processes"], asked)
    return summary


def _ref(job: Job) -> ProcessRef:
    return ProcessRef(pid=job.pid or 0, pgid=job.pgid or 0, start_time=job.proc_start_time or 0)


async def _remove_owned(svc: Services, step: HostStep, task: Task) -> dict[str, Any]:
    detail = hosts.step_detail(step)
    try:
        removed = await outside.retry_worktree(svc, task.repo, detail)
    except git.UnsafePathError as exc:  # never retried: conveyor does not delete outside
        return {"removed": False, "refused": str(exc)}
    return {"removed": removed}


def _record_done(conn: Any, step: HostStep, result: dict[str, Any], host: str, now: float) -> None:
    """The stop's own record of the step follows what its owner did, late or not."""
    rec = stops.get_stop(conn, step.stop_id)
    if rec is not None and step.step in stops.stop_steps(rec):
        recorded = stops.stop_steps(rec)[step.step]
        if step.step == "worktree" and recorded.get("pending_on") == step.server_id:
            stops.amend_step(conn, step.stop_id, "worktree", {**result, "pending_on": None})
        elif step.step == "processes" and step.server_id in (recorded.get("pending_on") or []):
            left = [s for s in recorded["pending_on"] if s != step.server_id]
            late = {
                "pending_on": left or None,
                "processes": recorded.get("processes", 0) + result.get("processes", 0),
                "groups": recorded.get("groups", 0) + result.get("groups", 0),
                "stopped_late": [
                    *recorded.get("stopped_late", []),
                    {"by": step.server_id, **result},
                ],
            }
            stops.amend_step(conn, step.stop_id, "processes", late)
    add_event(
        conn,
        step.task_id,
        "host_step_done",
        now,
        stop_id=step.stop_id,
        step=step.step,
        server=step.server_id,
        host=host,
        **{k: v for k, v in result.items() if k in ("removed", "processes", "forced", "refused")},
    )
