"""The queue's scheduled guards: the reaper (jobs whose lease expired go back to the
queue, never a cancelled one) and the watchdog (agents past their maximum runtime)."""

from __future__ import annotations

import logging

from bot.engine.workers import ran_here, worker_prefix
from bot.services import Services
from integrations.processes import ProcessRef, group_alive, stop_process_group
from state import jobs
from state.store import add_event

log = logging.getLogger(__name__)


async def reaper_tick(svc: Services) -> None:
    """Re-queue jobs whose lease expired: never a cancelled one, never one being stopped."""
    for job in await svc.store.run_read(jobs.expired_jobs, svc.clock.now()):
        if job.pgid and ran_here(job) and group_alive(job.pgid):
            ref = ProcessRef(job.pid or 0, job.pgid, job.proc_start_time or 0)
            await stop_process_group(ref, svc.settings.stop.grace_seconds)
        if await svc.store.run(jobs.requeue_expired, job, svc.clock.now()):
            log.info("expired job re-queued", extra={"job": job.id})
            svc.wake_workers()


async def watchdog_tick(svc: Services) -> None:
    """Stop agents running past `[workers] max_runtime_seconds`; the worker then retries."""
    cutoff = svc.clock.now() - svc.settings.workers.max_runtime_seconds
    for job in await svc.store.run_read(jobs.overdue_jobs, cutoff):
        if not (job.worker_id or "").startswith(worker_prefix()):
            continue  # another conveyor process runs it; its own watchdog stops it
        ref = ProcessRef(job.pid or 0, job.pgid or 0, job.proc_start_time or 0)
        reap = svc.agents.reaper_for(job.id)
        log.warning("max runtime exceeded", extra={"job": job.id, "pgid": job.pgid})
        await svc.store.run(add_event, job.task_id, "watchdog_stopped", svc.clock.now(), job=job.id)
        await stop_process_group(ref, svc.settings.stop.grace_seconds, reap=reap)
