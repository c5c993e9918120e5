"""The agent processes this server started: so a stop can signal and reap what it
started (and only that), and the watchdog and metrics can see them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from integrations.processes import (
    AgentProcess,
    ProcessRef,
    group_alive,
    group_size,
    request_exit,
)
from state.models import Job


@dataclass
class Running:
    job: Job
    task_id: int
    process: AgentProcess


@dataclass
class AgentRegistry:
    """Job id → the agent process running it here."""

    running: dict[int, Running] = field(default_factory=dict)

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
        many processes their groups held."""
        return sum(group_size(ref.pgid) for ref in self.ask_to_exit(task_id))

    def ask_to_exit(self, task_id: int) -> list[ProcessRef]:
        """SIGTERM the task's agents now, before anything slow (no scan of /proc: the
        count, `group_size`, can follow; the zombies stay until the stop reaps them)."""
        return [ref for ref, _ in self.live_processes_of_task(task_id) if request_exit(ref)]
