"""Stopping agents' process groups this server started, and summing up what it took."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.services import Services
from integrations.processes import ProcessRef, StopOutcome, StopReport, stop_process_group
from state.models import Job

log = logging.getLogger(__name__)


async def stop_jobs(svc: Services, running: list[Job], grace: float) -> list[StopReport]:
    """SIGTERM (+SIGCONT), grace, SIGKILL, confirm: each job's group, side by side."""
    return list(await asyncio.gather(*(stop_job(svc, j, grace) for j in running)))


async def stop_job(svc: Services, job: Job, grace: float) -> StopReport:
    ref = ProcessRef(pid=job.pid or 0, pgid=job.pgid or 0, start_time=job.proc_start_time or 0)
    reap = svc.agents.reaper_for(job.id)
    report = await stop_process_group(ref, grace, reap=reap)
    log.info(
        "process group stopped",
        extra={"job": job.id, "pgid": job.pgid, "outcome": report.outcome.value},
    )
    return report


def summarise(reports: list[StopReport]) -> dict[str, Any]:
    """The `processes` step's result: counts, outcomes and the slowest times."""
    outcomes = [r.outcome.value for r in reports]
    kills = [
        r.kill_sent_at - r.term_sent_at
        for r in reports
        if r.kill_sent_at is not None and r.term_sent_at is not None
    ]
    empties = [
        r.emptied_at - r.term_sent_at
        for r in reports
        if r.emptied_at is not None and r.term_sent_at is not None
    ]
    return {
        "term_to_kill_seconds": max(kills) if kills else None,
        "term_to_empty_seconds": max(empties) if empties else None,
        "groups": len(reports),
        "processes": sum(r.members_at_term for r in reports),
        "forced": any(r.outcome is StopOutcome.FORCED for r in reports),
        "unconfirmed": outcomes.count(StopOutcome.UNCONFIRMED.value),
        "refused": outcomes.count(StopOutcome.REFUSED.value),
        "outcomes": outcomes,
    }
