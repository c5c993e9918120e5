"""The task state machine: one `transitions` rulebook per process, pure guards.

A loaded task is attached with `add_model(model, initial=task.stage)` and detached in
`finally`. Callbacks only decide and record the changes to write; the caller commits
them with a compare-and-set, and git, HTTP and signals happen after that commit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from transitions import EventData, Machine, MachineError

from state.models import ALL_STAGES, TERMINAL, Stage, Task


class Trigger(StrEnum):
    ADVANCE = "advance"
    RELAUNCH = "relaunch"
    STOP = "stop"
    DEFER_STOP = "defer_stop"
    FINALIZE_CANCEL = "finalize_cancel"
    BLOCK = "block"
    CONFIRM_DEPLOY = "confirm_deploy"
    RETRY = "retry"


@dataclass(frozen=True)
class Facts:
    """What the store knows around a task, gathered by the caller. `None` = unknown."""

    has_running_job: bool | None = False
    running_job_stage: str | None = None
    holds_lease: bool | None = False


# -- pure guards ------------------------------------------------------------------------


def is_terminal(stage: Stage) -> bool:
    return stage in TERMINAL


def critical_window(task: Task, facts: Facts | None) -> str | None:
    """'merge'/'deploy' when a STOP must be deferred, else None. Unknown facts: fail-closed."""
    if task.merge_initiated_at is not None and task.merged_at is None:
        return "merge"
    if task.stage not in (Stage.MERGE, Stage.DEPLOY):
        return None
    if facts is None or facts.holds_lease is None or facts.has_running_job is None:
        return "unknown"
    if (
        facts.holds_lease
        and facts.has_running_job
        and facts.running_job_stage in ("merge", "deploy")
    ):
        return facts.running_job_stage
    return None


def relaunch_allowed(task: Task, facts: Facts) -> bool:
    """A start status re-queues analysis only from `analysis` with no running job."""
    return task.stage is Stage.ANALYSIS and facts.has_running_job is False


# -- the rulebook -----------------------------------------------------------------------


_NON_TERMINAL = [s.value for s in ALL_STAGES if s not in TERMINAL]
_BLOCKABLE = ("analysis", "implementation", "review", "merge", "deploy")
_PIPELINE_STEPS = [
    ("analysis", "implementation"),
    ("implementation", "review"),
    ("review", "merge"),
    ("merge", "deploy"),
    ("deploy", "done"),
]


class _TaskModel:
    """What the machine is attached to: the snapshot plus the changes being decided."""

    def __init__(self, task: Task, now: float, facts: Facts) -> None:
        self.stage: str = task.stage.value
        self.task = task
        self.now = now
        self.facts = facts
        self.changes: dict[str, Any] = {}
        self.refusal: str | None = None

    # conditions (they record why they said no)
    def no_stop_pending(self, event: EventData) -> bool:
        return self._check(self.task.cancel_requested_at is None, "stop_pending")

    def no_job_running(self, event: EventData) -> bool:
        return self._check(relaunch_allowed(self.task, self.facts), "job_running")

    def outside_window(self, event: EventData) -> bool:
        return self._check(critical_window(self.task, self.facts) is None, "critical_window")

    def inside_window(self, event: EventData) -> bool:
        return self._check(critical_window(self.task, self.facts) is not None, "not_critical")

    def cancel_requested(self, event: EventData) -> bool:
        return self._check(self.task.cancel_requested_at is not None, "no_stop_pending")

    def merged_if_merging(self, event: EventData) -> bool:
        ok = self.task.stage is not Stage.MERGE or self.task.merged_at is not None
        return self._check(ok, "not_merged")

    def retries_this_stage(self, event: EventData) -> bool:
        # One rule per stage a task can be blocked in: the one whose dest is the stage
        # the caller names (the stage of the job that was blocked) runs.
        dest = event.transition.dest if event.transition else None
        return self._check(event.kwargs.get("stage") == dest, "not_that_stage")

    def awaiting_confirm(self, event: EventData) -> bool:
        return self._check(self.task.awaiting_confirm, "not_awaiting_confirm")

    def _check(self, ok: bool, reason: str) -> bool:
        if not ok:
            self.refusal = reason
        return ok

    # callbacks (they only record)
    def record(self, event: EventData) -> None:
        dest = event.transition.dest if event.transition else None
        trigger = event.event.name if event.event else ""
        if trigger == Trigger.DEFER_STOP:
            self.changes["cancel_requested_at"] = self.now
        if trigger == Trigger.CONFIRM_DEPLOY:
            self.changes["awaiting_confirm"] = False
        if trigger == Trigger.BLOCK:
            self.changes["blocked_reason"] = event.kwargs.get("reason", "")
        if trigger == Trigger.RETRY:
            self.changes["blocked_reason"] = None
        if dest == Stage.CANCELLED:
            self.changes["cancelled_at"] = self.now
            self.changes["outcome"] = event.kwargs.get("outcome", "cancelled")
        if dest == Stage.DONE:
            self.changes["done_at"] = self.now
            self.changes["outcome"] = "done"
        if dest and dest != self.task.stage.value:
            self.changes["stage"] = Stage(dest)


def _transitions() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "trigger": Trigger.ADVANCE.value,
            "source": src,
            "dest": dst,
            "conditions": ["no_stop_pending", "merged_if_merging"],
            "after": "record",
        }
        for src, dst in _PIPELINE_STEPS
    ]
    rules += [
        {
            "trigger": Trigger.RELAUNCH.value,
            "source": "analysis",
            "dest": "=",
            "conditions": ["no_job_running"],
            "after": "record",
        },
        {
            "trigger": Trigger.STOP.value,
            "source": _NON_TERMINAL,
            "dest": "cancelled",
            "conditions": ["outside_window"],
            "after": "record",
        },
        {
            "trigger": Trigger.DEFER_STOP.value,
            "source": ["merge", "deploy"],
            "dest": None,
            "conditions": ["inside_window"],
            "after": "record",
        },
        {
            "trigger": Trigger.FINALIZE_CANCEL.value,
            "source": _NON_TERMINAL,
            "dest": "cancelled",
            "conditions": ["cancel_requested", "outside_window"],
            "after": "record",
        },
        {
            "trigger": Trigger.BLOCK.value,
            "source": list(_BLOCKABLE),
            "dest": "blocked",
            "after": "record",
        },
        *(
            {
                "trigger": Trigger.RETRY.value,
                "source": "blocked",
                "dest": stage,
                "conditions": ["no_stop_pending", "retries_this_stage"],
                "after": "record",
            }
            for stage in _BLOCKABLE
        ),
        {
            "trigger": Trigger.CONFIRM_DEPLOY.value,
            "source": "deploy",
            "dest": None,
            "conditions": ["awaiting_confirm"],
            "after": "record",
        },
    ]
    return rules


@lru_cache(maxsize=1)
def rulebook() -> Machine:
    """The process's one machine (made on first use, never at import time)."""
    return Machine(
        model=None,
        states=[s.value for s in ALL_STAGES],
        transitions=_transitions(),
        auto_transitions=False,
        send_event=True,
        initial=None,
        model_attribute="stage",
    )


_lock = threading.Lock()  # add_model/remove_model mutate the machine's model list


@dataclass(frozen=True)
class Decision:
    allowed: bool
    stage: Stage
    changes: dict[str, Any] = field(default_factory=dict)
    refusal: str | None = None  # why not, in the domain's words


def decide(
    task: Task, trigger: Trigger, *, now: float, facts: Facts | None = None, **kwargs: Any
) -> Decision:
    """Run `trigger` on a copy of the task; return what would change, never raise."""
    if is_terminal(task.stage):
        return Decision(False, task.stage, refusal="already_terminal")
    model = _TaskModel(task, now, facts if facts is not None else Facts())
    if trigger in (Trigger.STOP, Trigger.DEFER_STOP, Trigger.FINALIZE_CANCEL) and facts is None:
        model.facts = Facts(has_running_job=None, holds_lease=None)  # unknown: fail-closed
    machine = rulebook()
    with _lock:
        machine.add_model(model, initial=task.stage.value)
        try:
            ok = bool(getattr(model, trigger.value)(**kwargs))
        except MachineError:
            return Decision(False, task.stage, refusal=f"not_allowed_in_{task.stage.value}")
        finally:
            machine.remove_model(model)
    if not ok:
        return Decision(False, task.stage, refusal=model.refusal or "refused")
    return Decision(True, Stage(model.stage), model.changes)
