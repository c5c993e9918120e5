"""The scheduled side of the stop plane: the finalizer (deferred stops whose window
closed, interrupted resets, pending cleanups, expired merge leases)."""

from __future__ import annotations

import logging
from typing import Any

from bot.gitops import UnknownRepoError
from bot.services import Services
from bot.stopplane import intent as stopplane
from bot.stopplane import outside as reset_outside
from bot.stopplane import owners
from bot.stopplane import pull_request as stop_pr
from integrations import git
from integrations.errors import IntegrationError
from state import jobs, stops
from state.models import StopStatus
from state.store import add_event, get_task

log = logging.getLogger(__name__)

MAX_CLEANUP_BACKOFF = 300.0


async def finalizer_tick(svc: Services) -> None:
    """Apply deferred stops whose window closed, resume resets, retry cleanups."""
    for rec in await svc.store.run_read(stops.stops_with_status, StopStatus.DEFERRED):
        if await svc.store.run(stopplane.deferred_ready, rec, svc.clock.now()):
            log.info("deferred stop applied", extra={"stop_id": rec.id})
            stopplane.launch_reset(svc, rec.id)
    for rec in await svc.store.run_read(stops.stops_with_status, StopStatus.OPEN):
        stopplane.launch_reset(svc, rec.id)  # no-op when it is already running here
    owners.do_owed(svc)  # the backstop for a lost notification
    await retry_cleanups(svc)
    await svc.store.run(jobs.reap_expired_leases, svc.clock.now())


async def retry_cleanups(svc: Services) -> None:
    """Retry each due pending cleanup once; back off on failure, clear on success."""
    for item in await svc.store.run_read(stops.due_cleanups, svc.clock.now()):
        try:
            status, note = await _retry_one(svc, item)
        except (IntegrationError, UnknownRepoError) as exc:
            await _later(svc, item, str(exc))
            continue
        await svc.store.run(stops.settle_cleanup, item["id"], status, svc.clock.now(), note)
        await svc.store.run(
            add_event,
            item["task_id"],
            f"cleanup_{status}",
            svc.clock.now(),
            stop_id=item["stop_id"],
            step=item["step"],
            note=note,
        )


async def _retry_one(svc: Services, item: dict[str, Any]) -> tuple[str, str | None]:
    task = await svc.store.run_read(get_task, item["task_id"])
    repo = task.repo if task else ""
    if item["step"] == "worktree":
        await reset_outside.retry_worktree(svc, repo, item["detail"])
        return "done", None
    if item["step"] == stop_pr.STEP and task is not None:
        return "done", await stop_pr.retry_close(svc, task, item["detail"])
    result = await reset_outside.retry_branch(svc, repo, item["detail"])
    if result.outcome in (git.DeleteOutcome.DELETED, git.DeleteOutcome.MISSING):
        return "done", result.reason
    if result.outcome is git.DeleteOutcome.REFUSED:
        return "refused", result.reason  # a protected branch: never deleted, never retried
    return "conflict", result.reason  # moved: never deleted, shown in the audit


async def _later(svc: Services, item: dict[str, Any], error: str) -> None:
    attempts = int(item["attempts"]) + 1
    base = svc.settings.stop.finalizer_interval_seconds
    delay = min(MAX_CLEANUP_BACKOFF, base * 2 ** (attempts - 1))
    await svc.store.run(
        stops.retry_cleanup_later, item["id"], attempts, error, svc.clock.now() + delay
    )
