"""Reconciliation: webhooks are the fast path, the tracker's API is the truth.

A pass asks each tracker with API credentials what changed in each of its projects
since the project's watermark (less an overlap) and acts on every changed ticket through
the lifecycle's own decisions, as a webhook would: a STOP for a live task stops it
(`<tracker>:reconcile`), a ticket that entered a start state starts, a confirm status
confirms. One live task's ticket is read per pass, round-robin, so that a ticket deleted
where the change list does not show deletions (Plane) is found too: gone on two reads in
a row stops its task (`ticket_deleted`). A tracker error changes nothing: the tracker is
backed off (doubling from the interval to ten times it, longer when it says so).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection

from bot.intake.health import TrackerHealth
from bot.intake.lifecycle import (
    TICKET_DELETED,
    Decided,
    StatusChange,
    after_commit,
    decide_status,
    entered_start,
    remember_ticket,
)
from bot.intake.refs import ref_problem
from bot.services import Services
from integrations.trackers.base import Gone, Signal, Ticket, TicketRef, Tracker, TrackerError
from state import tickets
from state.store import live_task_for_issue

log = logging.getLogger(__name__)

MIN_OVERLAP_SECONDS = 60.0
FIRST_LOOKBACK_SECONDS = 24 * 3600.0  # a project never reconciled: look back a day
MAX_BACKOFF_FACTOR = 10
MISSED_WARN_PASSES = 3  # passes in a row that found missed webhooks before the warning
# Changed tickets decided per write transaction. One transaction each cost ~1.3 ms a
# ticket (bench/reconcile.py); a bounded batch keeps the one SQLite writer from being
# held long.
BATCH = 50


@dataclass
class PassReport:
    """What one pass over one tracker found."""

    tracker: str
    tickets: int = 0
    stops: list[str] = field(default_factory=list)
    starts: list[str] = field(default_factory=list)
    confirms: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    missed_webhooks: int = 0
    error: str | None = None
    skipped: str | None = None  # why no pass ran (backing off, no API)

    @property
    def found_something(self) -> bool:
        return bool(self.stops or self.starts or self.confirms or self.deleted)

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


# -- the pass ----------------------------------------------------------------------------


async def reconcile_all(svc: Services, *, force: bool = False) -> list[PassReport]:
    """One pass over every tracker with an API; `force` ignores the backoff."""
    reports = []
    for name, tracker in sorted(svc.trackers.items()):
        projects = sorted(svc.settings.projects().get(name, {}))
        if not tracker.has_api or not projects:
            continue
        reports.append(await reconcile_tracker(svc, tracker, projects, force=force))
    return reports


async def reconcile_tracker(
    svc: Services, tracker: Tracker, projects: Sequence[str], *, force: bool = False
) -> PassReport:
    """A pass over one tracker's projects, then one round-robin read for deletions."""
    health = svc.reconcile.setdefault(tracker.name, TrackerHealth())
    report = PassReport(tracker.name)
    now = svc.clock.now()
    if not force and health.backoff_until > now:
        report.skipped = "backing_off"
        return report
    try:
        for project in projects:
            await _pass_project(svc, tracker, project, now, report)
        await _read_one_live(svc, tracker, health, report)
    except TrackerError as exc:
        _failed(svc, health, report, exc)
    else:
        _succeeded(svc, health, report)
    return report


async def _pass_project(
    svc: Services, tracker: Tracker, project: str, started: float, report: PassReport
) -> None:
    since = await svc.store.run_read(_since, tracker.name, project, started, svc)
    changed = await tracker.changed_since(project, datetime.fromtimestamp(since, UTC))
    report.tickets += len(changed)
    repo = svc.settings.repo_for_project(tracker.name, project)
    if repo is not None:
        # A ticket whose id or key could pass for a tombstone is never acted on.
        sane = [t for t in changed if ref_problem(t.ref) is None]
        ordered = sorted(sane, key=_updated)
        for first in range(0, len(ordered), BATCH):
            await _act(svc, tracker, ordered[first : first + BATCH], repo.name, report)
    await svc.store.run(tickets.set_watermark, tracker.name, project, started, svc.clock.now())


def _since(conn: Connection, tracker: str, project: str, started: float, svc: Services) -> float:
    """The watermark less an overlap of two intervals (at least a minute)."""
    mark = tickets.watermark(conn, tracker, project)
    overlap = max(MIN_OVERLAP_SECONDS, 2 * svc.settings.reconcile.interval_seconds)
    return (started - FIRST_LOOKBACK_SECONDS) if mark is None else mark - overlap


async def _act(
    svc: Services, tracker: Tracker, batch: Sequence[Ticket], repo: str, report: PassReport
) -> None:
    """Decide on a batch of changed tickets in one transaction, in the tracker's order
    (re-decided whole if a compare-and-set loses); act once it has committed."""
    found = await svc.store.run_until_current(
        _decide_batch, svc, tracker, batch, repo, svc.clock.now()
    )
    for ticket, (change, decided, differs) in zip(batch, found, strict=True):
        _account(ticket, change, decided, differs, report)
        if decided is not None:
            after_commit(svc, change, decided)


def _account(
    ticket: Ticket, change: StatusChange, decided: Decided | None, differs: bool, report: PassReport
) -> None:
    outcome = decided.answer.outcome if decided is not None else "ignored"
    acted = outcome in ("stop_requested", "stop_deferred", "started", "deploy_confirmed")
    if differs or (change.previously is None and acted):
        report.missed_webhooks += 1  # a change no webhook told us of
    new_stop = decided is not None and decided.stop is not None and decided.stop.new
    if outcome in ("stop_requested", "stop_deferred") and new_stop:
        report.stops.append(ticket.ref.key)
    elif outcome == "started":
        report.starts.append(ticket.ref.key)
    elif outcome == "deploy_confirmed":
        report.confirms.append(ticket.ref.key)


def _decide_batch(
    conn: Connection,
    svc: Services,
    tracker: Tracker,
    batch: Sequence[Ticket],
    repo: str,
    now: float,
) -> list[tuple[StatusChange, Decided | None, bool]]:
    return [_decide_ticket(conn, svc, tracker, ticket, repo, now) for ticket in batch]


def _decide_ticket(
    conn: Connection, svc: Services, tracker: Tracker, ticket: Ticket, repo: str, now: float
) -> tuple[StatusChange, Decided | None, bool]:
    previously = tickets.last_seen(conn, tracker.name, ticket.ref.issue_id)
    differs = previously is not None and _differs(previously, ticket)
    remember_ticket(conn, ticket, now, previously)
    change = StatusChange(
        tracker=tracker.name,
        ticket=ticket,
        repo=repo,
        signal=ticket.signal,
        state_name=ticket.state or ", ".join(ticket.labels),
        actor="reconcile",
        previously=previously,
        requested_by=f"{tracker.name}:reconcile",
    )
    if not _worth_deciding(conn, change):
        return change, None, differs
    return change, decide_status(conn, svc, change, now), differs


def _worth_deciding(conn: Connection, change: StatusChange) -> bool:
    """A level seen by a pass acts only where a webhook's edge would have: a STOP or a
    confirm for a live task, a start for a ticket that entered its start state."""
    if change.signal is None:
        return False
    task = live_task_for_issue(conn, change.tracker, change.issue_id)
    if change.signal is Signal.START:
        if task is None:  # never a task, or its last one was cancelled
            return change.previously is None or entered_start(change.previously)
        return task.stage.value == "done" and entered_start(change.previously)
    return task is not None and not task.terminal


def _differs(previously: tickets.SeenTicket, ticket: Ticket) -> bool:
    """The ticket is not as webhooks last showed it."""
    return previously.state != ticket.state or set(previously.labels) != set(ticket.labels)


# -- deletions: one live ticket read per pass ------------------------------------------


async def _read_one_live(
    svc: Services, tracker: Tracker, health: TrackerHealth, report: PassReport
) -> None:
    live = await svc.store.run_read(tickets.next_live_ticket, tracker.name, health.cursor)
    if live is None:
        return
    task_id, project, issue_id, key = live
    before, health.cursor = health.cursor, task_id  # a read that fails moves on too
    read = await tracker.read(TicketRef(tracker.name, project, issue_id, key))
    if not isinstance(read, Gone):
        health.gone_once.discard(issue_id)
        return
    if issue_id not in health.gone_once:
        health.gone_once.add(issue_id)  # once could be a glitch: read it again next time
        health.cursor = before
        return
    health.gone_once.discard(issue_id)
    if svc.settings.reconcile.stop_deleted:
        await _stop_deleted(svc, tracker, task_id, key, report)


async def _stop_deleted(
    svc: Services, tracker: Tracker, task_id: int, key: str, report: PassReport
) -> None:
    from bot.stopplane import intent as stopplane
    from state.store import get_task

    task = await svc.store.run_read(get_task, task_id)
    if task is None or task.terminal:
        return
    result = await stopplane.request_stop(
        svc,
        task,
        requested_by=f"{tracker.name}:reconcile",
        reason=TICKET_DELETED,
        correlation=None,
    )
    if result.new:
        report.deleted.append(key)


# -- health ------------------------------------------------------------------------------


def _succeeded(svc: Services, health: TrackerHealth, report: PassReport) -> None:
    now = svc.clock.now()
    health.passes += 1
    health.failures = 0
    health.backoff_until = 0.0
    health.last_ok_at = now
    health.last_error = None
    health.stops_found += len(report.stops) + len(report.deleted)
    health.starts_found += len(report.starts)
    health.missed_webhooks += report.missed_webhooks
    health.missed_in_a_row = health.missed_in_a_row + 1 if report.missed_webhooks else 0
    if svc.metrics is not None:
        svc.metrics.reconcile_pass(report.tracker, "ok", report.missed_webhooks)
    if report.found_something or report.missed_webhooks:
        log.info(
            "reconciliation found changes",
            extra={
                "tracker": report.tracker,
                "stops": len(report.stops) + len(report.deleted),
                "starts": len(report.starts),
                "missed_webhooks": report.missed_webhooks,
            },
        )
    if health.missed_in_a_row == MISSED_WARN_PASSES:
        log.warning(
            "reconciliation keeps finding changes no webhook delivered: the tracker's "
            "webhook may be failing or disabled",
            extra={"tracker": report.tracker, "missed_webhooks": health.missed_webhooks},
        )


def _failed(svc: Services, health: TrackerHealth, report: PassReport, exc: TrackerError) -> None:
    now = svc.clock.now()
    interval = svc.settings.reconcile.interval_seconds
    health.passes += 1
    health.failures += 1
    delay = backoff_seconds(interval, health.failures, exc.retry_after, random.random())
    health.backoff_until = now + delay
    health.last_error = str(exc)[:500]
    report.error = health.last_error
    if svc.metrics is not None:
        svc.metrics.reconcile_pass(report.tracker, "error", 0)
    log.warning(
        "reconciliation pass failed; changing nothing",
        extra={"tracker": report.tracker, "error": health.last_error, "delay": round(delay, 1)},
    )


def backoff_seconds(
    interval: float, failures: int, retry_after: float | None, jitter: float
) -> float:
    """Doubling from the interval to ten times it, with up to 20 % jitter; never shorter
    than what the tracker asked for (pure: the jitter is passed in, 0 ≤ jitter < 1)."""
    doubled = min(interval * 2 ** (failures - 1), MAX_BACKOFF_FACTOR * interval)
    with_jitter: float = doubled * (1 + 0.2 * jitter)
    return max(with_jitter, retry_after or 0.0)


def _updated(ticket: Ticket) -> datetime:
    return ticket.updated_at or datetime.min.replace(tzinfo=UTC)
