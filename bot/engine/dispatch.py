"""Running one claimed job: the re-check, then the agent stage or the built-in merge or
deploy step. The one place that knows every kind of stage."""

from __future__ import annotations

import logging

from bot.engine import merging, stages
from bot.services import Services
from state import jobs
from state.models import AGENT_STAGES, Job, JobStatus, Stage

log = logging.getLogger(__name__)


async def execute(svc: Services, job: Job) -> None:
    """Run a claimed job, unless a stop (or anything else) got there first."""
    task = await svc.store.run_read(stages.still_runnable, job)
    if task is None:
        log.info("job not started: task stopping or job taken", extra={"job": job.id})
        return
    if job.stage in {s.value for s in AGENT_STAGES}:
        await stages.run_agent_stage(svc, job, task)
    elif job.stage == Stage.MERGE.value:
        await merging.run_merge(svc, job, task)
    elif job.stage == Stage.DEPLOY.value:
        await merging.run_deploy(svc, job, task)
    else:
        await svc.store.run(
            jobs.finish_job,
            job.id,
            job.run_id or "",
            JobStatus.FAILED,
            svc.clock.now(),
            error=f"unknown stage {job.stage}",
        )


async def settle_crash(svc: Services, job: Job) -> None:
    """A job whose runner raised: count it as a failed attempt."""
    try:
        await stages.settle(
            svc, job, job.task_id, exit_code=None, error="internal error; see the log"
        )
    except Exception:
        log.exception("could not settle a crashed job", extra={"job": job.id})
