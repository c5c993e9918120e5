"""The reset's pull-request step (pull-request mode only): close the task's pull request
with a comment, never merge it. A merged one stays merged. A forge that cannot be
reached leaves a pending cleanup (`pull_request`) that the finalizer retries.

Kept apart from the other steps on purpose: the engine's `pr_open` does the forge work;
this module only makes it a reset step and a retryable cleanup.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.engine import pr_open
from bot.services import Services
from integrations.forges.base import ForgeError
from state import stops
from state.models import StopRecord, Task
from state.store import original_key

log = logging.getLogger(__name__)

STEP = "pull_request"


async def close_pull_request(svc: Services, rec: StopRecord, task: Task) -> dict[str, Any]:
    """Reset step: the pull request closed with a comment (pending cleanup on failure)."""
    why = rec.reason or f"STOP by {rec.requested_by}"
    try:
        return await pr_open.close_for_stop(svc, task, why=why)
    except ForgeError as exc:
        now = svc.clock.now()
        await svc.store.run(
            stops.add_cleanup,
            task_id=task.id,
            stop_id=rec.id,
            step=STEP,
            detail={"why": why},
            error=str(exc),
            now=now,
            retry_at=now + svc.settings.stop.finalizer_interval_seconds,
        )
        log.warning(
            "cleanup pending",
            extra={"task": original_key(task.key), "stop_id": rec.id, "action": STEP},
        )
        return {"closed": False, "pending": str(exc)}


async def retry_close(svc: Services, task: Task, detail: dict[str, Any]) -> str | None:
    """The finalizer's retry of a pending close; ForgeError while the forge is down."""
    result = await pr_open.close_for_stop(svc, task, why=str(detail.get("why") or "STOP"))
    return str(result.get("reason") or "") or None
