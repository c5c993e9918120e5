"""Routing a tracker status to the domain: start or relaunch a task, confirm a deploy,
or hand a STOP to the stop plane. One entry for every tracker adapter."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection

from bot.intake.answers import Answer, ignored
from bot.services import Services
from bot.stopplane import intent as stopplane
from state import jobs
from state.machine import Facts, Trigger, decide
from state.models import JobStatus, NewTask, Stage, Task
from state.stops import open_stop, record_delivery, settle_delivery
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


@dataclass(frozen=True)
class Decided:
    """A status decided inside a transaction, and what to do once it has committed."""

    answer: Answer
    stop: stopplane.StopResult | None = None
    wake: bool = False


def decide_status(conn: Connection, svc: Services, change: StatusChange, now: float) -> Decided:
    """Decide what a status means, in the caller's transaction (no I/O outside the store)."""
    kind = classify(svc, change.tracker, change.state_name)
    if kind == "start":
        answer = _start(conn, change, now)
        return Decided(answer, wake=answer.outcome in ("started", "relaunched"))
    if kind == "stop":
        return _stop(conn, svc, change, now)
    if kind == "confirm":
        answer = _confirm(conn, change, now)
        return Decided(answer, wake=answer.outcome == "deploy_confirmed")
    return Decided(ignored("state_not_handled", task=change.key))


def after_commit(svc: Services, change: StatusChange, decided: Decided) -> None:
    """Wake the workers or start the reset: only once the decision is durable. (The
    adapter logs the delivery and its outcome.)"""
    if decided.stop is not None:
        stopplane.after_decision(svc, decided.stop, change.correlation_id)
    if decided.wake:
        svc.wake_workers()


async def route_once(svc: Services, dedup_key: str, change: StatusChange) -> Answer:
    """Record the delivery, decide and settle it in one transaction (a second delivery of
    the same content is a duplicate); act on the decision once it has committed. If
    deciding fails, nothing is kept, so the tracker's retry is acted on, not deduplicated."""
    decided = await svc.store.run(_route_tx, svc, dedup_key, change, svc.clock.now())
    if decided is None:
        return Answer("duplicate", task=change.key)
    after_commit(svc, change, decided)
    return decided.answer


def _route_tx(
    conn: Connection, svc: Services, dedup_key: str, change: StatusChange, now: float
) -> Decided | None:
    row = record_delivery(conn, change.tracker, dedup_key, change.correlation_id, now)
    if row is None:
        return None
    decided = decide_status(conn, svc, change, now)
    answer = decided.answer
    settle_delivery(conn, row, answer.outcome, answer.reason, answer.task_id)
    return decided


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


def _stop(conn: Connection, svc: Services, change: StatusChange, now: float) -> Decided:
    """The STOP status: the kill switch and repo allowlist first, then the stop plane."""
    if not svc.stop_enabled_for(change.repo):
        reason = "stop_disabled" if not svc.settings.stop.enabled else "repo_not_in_stop_repos"
        return Decided(ignored(reason, task=change.key))
    task = live_task_for_issue(conn, change.tracker, change.issue_id)
    if task is None:  # a ticket whose task a stop already cancelled answers with that stop
        task = latest_task_for_issue(conn, change.tracker, change.issue_id)
    if task is None:
        return Decided(ignored("not_running", task=change.key))
    result = stopplane.decide_stop(
        conn,
        task.id,
        f"{change.tracker}:{change.actor or 'unknown'}",
        f"ticket moved to {change.state_name}",
        change.correlation_id,
        now,
    )
    return Decided(result.as_answer(), stop=result)


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
