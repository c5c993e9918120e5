"""Reset step 9: one comment on the ticket (and the one notice of a deferred stop). A
tracker failure is logged and never breaks a stop.

The comment carries a marker with the stop's id; before posting, a tracker that can look
(``CommentLookup``) is asked whether a comment with that marker is already there, so a
reset resumed after a crash between the post and its record does not post twice."""

from __future__ import annotations

import logging
from typing import Any

from bot.services import Services
from integrations.trackers.base import CommentLookup, Notice, TicketRef, Tracker
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
    return {"posted": await _comment(svc, task, _summary(task, steps, rec.id))}


async def notify_deferred(svc: Services, stop_id: str) -> None:
    """Tell the ticket once that its STOP waits for the merge/deploy to finish."""
    rec = await svc.store.run_read(stops.get_stop, stop_id)
    if rec is None or rec.notified_at is not None:
        return
    task = await svc.store.run_read(get_task, rec.task_id)
    if task is None:
        return
    notice = Notice(
        headline=(
            f"conveyor: STOP received for {original_key(task.key)} during its "
            f"{rec.window or 'merge'} step; it will be applied as soon as that step has "
            "finished (merged code stays on the default branch)."
        ),
        marker=f"conveyor:stop-deferred:{stop_id}",
    )
    if await svc.store.run(lambda c: stops.update_stop(c, stop_id, notified_at=svc.clock.now())):
        await _comment(svc, task, notice)


async def _comment(svc: Services, task: Task, notice: Notice) -> bool:
    tracker = svc.tracker(task.tracker)
    if tracker is None or not tracker.has_api:
        return False
    ref = TicketRef(
        tracker=task.tracker,
        project=task.project_id or "",
        issue_id=original_key(task.issue_id),
        key=original_key(task.key),
    )
    try:
        if await _already_posted(tracker, ref, notice.marker):
            log.info(
                "tracker comment already posted",
                extra={"task": original_key(task.key), "action": notice.marker},
            )
            return True
        await tracker.comment(ref, notice)
        return True
    except Exception as exc:  # a tracker failure must never break a stop
        log.warning(
            "tracker comment failed", extra={"task": original_key(task.key), "error": str(exc)}
        )
        return False


async def _already_posted(tracker: Tracker, ref: TicketRef, marker: str) -> bool:
    if not marker or not isinstance(tracker, CommentLookup):
        return False
    try:
        return await tracker.has_comment(ref, marker)
    except Exception as exc:  # cannot look: post (a second comment beats none at all)
        log.warning("tracker comments not readable", extra={"error": str(exc)})
        return False


def _summary(task: Task, steps: dict[str, Any], stop_id: str) -> Notice:
    counts = reset_counts(steps)
    how = "forced (SIGKILL)" if steps.get("processes", {}).get("forced") else "graceful"
    return Notice(
        headline=f"conveyor stopped {original_key(task.key)} ({how}).",
        items=(
            f"processes stopped: {counts['processes_stopped']}",
            f"jobs cancelled: {counts['jobs_cancelled']}",
            f"worktree removed: {'yes' if counts['worktree_removed'] else 'no'}",
            f"branch {task.branch or '-'} deleted: {'yes' if counts['branch_deleted'] else 'no'}",
        ),
        closing="Move the ticket to the start status to begin again from scratch.",
        marker=f"conveyor:stop:{stop_id}",
    )
