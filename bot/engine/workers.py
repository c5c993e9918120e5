"""The worker pool: N loops that claim jobs atomically and run them. The pool knows no
stage: it is handed the function that runs a job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.engine.agents import AgentRegistry, Running
from integrations.processes import stop_process_group
from state import jobs
from state.models import Job

if TYPE_CHECKING:
    from bot.clock import Clock
    from bot.settings import Settings
    from state.store import Store

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0


def worker_prefix() -> str:
    """Identifies this server process in `jobs.worker_id` (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:"


def ran_here(job: Job) -> bool:
    """True when the job's process was spawned on this host: a pid or process group
    means something only there (several hosts may share one PostgreSQL database)."""
    return (job.worker_id or "").split(":", 1)[0] == socket.gethostname()


Run = Callable[[Job], Awaitable[None]]


class WorkerPool:
    """N loops that claim jobs and hand each to ``run`` (the engine's dispatcher); on
    shutdown, the agents they started are stopped and their jobs re-queued."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        agents: AgentRegistry,
        wake: asyncio.Event,
        *,
        run: Run,
        on_crash: Run,
        claims_open: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.agents = agents
        self.wake = wake
        self._claims_open = claims_open
        self._run = run
        self._on_crash = on_crash
        self._loops: list[asyncio.Task[None]] = []
        self._closing = False

    # -- the loops -----------------------------------------------------------------------

    async def start(self) -> None:
        for index in range(self.settings.workers.concurrency):
            self._loops.append(asyncio.create_task(self._loop(index), name=f"worker-{index}"))

    async def stop(self) -> None:
        """Stop claiming; stop the agents we run and hand their jobs back to the queue."""
        self._closing = True
        entries = list(self.agents.running.values())  # before the loops unregister them
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await asyncio.gather(*(self._interrupt(e) for e in entries), return_exceptions=True)

    async def _interrupt(self, entry: Running) -> None:
        """Stop an agent because the server is stopping: its job goes back to the queue
        (no retry is counted)."""
        grace = min(self.settings.stop.grace_seconds, SHUTDOWN_GRACE_SECONDS)
        await stop_process_group(entry.process.ref, grace, reap=entry.process.poll)
        await self.store.run(jobs.requeue_interrupted, entry.job, self.clock.now())
        self.agents.unregister(entry.job.id)

    async def _loop(self, index: int) -> None:
        worker_id = f"{worker_prefix()}{index}"
        wake = self.wake
        if self._claims_open is not None:
            await self._claims_open.wait()
        settings = self.settings.workers
        while not self._closing:
            job = await self._claim(worker_id)
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), settings.poll_interval_seconds)
                wake.clear()
                continue
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job crashed", extra={"job": job.id, "stage": job.stage})
                await self._on_crash(job)

    async def _claim(self, worker_id: str) -> Job | None:
        try:
            return await self.store.run(
                jobs.claim_next_job,
                worker_id,
                self.clock.now(),
                self.settings.workers.lease_seconds,
            )
        except Exception:  # a store hiccup must not kill the loop
            log.exception("claim failed")
            await asyncio.sleep(1.0)
            return None
