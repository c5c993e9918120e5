"""The worker pool: N loops that claim jobs atomically and run them, and the registry of
agent processes this server started (so a stop can reap what it signals)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from bot.services import Services
from integrations.processes import (
    AgentProcess,
    ProcessRef,
    group_alive,
    group_members,
    request_exit,
    stop_process_group,
)
from state import jobs
from state.models import Job

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0


def worker_prefix() -> str:
    """Identifies this server process in `jobs.worker_id` (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:"


def ran_here(job: Job) -> bool:
    """True when the job's process was spawned on this host: a pid or process group
    means something only there (several hosts may share one PostgreSQL database)."""
    return (job.worker_id or "").split(":", 1)[0] == socket.gethostname()


@dataclass
class Running:
    job: Job
    task_id: int
    process: AgentProcess


class WorkerPool:
    """Claims and runs jobs; knows which agent processes it started."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.running: dict[int, Running] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._closing = False

    # -- the registry, for the stop plane and the watchdog ---------------------------------

    def register(self, job: Job, task_id: int, process: AgentProcess) -> None:
        self.running[job.id] = Running(job, task_id, process)

    def unregister(self, job_id: int) -> None:
        self.running.pop(job_id, None)

    def reaper_for(self, job_id: int) -> Callable[[], object] | None:
        """The Popen poll of a job's process, so whoever stops it also reaps it."""
        entry = self.running.get(job_id)
        return entry.process.poll if entry else None

    def live_processes_of_task(self, task_id: int) -> list[tuple[ProcessRef, Callable[[], object]]]:
        return [
            (e.process.ref, e.process.poll)
            for e in list(self.running.values())
            if e.task_id == task_id and e.process.poll() is None and group_alive(e.process.ref.pgid)
        ]

    def request_exit(self, task_id: int) -> int:
        """SIGTERM the task's agents this server runs, at once (the reset follows); how
        many live processes their groups held."""
        asked = 0
        for ref, _ in self.live_processes_of_task(task_id):
            members = len(group_members(ref.pgid))
            if request_exit(ref):
                asked += members
        return asked

    # -- the loops -----------------------------------------------------------------------

    async def start(self) -> None:
        for index in range(self.svc.settings.workers.concurrency):
            self._loops.append(asyncio.create_task(self._loop(index), name=f"worker-{index}"))

    async def stop(self) -> None:
        """Stop claiming; stop the agents we run and hand their jobs back to the queue."""
        self._closing = True
        entries = list(self.running.values())  # before the loops unregister them
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await asyncio.gather(*(self._interrupt(e) for e in entries), return_exceptions=True)

    async def _interrupt(self, entry: Running) -> None:
        grace = min(self.svc.settings.stop.grace_seconds, SHUTDOWN_GRACE_SECONDS)
        await stop_process_group(entry.process.ref, grace, reap=entry.process.poll)
        await self.svc.store.run(jobs.requeue_interrupted, entry.job, self.svc.clock.now())
        self.unregister(entry.job.id)

    async def _loop(self, index: int) -> None:
        from bot.engine import stages as pipeline

        worker_id = f"{worker_prefix()}{index}"
        wake: asyncio.Event = self.svc.extras["wake"]
        settings = self.svc.settings.workers
        while not self._closing:
            job = await self._claim(worker_id)
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), settings.poll_interval_seconds)
                wake.clear()
                continue
            try:
                await pipeline.execute(self.svc, self, job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job crashed", extra={"job": job.id, "stage": job.stage})
                await pipeline.settle_crash(self.svc, job)

    async def _claim(self, worker_id: str) -> Job | None:
        try:
            return await self.svc.store.run(
                jobs.claim_next_job,
                worker_id,
                self.svc.clock.now(),
                self.svc.settings.workers.lease_seconds,
            )
        except Exception:  # a store hiccup must not kill the loop
            log.exception("claim failed")
            await asyncio.sleep(1.0)
            return None
