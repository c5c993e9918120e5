"""Rows written straight into the store, for tests that need a stop record to exist."""

from __future__ import annotations

from state import stops
from state.models import StopRecord, StopStatus
from state.store import Store


def record_stop(
    store: Store, task_id: int, status: StopStatus, now: float, reason: str = "r"
) -> StopRecord:
    """A stop record for `task_id`, requested by `test` (or the task's open one)."""
    rec, _ = store.write(
        lambda c: stops.insert_stop(
            c,
            task_id=task_id,
            status=status,
            now=now,
            requested_by="test",
            reason=reason,
            correlation_id=None,
            job_id=None,
            run_id=None,
        )
    )
    return rec
