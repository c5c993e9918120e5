"""Routing a tracker status to the domain: start or relaunch a task, confirm a deploy,
or hand a STOP to the stop plane. One entry for every tracker adapter."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection

from bot import stopplane
from bot.answers import Answer, ignored
from bot.services import Services
from state import jobs
from state.machine import Facts, Trigger, decide
from state.models import JobStatus, NewTask, Stage, Task
from state.stops import open_stop
from state.store import (
    DuplicateTaskError,
    add_event,
    insert_task,
    latest_task_for_issue,
    live_task_for_issue,
    update_task,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatusChange:
    """A ticket moved to a named status, as an adapter understood it."""

    tracker: str
    issue_id: str
    key: str
    title: str
    project_id: str | None
    repo: str
    state_name: str
    actor: str | None = None  # who moved it (display name), for `requested_by`
    correlation_id: str | None = None  # the delivery id


def classify(svc: Services, tracker: str, state_name: str) -> str | None:
    """'start', 'stop' or 'confirm' for a status name, else None (case-insensitive)."""
    plane = svc.settings.trackers.plane
    wanted = state_name.strip().casefold()
    for kind, names in (
        ("stop", plane.stop_states),
        ("start", plane.start_states),
        ("confirm", plane.confirm_deploy_states),
    ):
        if wanted in {n.strip().casefold() for n in names}:
            return kind
    return None


async def route_status(svc: Services, change: StatusChange) -> Answer:
    """Do what the status means; never raises for a status conveyor does not act on."""
    kind = classify(svc, change.tracker, change.state_name)
    if kind == "start":
        return await start_ticket(svc, change)
    if kind == "stop":
        return await stop_ticket(svc, change)
    if kind == "confirm":
        return await confirm_deploy(svc, change)
    return ignored("state_not_handled", task=change.key)


async def start_ticket(svc: Services, change: StatusChange) -> Answer:
    """A new task in analysis, a relaunch of analysis, or `ignored` for a later stage."""
    answer = await svc.store.run(_start, change, svc.clock.now())
    if answer.outcome in ("started", "relaunched"):
        svc.wake_workers()
        log.info(
            "task %s",
            answer.outcome,
            extra={"task": answer.task, "delivery": change.correlation_id},
        )
    return answer


def _start(conn: Connection, change: StatusChange, now: float) -> Answer:
    task = live_task_for_issue(conn, change.tracker, change.issue_id)
    if task is None:
        return _create(conn, change, now)
    if task.stage is Stage.DONE:
        return ignored("already_done", task=task.key, task_id=task.id)
    if open_stop(conn, task.id) is not None or task.cancel_requested_at is not None:
        return ignored("stop_in_progress", task=task.key, task_id=task.id)
    return _relaunch(conn, task, change, now)


def _create(conn: Connection, change: StatusChange, now: float) -> Answer:
    new = NewTask(
        tracker=change.tracker,
        issue_id=change.issue_id,
        key=change.key,
        repo=change.repo,
        title=change.title,
        project_id=change.project_id,
    )
    try:
        task = insert_task(conn, new, now)
    except DuplicateTaskError:  # a concurrent delivery made it first
        return ignored("already_started", task=change.key)
    jobs.enqueue_job(conn, task.id, Stage.ANALYSIS.value, now)
    add_event(conn, task.id, "started", now, actor=_actor(change), delivery=change.correlation_id)
    return Answer("started", task=task.key, task_id=task.id)


def _relaunch(conn: Connection, task: Task, change: StatusChange, now: float) -> Answer:
    live = jobs.live_jobs_for_task(conn, task.id)
    running = any(j.status is JobStatus.RUNNING for j in live)
    decision = decide(task, Trigger.RELAUNCH, now=now, facts=Facts(has_running_job=running))
    if not decision.allowed:
        reason = "relaunch_only_in_analysis" if task.stage is not Stage.ANALYSIS else "job_running"
        return ignored(reason, task=task.key, task_id=task.id)
    update_task(conn, task, now)  # bump the version: a racing decision re-reads
    if not live:
        jobs.enqueue_job(
            conn,
            task.id,
            Stage.ANALYSIS.value,
            now,
            attempt=jobs.count_attempts(conn, task.id, Stage.ANALYSIS.value) + 1,
        )
    add_event(
        conn, task.id, "relaunched", now, actor=_actor(change), delivery=change.correlation_id
    )
    return Answer("relaunched", task=task.key, task_id=task.id)


async def stop_ticket(svc: Services, change: StatusChange) -> Answer:
    """The STOP status: the kill switch and repo allowlist first, then the stop plane."""
    if not svc.stop_enabled_for(change.repo):
        reason = "stop_disabled" if not svc.settings.stop.enabled else "repo_not_in_stop_repos"
        log.info(
            "stop ignored",
            extra={"task": change.key, "reason": reason, "delivery": change.correlation_id},
        )
        return ignored(reason, task=change.key)
    task = await svc.store.run_read(live_task_for_issue, change.tracker, change.issue_id)
    if task is None:  # a ticket whose task a stop already cancelled answers with that stop
        task = await svc.store.run_read(latest_task_for_issue, change.tracker, change.issue_id)
    if task is None:
        return ignored("not_running", task=change.key)
    result = await stopplane.request_stop(
        svc,
        task,
        requested_by=f"{change.tracker}:{change.actor or 'unknown'}",
        reason=f"ticket moved to {change.state_name}",
        correlation=change.correlation_id,
    )
    return result.as_answer()


async def confirm_deploy(svc: Services, change: StatusChange) -> Answer:
    """Let a self-hosting task parked on deploy run its deploy."""
    answer = await svc.store.run(_confirm, change, svc.clock.now())
    if answer.outcome == "deploy_confirmed":
        svc.wake_workers()
    return answer


def _confirm(conn: Connection, change: StatusChange, now: float) -> Answer:
    task = live_task_for_issue(conn, change.tracker, change.issue_id)
    if task is None:
        return ignored("not_running", task=change.key)
    decision = decide(task, Trigger.CONFIRM_DEPLOY, now=now)
    if not decision.allowed:
        return ignored(decision.refusal or "not_awaiting_confirm", task=task.key, task_id=task.id)
    update_task(conn, task, now, **decision.changes)
    jobs.enqueue_job(conn, task.id, Stage.DEPLOY.value, now)
    add_event(conn, task.id, "deploy_confirmed", now, actor=_actor(change))
    return Answer("deploy_confirmed", task=task.key, task_id=task.id)


def _actor(change: StatusChange) -> str:
    return f"{change.tracker}:{change.actor or 'unknown'}"
