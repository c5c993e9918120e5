"""Start-up reconciliation, the worker pool and the scheduler, as one context."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.engine import dispatch, reaper
from bot.engine.workers import WorkerPool, worker_prefix
from bot.intake import reconcile
from bot.services import Services
from bot.stopplane import finalizer, owners, sweep
from bot.stopplane import intent as stopplane
from integrations.processes import ProcessRef, group_alive, stop_process_group
from state import hosts, jobs, stops
from state.listen import HOST_STEPS_CHANNEL, JOBS_CHANNEL, conninfo, listen
from state.models import Job, StopStatus

log = logging.getLogger(__name__)

WATCHDOG_SECONDS = 5.0
PRESENCE_SECONDS = 5.0  # well inside hosts.SILENT_AFTER_SECONDS
SWEEP_SECONDS = 30.0  # the worktrees sweep, or the finalizer's interval if longer


@contextlib.asynccontextmanager
async def started(svc: Services) -> AsyncIterator[None]:
    """Recover what a dead server left, then run workers and the scheduler until the app
    stops; workers claim once the first reconciliation pass has read the tickets."""
    await register(svc)
    await recover_interrupted(svc)
    await owners.catch_up(svc)  # steps handed to this server while it was away
    await sweep.sweep_worktrees(svc, min_age=0.0)  # no worker of ours is adding one yet
    pool = WorkerPool(
        svc.settings,
        svc.store,
        svc.clock,
        svc.agents,
        svc.wake,
        run=functools.partial(dispatch.execute, svc),
        on_crash=functools.partial(dispatch.settle_crash, svc),
        claims_open=svc.claims_open,
        server=svc.server,
    )
    svc.workers = pool
    listener = start_listening(svc, pool)
    scheduler = svc.scheduler = build_scheduler(svc)
    scheduler.start()
    await pool.start()
    svc.launch(first_reconciliation(svc), name="reconcile-startup")
    try:
        yield
    finally:
        scheduler.shutdown(wait=False)
        await pool.stop()
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        await svc.store.run(hosts.server_stopped, svc.server.id, svc.clock.now())


async def register(svc: Services) -> None:
    """This server, its host and data dir, in the `servers` table (up, seen now)."""
    await svc.store.run(
        hosts.register_server,
        svc.server,
        data_dir=str(svc.data_dir),
        pid=os.getpid(),
        now=svc.clock.now(),
    )
    log.info("server registered", extra={"server": svc.server.id, "host": svc.server.host})


async def presence_tick(svc: Services) -> None:
    await svc.store.run(hosts.server_seen, svc.server.id, svc.clock.now())


async def sweep_tick(svc: Services) -> None:
    await sweep.sweep_worktrees(svc)


def start_listening(svc: Services, pool: WorkerPool) -> asyncio.Task[None] | None:
    """PostgreSQL only: hear queued jobs (wake the workers) and steps handed to this
    server (do them); SQLite is one process, whose wake-ups stay in memory."""
    if svc.store.dialect != "postgresql":
        return None
    up = {"now": False}

    def on_notify(channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            svc.wake_workers()
        elif channel == HOST_STEPS_CHANNEL and payload == svc.server.id:
            owners.do_owed(svc)

    def on_connected(connected: bool) -> None:
        up["now"] = connected
        if connected:  # catch up on whatever was sent while nobody listened
            svc.wake_workers()
            owners.do_owed(svc)

    pool.listening = lambda: up["now"]
    channels = (JOBS_CHANNEL, HOST_STEPS_CHANNEL)
    info = conninfo(svc.store.engine.url, svc.server.id)
    return asyncio.get_running_loop().create_task(
        listen(info, channels, on_notify, on_connected), name="conveyor-listen"
    )


def _quiet_on_shutdown(tick: Callable[[Services], Awaitable[None]]) -> Callable[..., Any]:
    """A tick cancelled because the app is stopping is not an error worth a traceback."""

    @functools.wraps(tick)
    async def run(svc: Services) -> None:
        try:
            await tick(svc)
        except asyncio.CancelledError:
            log.debug("scheduled tick cancelled by shutdown", extra={"action": tick.__name__})

    return run


def build_scheduler(svc: Services) -> AsyncIOScheduler:
    """APScheduler 3 with fixed job ids: finalizer, reaper, watchdog."""
    scheduler = AsyncIOScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    )
    schedule = [
        (
            "conveyor.finalizer",
            finalizer.finalizer_tick,
            svc.settings.stop.finalizer_interval_seconds,
        ),
        (
            "conveyor.reaper",
            reaper.reaper_tick,
            max(1.0, svc.settings.workers.lease_seconds / 3),
        ),
        (
            "conveyor.watchdog",
            reaper.watchdog_tick,
            min(WATCHDOG_SECONDS, svc.settings.workers.max_runtime_seconds / 2),
        ),
        ("conveyor.presence", presence_tick, PRESENCE_SECONDS),
        (
            "conveyor.sweep",
            sweep_tick,
            max(SWEEP_SECONDS, svc.settings.stop.finalizer_interval_seconds),
        ),
    ]
    if reconciling(svc):
        schedule.append(
            ("conveyor.reconcile", reconcile_tick, svc.settings.reconcile.interval_seconds)
        )
    for job_id, tick, seconds in schedule:
        scheduler.add_job(
            _quiet_on_shutdown(tick),
            "interval",
            seconds=seconds,
            args=[svc],
            id=job_id,
            replace_existing=True,
        )
    return scheduler


def reconciling(svc: Services) -> bool:
    """Reconciliation is on and some tracker with an API serves a repo."""
    projects = svc.settings.projects()
    return svc.settings.reconcile.enabled and any(
        tracker.has_api and projects.get(name) for name, tracker in svc.trackers.items()
    )


async def reconcile_tick(svc: Services) -> None:
    await reconcile.reconcile_all(svc)


async def first_reconciliation(svc: Services) -> None:
    """The start-up pass; claims open when it has read the tickets, or when
    `reconcile.startup_wait_seconds` ran out (the tracker cannot be reached)."""
    if not reconciling(svc):
        svc.claims_open.set()
        return
    wait = svc.settings.reconcile.startup_wait_seconds
    try:
        reports = await asyncio.wait_for(reconcile.reconcile_all(svc, force=True), wait)
    except TimeoutError:
        log.warning(
            "start-up reconciliation did not finish in time; interrupted jobs resume anyway",
            extra={"delay": wait},
        )
    else:
        failed = [r.tracker for r in reports if r.error]
        if failed:
            log.warning(
                "start-up reconciliation could not reach a tracker; jobs resume after the wait",
                extra={"tracker": ",".join(failed), "delay": wait},
            )
            await asyncio.sleep(wait)
    finally:
        svc.claims_open.set()


async def recover_interrupted(svc: Services) -> None:
    """Nothing stays "running" forever: settle jobs a dead server left, resume resets."""
    for job in await svc.store.run_read(jobs.running_jobs):
        if _orphaned(job) or _left_by_earlier_self(svc, job):
            await _settle_orphan(svc, job)
    for rec in await svc.store.run_read(stops.stops_with_status, StopStatus.OPEN):
        log.info("resuming reset", extra={"stop_id": rec.id})
        stopplane.launch_reset(svc, rec.id)


def _orphaned(job: Job) -> bool:
    # Jobs of another live conveyor process (PostgreSQL, same host) are not ours to
    # settle; a worker id naming a process that is gone, or another host's expired
    # lease (handled by the reaper), is.
    worker = job.worker_id or ""
    if worker.startswith(worker_prefix()):
        return False
    parts = worker.split(":")
    if len(parts) >= 2 and parts[0] == worker_prefix().split(":")[0] and parts[1].isdigit():
        return not _pid_alive(int(parts[1]))
    return False


def _left_by_earlier_self(svc: Services, job: Job) -> bool:
    # This server's id, another process: this server before a crash or a restart (the
    # same data dir, maybe on a new machine, where a pid means nothing).
    mine = bool(job.server_id) and job.server_id == svc.server.id
    return mine and not (job.worker_id or "").startswith(worker_prefix())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _settle_orphan(svc: Services, job: Job) -> None:
    if job.pgid and group_alive(job.pgid):
        ref = ProcessRef(job.pid or 0, job.pgid, job.proc_start_time or 0)
        report = await stop_process_group(ref, svc.settings.stop.grace_seconds)
        log.info("orphaned agent stopped", extra={"job": job.id, "outcome": report.outcome.value})
    requeued = await svc.store.run(jobs.requeue_interrupted, job, svc.clock.now())
    log.info(
        "interrupted job settled",
        extra={"job": job.id, "outcome": "requeued" if requeued else "left"},
    )
