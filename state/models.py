"""Domain records: stages, job statuses and the task/job snapshots read from the store."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    ANALYSIS = "analysis"
    IMPLEMENTATION = "implementation"
    REVIEW = "review"
    MERGE = "merge"
    DEPLOY = "deploy"
    DONE = "done"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


TERMINAL: frozenset[Stage] = frozenset({Stage.DONE, Stage.CANCELLED})
AGENT_STAGES: tuple[Stage, ...] = (Stage.ANALYSIS, Stage.IMPLEMENTATION, Stage.REVIEW)
PIPELINE: tuple[Stage, ...] = (*AGENT_STAGES, Stage.MERGE, Stage.DEPLOY, Stage.DONE)
ALL_STAGES: tuple[Stage, ...] = (*PIPELINE[:-1], Stage.BLOCKED, Stage.DONE, Stage.CANCELLED)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)


class StopStatus(StrEnum):
    OPEN = "open"  # reset under way
    DEFERRED = "deferred"  # waiting for the critical window to close
    DONE = "done"
    SUPERSEDED = "superseded"  # lost the race to normal completion
    NOOP = "noop"


OPEN_STOP_STATUSES = (StopStatus.OPEN.value, StopStatus.DEFERRED.value)

# The reset's steps in the order they run (`bot.stopplane.reset.STEPS` holds the same
# names): a stop record stores its steps as a JSON object with sorted keys, and steps
# recorded in one transaction share their `at`, so readers order them by this.
RESET_STEP_ORDER = (
    "processes",
    "jobs",
    "lease",
    "pull_request",
    "worktree",
    "remote_branch",
    "tombstone",
    "terminal",
    "notify",
)


def step_rank(name: str) -> int:
    """Where a step comes in the reset (unknown names last)."""
    try:
        return RESET_STEP_ORDER.index(name)
    except ValueError:
        return len(RESET_STEP_ORDER)


def parse_stage(value: str) -> Stage:
    """A stage from the store, with the way out in the error if it is unknown."""
    try:
        return Stage(value)
    except ValueError:
        raise ValueError(
            f"unknown stage {value!r} in the store; known: {', '.join(s.value for s in Stage)}"
            " (run `conveyor db upgrade`, or fix the row by hand)"
        ) from None


def _from_row(cls: Any, row: Any) -> Any:
    mapping = row._mapping if hasattr(row, "_mapping") else row
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return cls(**{name: mapping[name] for name in names if name in mapping})


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # a record's field names, by class


@dataclass(frozen=True)
class Task:
    id: int
    tracker: str
    issue_id: str
    key: str
    project_id: str | None
    repo: str
    title: str
    stage: Stage
    version: int
    created_at: float
    updated_at: float
    branch: str | None = None
    branch_sha: str | None = None
    worktree_path: str | None = None
    blocked_reason: str | None = None
    awaiting_confirm: bool = False
    merge_initiated_at: float | None = None
    merged_at: float | None = None
    merge_sha: str | None = None
    cancel_requested_at: float | None = None
    cancelled_at: float | None = None
    done_at: float | None = None
    outcome: str | None = None
    url: str = ""
    description: str = ""
    labels: str = "[]"  # JSON list of names
    ticket_state: str | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    worktree_server: str | None = None  # the server whose data dir holds the worktree

    @classmethod
    def from_row(cls, row: Any) -> Task:
        task: Task = _from_row(cls, row)
        object.__setattr__(task, "stage", parse_stage(str(task.stage)))
        object.__setattr__(task, "awaiting_confirm", bool(task.awaiting_confirm))
        return task

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL


@dataclass(frozen=True)
class Job:
    id: int
    task_id: int
    stage: str
    status: JobStatus
    attempt: int
    run_after: float
    created_at: float
    run_id: str | None = None
    worker_id: str | None = None
    pid: int | None = None
    pgid: int | None = None
    proc_start_time: int | None = None
    lease_expires_at: float | None = None
    heartbeat_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    log_path: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    server_id: str | None = None  # the server that claimed it
    host: str | None = None  # that server's host name

    @classmethod
    def from_row(cls, row: Any) -> Job:
        job: Job = _from_row(cls, row)
        object.__setattr__(job, "status", JobStatus(job.status))
        return job


@dataclass(frozen=True)
class StopRecord:
    id: str
    task_id: int
    status: StopStatus
    requested_at: float
    requested_by: str
    reason: str = ""
    job_id: int | None = None
    run_id: str | None = None
    correlation_id: str | None = None
    outcome: str | None = None
    window: str | None = None
    steps: str = "{}"
    notified_at: float | None = None
    closed_at: float | None = None
    runner: str | None = None  # the server carrying out the reset
    runner_until: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> StopRecord:
        rec: StopRecord = _from_row(cls, row)
        object.__setattr__(rec, "status", StopStatus(rec.status))
        return rec


@dataclass(frozen=True)
class NewTask:
    tracker: str
    issue_id: str
    key: str
    repo: str
    title: str = ""
    project_id: str | None = None
    stage: Stage = Stage.ANALYSIS
    url: str = ""
    description: str = ""
    labels: tuple[str, ...] = ()
    ticket_state: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerIdentity:
    """Who this server is among those sharing a database: a stable id kept under its
    data dir, and its host name."""

    id: str
    host: str


class HostStepStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    ABANDONED = "abandoned"  # its server was retired with the step still to do


@dataclass(frozen=True)
class HostStep:
    """A reset step only the owning server can do (its agents, its data dir)."""

    id: int
    stop_id: str
    task_id: int
    server_id: str
    step: str
    status: HostStepStatus
    detail: str
    created_at: float
    result: str | None = None
    done_at: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> HostStep:
        step: HostStep = _from_row(cls, row)
        object.__setattr__(step, "status", HostStepStatus(step.status))
        return step
