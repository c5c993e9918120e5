"""What the intake and the stop plane answer, in the contract's words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    """A webhook outcome: started, relaunched, stop_requested, stop_deferred, duplicate,
    ignored (with a reason)."""

    outcome: str
    task: str | None = None  # the task key
    reason: str | None = None
    task_id: int | None = None
    stop_id: str | None = None

    def with_stop(self, stop_id: str | None) -> Answer:
        return Answer(self.outcome, self.task, self.reason, self.task_id, stop_id)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"outcome": self.outcome, "task": self.task}
        if self.reason:
            doc["reason"] = self.reason
        if self.stop_id:
            doc["stop_id"] = self.stop_id
        return doc


def ignored(reason: str, task: str | None = None, task_id: int | None = None) -> Answer:
    return Answer("ignored", task=task, reason=reason, task_id=task_id)
