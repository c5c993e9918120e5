"""Routing a tracker event to the domain: start or relaunch a task, confirm a deploy,
or hand a STOP to the stop plane. One entry for every tracker adapter; nothing here
knows which tracker an event came from."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from sqlalchemy import Connection

from bot.intake.answers import Answer, ignored
from bot.services import Services
from bot.stopplane import intent as stopplane
from integrations.trackers.base import EventKind, Signal, Ticket, Tracker, TrackerEvent
from state import jobs, tickets
from state.machine import Facts, Trigger, decide
from state.models import JobStatus, NewTask, Stage, Task
from state.stops import open_stop, record_delivery, settle_delivery
from state.store import (
    DuplicateTaskError,
    add_event,
    insert_task,
    latest_task_for_issue,
    live_task_for_issue,
    tombstone_task_keys,
    update_task,
)

log = logging.getLogger(__name__)

TICKET_DELETED = "ticket_deleted"


@dataclass(frozen=True)
class StatusChange:
    """A ticket's move, as an adapter understood it, with the repo it maps to."""

    tracker: str
    ticket: Ticket
    repo: str
    signal: Signal | None
    state_name: str  # the state moved to, or the label added (for reasons and audit)
    actor: str | None = None  # who moved it (display name), for `requested_by`
    correlation_id: str | None = None  # the delivery id
    diff_labels: bool = False  # the sender sent the full label list: diff it with the last
    deleted: bool = False  # the ticket is gone from the tracker
    previously: tickets.SeenTicket | None = None  # what was seen of it before this change
    requested_by: str | None = None  # who asks, when not a person (`<tracker>:reconcile`)

    @property
    def issue_id(self) -> str:
        return self.ticket.ref.issue_id

    @property
    def key(self) -> str:
        return self.ticket.ref.key


def change_of(event: TrackerEvent, repo: str) -> StatusChange:
    """The change an event (with its ticket) asks for in a repo."""
    assert event.ticket is not None
    ticket = event.ticket
    if event.labels_to_diff is not None:
        ticket = dataclasses.replace(ticket, labels=event.labels_to_diff)
    return StatusChange(
        tracker=event.tracker,
        ticket=ticket,
        repo=repo,
        signal=event.signal,
        state_name=event.state_after or event.ticket.state or "",
        actor=event.actor,
        correlation_id=event.delivery_id,
        diff_labels=event.labels_to_diff is not None,
        deleted=event.kind is EventKind.DELETED,
    )


@dataclass(frozen=True)
class Decided:
    """A status decided inside a transaction, and what to do once it has committed."""

    answer: Answer
    stop: stopplane.StopResult | None = None
    wake: bool = False


def decide_status(conn: Connection, svc: Services, change: StatusChange, now: float) -> Decided:
    """Decide what a status means, in the caller's transaction (no I/O outside the store)."""
    if change.deleted:
        if not svc.settings.reconcile.stop_deleted:
            return Decided(ignored("deleted", task=change.key))
        return _stop(conn, svc, change, now, reason=TICKET_DELETED)
    if change.signal is Signal.START:
        answer = _start(conn, change, now)
        return Decided(answer, wake=answer.outcome in ("started", "relaunched"))
    if change.signal is Signal.STOP:
        return _stop(conn, svc, change, now)
    if change.signal is Signal.CONFIRM_DEPLOY:
        answer = _confirm(conn, change, now)
        return Decided(answer, wake=answer.outcome == "deploy_confirmed")
    return Decided(ignored("state_not_handled", task=change.key))


def after_commit(svc: Services, change: StatusChange, decided: Decided) -> None:
    """Wake the workers or start the reset: only once the decision is durable. (The
    intake logs the delivery and its outcome.)"""
    if decided.stop is not None:
        stopplane.after_decision(svc, decided.stop, change.correlation_id)
    if decided.wake:
        svc.wake_workers()


async def route_once(
    svc: Services, tracker: Tracker, dedup_key: str, event: TrackerEvent, repo: str
) -> Answer:
    """Record the delivery, decide and settle it in one transaction (a second delivery of
    the same content is a duplicate); act on the decision once it has committed. If
    deciding fails, nothing is kept, so the tracker's retry is acted on, not deduplicated."""
    now = svc.clock.now()
    found = await svc.store.run(_route_tx, svc, tracker, dedup_key, event, repo, now)
    if found is None:
        assert event.ticket is not None
        return Answer("duplicate", task=event.ticket.ref.key)
    change, decided = found
    after_commit(svc, change, decided)
    return decided.answer


def _route_tx(
    conn: Connection,
    svc: Services,
    tracker: Tracker,
    dedup_key: str,
    event: TrackerEvent,
    repo: str,
    now: float,
) -> tuple[StatusChange, Decided] | None:
    row = record_delivery(conn, event.tracker, dedup_key, event.delivery_id, now)
    if row is None:
        return None
    assert event.ticket is not None  # the intake routes only events about a ticket
    previously = tickets.last_seen(conn, event.tracker, event.ticket.ref.issue_id)
    change = _with_label_diff(conn, tracker, change_of(event, repo), previously)
    change = dataclasses.replace(change, previously=previously)
    remember_ticket(conn, change.ticket, now, previously)
    decided = decide_status(conn, svc, change, now)
    answer = decided.answer
    settle_delivery(conn, row, answer.outcome, answer.reason, answer.task_id)
    return change, decided


async def remember_ignored(svc: Services, event: TrackerEvent) -> None:
    """An event not acted on still shows the ticket's labels now (a label removed, one
    that means nothing): keep them, so the next full label list is diffed right."""
    if event.ticket is None or not (event.ticket.labels or event.labels_to_diff is not None):
        return
    await svc.store.run(_remember_unread, event.ticket, svc.clock.now())


def _remember_unread(conn: Connection, ticket: Ticket, now: float) -> None:
    seen = None
    if ticket.state is None:  # the state seen is kept: read it
        seen = tickets.last_seen(conn, ticket.ref.tracker, ticket.ref.issue_id)
    remember_ticket(conn, ticket, now, seen)


def _with_label_diff(
    conn: Connection, tracker: Tracker, change: StatusChange, seen: tickets.SeenTicket | None
) -> StatusChange:
    """A sender that sends only the full label list (Gitea): what was added since the
    labels last seen for the ticket decides the signal."""
    if not change.diff_labels:
        return change
    ticket = change.ticket
    before = set(seen.labels) if seen is not None else set()
    added = frozenset(label for label in ticket.labels if label not in before)
    signal = tracker.signal_for_labels(added)
    label = next((a for a in sorted(added) if tracker.signal_for_labels(frozenset({a}))), "")
    return dataclasses.replace(change, signal=signal, state_name=label or change.state_name)


def remember_ticket(
    conn: Connection, ticket: Ticket, now: float, seen: tickets.SeenTicket | None
) -> None:
    """Keep what was seen of the ticket: the next event or pass compares with it. A
    snapshot without a state (a delivery about another field) keeps the state seen.
    `seen`: what was seen of it before, as read in this transaction (None: never)."""
    updated = ticket.updated_at.timestamp() if ticket.updated_at else None
    if ticket.state is None and seen is not None and seen.state is not None:
        ticket = dataclasses.replace(ticket, state=seen.state)
    tickets.remember(
        conn,
        tickets.SeenTicket(
            tracker=ticket.ref.tracker,
            issue_id=ticket.ref.issue_id,
            project=ticket.ref.project,
            key=ticket.ref.key,
            state=ticket.state,
            labels=ticket.labels,
            signal=ticket.signal.value if ticket.signal else None,
            seen_at=now,
            updated_at=updated,
        ),
    )


def _start(conn: Connection, change: StatusChange, now: float) -> Answer:
    task = live_task_for_issue(conn, change.tracker, change.issue_id)
    if task is None:
        return _create(conn, change, now)
    if task.stage is Stage.DONE:
        if not entered_start(change.previously):
            return ignored("already_done", task=task.key, task_id=task.id)
        # Moved back into a start state after its task ended: a fresh task.
        tombstone_task_keys(conn, task, now)
        add_event(conn, task.id, "superseded_by_restart", now, actor=_actor(change))
        return _create(conn, change, now)
    if open_stop(conn, task.id) is not None or task.cancel_requested_at is not None:
        return ignored("stop_in_progress", task=task.key, task_id=task.id)
    return _relaunch(conn, task, change, now)


def entered_start(previously: tickets.SeenTicket | None) -> bool:
    """True when the ticket was last seen outside a start state: moving it (back) into
    one is an edge. Never seen is not an edge for a ticket that has had a task."""
    return previously is not None and previously.signal != Signal.START.value


def _create(conn: Connection, change: StatusChange, now: float) -> Answer:
    ticket = change.ticket
    new = NewTask(
        tracker=change.tracker,
        issue_id=change.issue_id,
        key=change.key,
        repo=change.repo,
        title=ticket.title,
        project_id=ticket.ref.project,
        url=ticket.url,
        description=ticket.description,
        labels=ticket.labels,
        ticket_state=ticket.state,
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


def _stop(
    conn: Connection, svc: Services, change: StatusChange, now: float, reason: str | None = None
) -> Decided:
    """The STOP status: the kill switch and repo allowlist first, then the stop plane."""
    if not svc.stop_enabled_for(change.repo):
        reason = "stop_disabled" if not svc.settings.stop.enabled else "repo_not_in_stop_repos"
        return Decided(ignored(reason, task=change.key))
    task = live_task_for_issue(conn, change.tracker, change.issue_id)
    if task is None:  # a ticket whose task a stop already cancelled answers with that stop
        task = latest_task_for_issue(conn, change.tracker, change.issue_id)
    if task is None:
        return Decided(ignored("unknown_ticket", task=change.key))
    result = stopplane.decide_stop(
        conn,
        task.id,
        change.requested_by or f"{change.tracker}:{change.actor or 'unknown'}",
        reason or f"ticket moved to {change.state_name}",
        change.correlation_id,
        now,
        server=svc.server,
        task=task,  # read above, in this transaction
    )
    return Decided(stop_answer(result), stop=result)


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


def stop_answer(result: stopplane.StopResult) -> Answer:
    """The webhook answer for a stop decision."""
    if result.outcome == "noop_already_terminal":
        return ignored("already_terminal", task=result.task, task_id=result.task_id).with_stop(
            result.stop_id
        )
    return Answer(result.outcome, task=result.task, task_id=result.task_id, stop_id=result.stop_id)


def _actor(change: StatusChange) -> str:
    return f"{change.tracker}:{change.actor or 'unknown'}"
