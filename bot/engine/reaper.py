"""The queue's scheduled guards: the reaper (jobs whose lease expired go back to the
queue, never a cancelled one) and the watchdog (agents past their maximum runtime)."""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from bot.engine.workers import ran_here, worker_prefix
from bot.services import Services
from integrations.processes import ProcessRef, group_alive, stop_process_group
from state import hosts, jobs
from state.models import Job, ServerIdentity
from state.store import add_event

log = logging.getLogger(__name__)


async def reaper_tick(svc: Services) -> None:
    """Re-queue jobs whose lease expired: never a cancelled one, never one being stopped."""
    for job in await svc.store.run_read(jobs.expired_jobs, svc.clock.now()):
        if job.pgid and ran_here(job) and group_alive(job.pgid):
            ref = ProcessRef(job.pid or 0, job.pgid, job.proc_start_time or 0)
            await stop_process_group(ref, svc.settings.stop.grace_seconds)
        if await svc.store.run(_requeue, job, svc.server, svc.clock.now()):
            log.info("expired job re-queued", extra={"job": job.id})
            svc.wake_workers()


def _requeue(conn: Connection, job: Job, server: ServerIdentity, now: float) -> bool:
    """Re-queue the job; an agent it had on another host (its server silent, maybe dead)
    is handed to that server to stop when it is back, by its recorded pid, group and
    start time (the job row forgets them)."""
    if not jobs.requeue_expired(conn, job, now):
        return False
    if job.pgid and job.server_id and not ran_here(job) and job.server_id != server.id:
        hosts.add_host_step(
            conn,
            stop_id=f"reaped-{job.id}-{job.run_id}",
            task_id=job.task_id,
            server_id=job.server_id,
            step="processes",
            detail={
                "jobs": [job.id],
                "refs": [[job.pid or 0, job.pgid, job.proc_start_time or 0]],
                "requested_at": now,
            },
            now=now,
        )
    return True


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
