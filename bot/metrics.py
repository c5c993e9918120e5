"""Prometheus metrics, one registry per app (several apps share a test process).

Counters and histograms are fed by hooks the intake and the stop plane call; the gauges
are read from the store when Prometheus scrapes, so they are right in every process that
shares the database, with nothing to keep in step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Connection, Table, func, select

from bot.engine.agents import AgentRegistry
from bot.intake.health import TrackerHealth
from state.errors import StoreError
from state.models import ALL_STAGES, JobStatus, StopStatus
from state.schema import host_steps, jobs, pending_cleanups, stop_records, tasks
from state.store import Store

log = logging.getLogger(__name__)

STOP_OUTCOMES = (
    "stop_requested",
    "stop_deferred",
    "noop_already_terminal",
    "cancelled_graceful",
    "cancelled_forced",
)
# From a cooperative agent's first 50 ms to a stubborn one killed after a long grace.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0)


class Metrics:
    """The app's metrics and the hooks that feed them (`Services.metrics`)."""

    def __init__(
        self,
        store: Store,
        agents: AgentRegistry | None = None,
        reconcile: Mapping[str, TrackerHealth] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "conveyor_webhook_deliveries",
            "Tracker webhook deliveries, by tracker and the outcome answered.",
            ["tracker", "outcome"],
            registry=self.registry,
        )
        self.stops = Counter(
            "conveyor_stops",
            "Stops: decisions at request time and terminal outcomes of resets.",
            ["outcome"],
            registry=self.registry,
        )
        self.group_empty = _duration(
            self.registry,
            "conveyor_stop_group_empty_seconds",
            "From a stop request to the agents' process groups being empty.",
        )
        self.terminal = _duration(
            self.registry,
            "conveyor_stop_terminal_seconds",
            "From a stop request to the task being terminal (cancelled).",
        )
        self.reconcile_passes = Counter(
            "conveyor_reconcile_passes",
            "Reconciliation passes, by tracker and result (ok, error).",
            ["tracker", "result"],
            registry=self.registry,
        )
        self.missed_webhooks = Counter(
            "conveyor_missed_webhooks",
            "Changes a reconciliation pass found that no webhook had delivered.",
            ["tracker"],
            registry=self.registry,
        )
        self.admin_refusals = Counter(
            "conveyor_admin_auth_refusals",
            "Admin requests refused: a wrong token (401) or too many of them (429).",
            ["answer"],
            registry=self.registry,
        )
        for answer in ("401", "429"):
            self.admin_refusals.labels(answer)  # present at 0 before the first refusal
        self.worktrees_swept = Counter(
            "conveyor_worktrees_swept",
            "Worktrees under this server's root swept because their task is terminal or "
            "unknown, by result (removed, refused, failed).",
            ["result"],
            registry=self.registry,
        )
        for result in ("removed", "refused", "failed"):
            self.worktrees_swept.labels(result)
        self.registry.register(StoreGauges(store, agents))
        self.registry.register(ReconcileLag(reconcile or {}, clock))
        for outcome in STOP_OUTCOMES:
            self.stops.labels(outcome)  # present at 0 before the first stop

    def webhook(self, tracker: str, outcome: str) -> None:
        self.deliveries.labels(tracker, outcome).inc()

    def admin_refused(self, answer: int) -> None:
        self.admin_refusals.labels(str(answer)).inc()

    def reconcile_pass(self, tracker: str, result: str, missed: int) -> None:
        self.reconcile_passes.labels(tracker, result).inc()
        self.missed_webhooks.labels(tracker).inc(missed)

    def worktree_swept(self, result: str) -> None:
        self.worktrees_swept.labels(result).inc()

    def stop_requested(self, outcome: str) -> None:
        """A new stop decided: stop_requested, stop_deferred or noop_already_terminal."""
        self.stops.labels(outcome).inc()

    def stop_group_empty(self, seconds: float) -> None:
        self.group_empty.observe(max(0.0, seconds))

    def stop_finished(self, outcome: str, seconds: float | None) -> None:
        """A reset made its task terminal; `seconds` is None when the request was not
        seen by this process (a deferred stop applied later, a reset resumed after a restart)."""
        self.stops.labels(outcome).inc()
        if seconds is not None:
            self.terminal.observe(max(0.0, seconds))

    def exposition(self) -> bytes:
        """The text exposition; blocking (the gauges query the store)."""
        return generate_latest(self.registry)

    async def render(self) -> bytes:
        return await anyio.to_thread.run_sync(self.exposition)


def _duration(registry: CollectorRegistry, name: str, doc: str) -> Histogram:
    return Histogram(name, doc, buckets=DURATION_BUCKETS, registry=registry)


# -- gauges read at scrape time ----------------------------------------------------------


@dataclass
class Snapshot:
    """What the gauges show, read in one transaction."""

    tasks: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    stops_deferred: int = 0
    cleanups_pending: int = 0
    running_with_pid: int = 0
    host_steps_pending: int = 0


def read_snapshot(conn: Connection) -> Snapshot:
    return Snapshot(
        tasks=_counts(conn, tasks.c.stage, [s.value for s in ALL_STAGES]),
        jobs=_counts(conn, jobs.c.status, [s.value for s in JobStatus]),
        stops_deferred=_count(
            conn, stop_records.c.status == StopStatus.DEFERRED.value, stop_records
        ),
        cleanups_pending=_count(conn, pending_cleanups.c.status == "pending", pending_cleanups),
        running_with_pid=_count(conn, _running_with_pid(), jobs),
        host_steps_pending=_count(conn, host_steps.c.status == "pending", host_steps),
    )


def _running_with_pid() -> ColumnElement[bool]:
    return (jobs.c.status == JobStatus.RUNNING.value) & jobs.c.pid.is_not(None)


def _counts(conn: Connection, column: ColumnElement[Any], known: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(known, 0)
    rows = conn.execute(select(column, func.count()).group_by(column))
    for value, n in rows:
        counts[str(value)] = int(n)
    return counts


def _count(conn: Connection, where: ColumnElement[bool], table: Table) -> int:
    query = select(func.count()).select_from(table).where(where)
    return int(conn.execute(query).scalar_one())


class ReconcileLag(Collector):
    """Seconds since each tracker's last good reconciliation pass, read at scrape time."""

    def __init__(self, health: Mapping[str, TrackerHealth], clock: Callable[[], float]) -> None:
        self.health = health
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "conveyor_reconcile_lag_seconds",
            "Seconds since the tracker's last successful reconciliation pass.",
            labels=["tracker"],
        )
        now = self.clock()
        for tracker, health in sorted(self.health.items()):
            if health.last_ok_at is not None:
                family.add_metric([tracker], max(0.0, now - health.last_ok_at))
        return [family]


class StoreGauges(Collector):
    """Gauges from the store and the worker pool, computed on each scrape."""

    def __init__(self, store: Store, agents: AgentRegistry | None) -> None:
        self.store = store
        self.agents = agents

    def describe(self) -> Iterable[Metric]:
        return families(Snapshot(), processes=None)

    def collect(self) -> Iterable[Metric]:
        try:
            snapshot = self.store.query(read_snapshot)
        except StoreError as exc:
            # A scrape still answers (with the counters); the gauges come back with the DB.
            log.warning("metrics: store unreadable", extra={"error": str(exc)})
            return []
        return families(snapshot, processes=self._processes(snapshot))

    def _processes(self, snapshot: Snapshot) -> int:
        """This server's agent processes when it runs workers, else running jobs with a pid."""
        if self.agents is None:
            return snapshot.running_with_pid
        return len(self.agents.running)


def families(snapshot: Snapshot, *, processes: int | None) -> list[Metric]:
    """The gauge families for a snapshot; without samples when `processes` is None (the
    registry's describe)."""
    filled = processes is not None
    return [
        _labelled("conveyor_jobs", "Jobs by status.", "status", snapshot.jobs, filled),
        _labelled("conveyor_tasks", "Tasks by stage.", "stage", snapshot.tasks, filled),
        _gauge(
            "conveyor_stops_deferred",
            "Stops waiting for a merge or deploy step to finish.",
            snapshot.stops_deferred if filled else None,
        ),
        _gauge(
            "conveyor_cleanups_pending",
            "Reset steps (worktree, remote branch) that failed and wait for a retry.",
            snapshot.cleanups_pending if filled else None,
        ),
        _gauge(
            "conveyor_host_steps_pending",
            "Reset steps waiting for the server that owns them (its agents, its worktrees).",
            snapshot.host_steps_pending if filled else None,
        ),
        _gauge("conveyor_agent_processes_running", "Agent processes running.", processes),
    ]


def _labelled(
    name: str, doc: str, label: str, counts: dict[str, int], filled: bool
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value, n in counts.items() if filled else ():
        family.add_metric([value], n)
    return family


def _gauge(name: str, doc: str, value: int | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
