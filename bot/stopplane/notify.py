"""Reset step 9: one comment on the ticket (and the one notice of a deferred stop). A
tracker failure is logged and never breaks a stop."""

from __future__ import annotations

import html
import logging
from typing import Any

from bot.services import Services
from integrations.trackers.base import IssueRef
from state import stops
from state.models import StopRecord, Task
from state.store import get_task, original_key

log = logging.getLogger(__name__)


def reset_counts(steps: dict[str, Any]) -> dict[str, Any]:
    """What a reset did, counted from its recorded steps."""
    return {
        "processes_stopped": steps.get("processes", {}).get("processes", 0),
        "jobs_cancelled": steps.get("jobs", {}).get("cancelled", 0),
        "worktree_removed": bool(steps.get("worktree", {}).get("removed")),
        "branch_deleted": bool(steps.get("remote_branch", {}).get("deleted")),
    }


async def notify(svc: Services, rec: StopRecord, task: Task) -> dict[str, Any]:
    """One comment on the ticket; a failure is logged, never breaks the stop."""
    steps = stops.stop_steps(rec)
    return {"posted": await _comment(svc, task, _summary_html(task, steps))}


async def notify_deferred(svc: Services, stop_id: str) -> None:
    """Tell the ticket once that its STOP waits for the merge/deploy to finish."""
    rec = await svc.store.run_read(stops.get_stop, stop_id)
    if rec is None or rec.notified_at is not None:
        return
    task = await svc.store.run_read(get_task, rec.task_id)
    if task is None:
        return
    text = (
        f"<p>conveyor: STOP received for <b>{html.escape(original_key(task.key))}</b> during "
        f"its {html.escape(rec.window or 'merge')} step; it will be applied as soon as that "
        "step has finished (merged code stays on the default branch).</p>"
    )
    if await svc.store.run(lambda c: stops.update_stop(c, stop_id, notified_at=svc.clock.now())):
        await _comment(svc, task, text)


async def _comment(svc: Services, task: Task, text: str) -> bool:
    if svc.tracker is None:
        return False
    issue = IssueRef(
        tracker=task.tracker, issue_id=original_key(task.issue_id), project_id=task.project_id
    )
    try:
        await svc.tracker.comment(issue, text)
        return True
    except Exception as exc:  # a tracker failure must never break a stop
        log.warning(
            "tracker comment failed", extra={"task": original_key(task.key), "error": str(exc)}
        )
        return False


def _summary_html(task: Task, steps: dict[str, Any]) -> str:
    counts = reset_counts(steps)
    how = "forced (SIGKILL)" if steps.get("processes", {}).get("forced") else "graceful"
    branch = html.escape(task.branch or "-")
    return (
        f"<p>conveyor stopped <b>{html.escape(original_key(task.key))}</b> ({how}).</p><ul>"
        f"<li>processes stopped: {counts['processes_stopped']}</li>"
        f"<li>jobs cancelled: {counts['jobs_cancelled']}</li>"
        f"<li>worktree removed: {'yes' if counts['worktree_removed'] else 'no'}</li>"
        f"<li>branch {branch} deleted: {'yes' if counts['branch_deleted'] else 'no'}</li>"
        "</ul><p>Move the ticket to the start status to begin again from scratch.</p>"
    )
