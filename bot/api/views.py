"""Tasks, jobs, stops, audit events and cleanups as JSON: one rendering for the HTTP
API and the CLI. Times are ISO 8601 UTC strings; tombstoned keys show their original."""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import Enum
from typing import Any

from state.models import HostStep, Job, StopRecord, Task
from state.queue import iso
from state.store import original_key, parse_tombstone


def task_view(task: Task) -> dict[str, Any]:
    """Every field of the task, with its original key and issue id."""
    doc = _plain(asdict(task))
    doc["key"] = original_key(task.key)
    doc["issue_id"] = original_key(task.issue_id)
    doc["tombstoned"] = parse_tombstone(task.issue_id) is not None
    return doc


def task_summary(task: Task) -> dict[str, Any]:
    """The short form listed by GET /tasks."""
    return {
        "id": task.id,
        "key": original_key(task.key),
        "stage": task.stage.value,
        "outcome": task.outcome,
        "repo": task.repo,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
    }


def job_view(job: Job) -> dict[str, Any]:
    return _plain(asdict(job))


def stop_view(record: StopRecord, handed: list[HostStep] | None = None) -> dict[str, Any]:
    """A stop record, with the reset steps it has finished as an object, and the steps
    handed to the servers that own them."""
    doc = _plain(asdict(record))
    steps = json.loads(record.steps or "{}")
    doc["steps"] = {
        name: _plain(result) if isinstance(result, dict) else result
        for name, result in steps.items()
    }
    doc["host_steps"] = [host_step_view(step) for step in handed or []]
    return doc


def host_step_view(step: HostStep) -> dict[str, Any]:
    doc = _plain(asdict(step))
    doc["detail"] = json.loads(step.detail or "{}")
    doc["result"] = None if step.result is None else json.loads(step.result)
    return doc


def event_view(event: dict[str, Any]) -> dict[str, Any]:
    """An audit event as `state.store.events_for_task` reads it."""
    return _plain(event)


def cleanup_view(cleanup: dict[str, Any]) -> dict[str, Any]:
    """A pending (or settled) cleanup as `state.stops.cleanups_for_task` reads it."""
    return _plain(cleanup)


def _plain(doc: dict[str, Any]) -> dict[str, Any]:
    """Enums as their values and times (`at`, `*_at`) as ISO strings."""
    return {name: _plain_value(name, value) for name, value in doc.items()}


def _plain_value(name: str, value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if (name == "at" or name.endswith("_at")) and isinstance(value, int | float):
        return iso(float(value))
    return value
