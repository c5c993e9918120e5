"""The worker pool: N loops that claim jobs atomically and run them. The pool knows no
stage: it is handed the function that runs a job."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.engine.agents import AgentRegistry, Running
from integrations.processes import stop_process_group
from state import jobs
from state.models import Job, ServerIdentity

if TYPE_CHECKING:
    from bot.clock import Clock
    from bot.settings import Settings
    from state.store import Store

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
# While a PostgreSQL LISTEN connection is up, a queued job wakes idle workers at once
# (a NOTIFY from the database); polling stays as the backstop for a lost notification.
LISTENING_BACKSTOP_SECONDS = 5.0


def worker_prefix() -> str:
    """Identifies this server process in `jobs.worker_id` (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:"


def ran_here(job: Job) -> bool:
    """True when the job's process was spawned on this host: a pid or process group
    means something only there (several hosts may share one PostgreSQL database)."""
    return (job.worker_id or "").split(":", 1)[0] == socket.gethostname()


def owned_here(job: Job, server: ServerIdentity) -> bool:
    """True when this server claimed the job: only it holds the agent (and reaps it), so
    only it stops it. Jobs claimed before servers had ids go by host name."""
    if job.server_id:
        return job.server_id == server.id
    return ran_here(job)


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
        server: ServerIdentity | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.agents = agents
        self.wake = wake
        self._claims_open = claims_open
        self.server = server
        # Set by the runtime while job notifications arrive (PostgreSQL LISTEN).
        self.listening: Callable[[], bool] = lambda: False
        self._run = run
        self._on_crash = on_crash
        self._loops: list[asyncio.Task[None]] = []
        self._closing = False
        # The idle workers' shared look at the queue: (monotonic time read, next due).
        self._due_lock = asyncio.Lock()
        self._due_read: tuple[float, float | None] | None = None
        # Woken workers claim one at a time; a claim that found nothing, started after a
        # worker was woken, answers for it too (monotonic start of the latest such claim).
        self._woken_claims = asyncio.Lock()
        self._found_empty_at = float("-inf")

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
        seen: float | None = None  # when a job was seen possible (None: just look)
        while not self._closing:
            job = await self._claim(worker_id, seen)
            if job is None:
                seen = await self._until_claimable(wake)
                continue
            seen = None
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job crashed", extra={"job": job.id, "stage": job.stage})
                await self._on_crash(job)

    async def _until_claimable(self, wake: asyncio.Event) -> float:
        """Wait until a claim may find a job: a wake-up, or a poll that sees one due; when
        (monotonic) that was seen. The poll is a read that every idle worker shares (one
        per half interval, however many wait); only a due job makes a worker try a claim,
        which is a write: forty idle workers no longer take the one SQLite writer five
        times a second each."""
        while not self._closing:
            try:
                await asyncio.wait_for(wake.wait(), await self._idle_wait())
            except TimeoutError:
                if (seen := await self._job_due()) is not None:
                    return seen
                continue
            wake.clear()
            break
        return self.clock.monotonic()

    async def _job_due(self) -> float | None:
        """When the idle workers' shared read (monotonic, as it began) saw a queued job
        due now; None when it did not. A store hiccup counts as due: the claim then says
        what is there."""
        poll = self.settings.workers.poll_interval_seconds
        async with self._due_lock:
            read = self._due_read
            if read is None or self.clock.monotonic() - read[0] >= poll / 2:
                began = self.clock.monotonic()
                try:
                    due = await self.store.run_read(jobs.next_due_at)
                except Exception:
                    return began
                read = self._due_read = (began, due)
        began, due = read
        return began if due is not None and due <= self.clock.now() else None

    async def _idle_wait(self) -> float:
        """How long an idle worker waits for a wake-up: the poll interval, or with
        notifications up, until the next job falls due (a retry's backoff), capped."""
        poll = self.settings.workers.poll_interval_seconds
        if not self.listening():
            return poll
        try:
            due = await self.store.run_read(jobs.next_due_at)
        except Exception:  # a store hiccup: fall back to polling
            return poll
        if due is None:
            return LISTENING_BACKSTOP_SECONDS
        return min(LISTENING_BACKSTOP_SECONDS, max(poll, due - self.clock.now()))

    async def _claim(self, worker_id: str, seen: float | None = None) -> Job | None:
        """Claim the job due longest. A woken worker (`seen`: when it saw a job possible)
        claims after the others woken with it, one at a time, and not at all once a claim
        that began after `seen` found nothing: one job queued wakes every idle worker, and
        it costs two claims (one finds it, one finds the queue empty), not one each."""
        if seen is None:
            return await self._claim_now(worker_id)
        async with self._woken_claims:
            if self._found_empty_at > seen:
                return None
            return await self._claim_now(worker_id)

    async def _claim_now(self, worker_id: str) -> Job | None:
        began = self.clock.monotonic()
        try:
            job = await self.store.run(
                jobs.claim_next_job,
                worker_id,
                self.clock.now(),
                self.settings.workers.lease_seconds,
                server=self.server,
            )
        except Exception:  # a store hiccup must not kill the loop
            log.exception("claim failed")
            await asyncio.sleep(1.0)
            return None
        if job is None:
            self._found_empty_at = max(self._found_empty_at, began)
        return job
