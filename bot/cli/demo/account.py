"""The demo's account of a reset: what GET /tasks/{ref} says each step did, checked
against what the demo saw for itself (processes, paths, git refs). Pure: both sides come
in as data, the claims go out as data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from state.models import RESET_STEP_ORDER

Doc = Mapping[str, Any]


@dataclass(frozen=True)
class Claim:
    """One line of the account: what is claimed, and whether it holds."""

    holds: bool
    text: str

    @property
    def mark(self) -> str:
        return "✔" if self.holds else "✘"


@dataclass(frozen=True)
class World:
    """What the demo saw for itself, outside conveyor, once the task was cancelled."""

    main_before: str
    main_after: str | None
    branch_on_remote: str | None  # the task branch's head on the remote; None: absent
    worktree_exists: bool
    groups_alive: list[int] = field(default_factory=list)  # pgids of the task's jobs
    leftover_pids: list[int] = field(default_factory=list)  # processes with a job's run id
    docs: list[str] = field(default_factory=list)  # files left in the task's docs dir
    merges: list[str] = field(default_factory=list)  # merge commits on main since before
    merge_parents: list[str] = field(default_factory=list)  # of the newest one
    pull_request: Doc = field(default_factory=dict)  # as the forge has it (pull-request)
    mergeability_reads: int = 0  # how often conveyor asked the forge


def epoch(value: str | None) -> float | None:
    """An ISO 8601 time from the API as epoch seconds."""
    return None if not value else datetime.fromisoformat(value).timestamp()


def offset(seconds: float) -> str:
    """`+1.25 s`, right-aligned, so a column of them lines up."""
    return f"{'+' + format(seconds, '.2f'):>6} s"


def short(sha: str | None) -> str:
    return (sha or "-")[:7]


def the_stop(detail: Doc) -> Doc:
    """The task's (last) stop record; an empty one when there is none."""
    stops = detail.get("stops") or []
    return stops[-1] if stops else {"steps": {}}


def steps(detail: Doc) -> Doc:
    found: Doc = the_stop(detail).get("steps") or {}
    return found


# -- the claims ------------------------------------------------------------------------------

RESET_STEPS = RESET_STEP_ORDER


def stop_record(detail: Doc, world: World) -> Claim:
    """Step 1 and the record of the rest: every step done, with when it began and ended."""
    stop = the_stop(detail)
    requested = epoch(stop.get("requested_at"))
    missing = [name for name in RESET_STEPS if name not in steps(detail)]
    signalled = steps(detail).get("processes_signalled_at")
    closed = epoch(stop.get("closed_at"))
    timing = ""
    if requested is not None and isinstance(signalled, int | float) and closed is not None:
        timing = (
            f"; reset began {float(signalled) - requested:.2f} s and ended "
            f"{closed - requested:.2f} s after the request"
        )
    done = "every step recorded" if not missing else f"steps missing: {', '.join(missing)}"
    who = f"{stop.get('status')}, by {stop.get('requested_by')}"
    text = f"stop record {stop.get('id')} ({who}): {done}{timing}"
    return Claim(stop.get("status") == "done" and not missing, text)


def processes(detail: Doc, world: World) -> Claim:
    """Step 2: the process groups, as recorded and as the kernel sees them now."""
    report = steps(detail).get("processes") or {}
    gone = not world.groups_alive and not world.leftover_pids
    left = "no agent process is left" if gone else f"still alive: {world.leftover_pids}"
    if not report.get("groups"):
        holds = gone and "processes" in steps(detail)
        return Claim(holds, f"no agent was running at the reset (0 groups); {left}")
    how = "forced (SIGKILL after the grace)" if report.get("forced") else "gracefully (SIGTERM)"
    pgids = ", ".join(str(j.get("pgid")) for j in detail["jobs"] if j["status"] == "cancelled")
    empty = report.get("term_to_empty_seconds")
    took = f"empty {empty:.2f} s after SIGTERM" if isinstance(empty, float) else "empty"
    count = f"{report.get('processes')} process(es)"
    text = f"process group (pid = pgid) {pgids or '?'} stopped {how}: {count}, {took}; {left}"
    return Claim(gone and not report.get("unconfirmed") and not report.get("refused"), text)


def jobs(detail: Doc, world: World) -> Claim:
    """Step 3: every job finished or cancelled, none left running or queued."""
    recorded = (steps(detail).get("jobs") or {}).get("cancelled", 0)
    listing = ", ".join(f"{j['stage']} #{j['id']} {j['status']}" for j in detail["jobs"])
    live = [j for j in detail["jobs"] if j["status"] in ("queued", "running")]
    cancelled = [j for j in detail["jobs"] if j["status"] == "cancelled"]
    holds = not live and len(cancelled) == recorded
    return Claim(holds, f"jobs: {recorded} cancelled, none running ({listing})")


def worktree(detail: Doc, world: World) -> Claim:
    """Step 5: the worktree directory is gone."""
    path = detail["task"].get("worktree_path") or "?"
    removed = bool((steps(detail).get("worktree") or {}).get("removed"))
    state = "is gone" if not world.worktree_exists else "STILL EXISTS"
    return Claim(removed and not world.worktree_exists, f"worktree removed: {path} {state}")


def remote_branch(detail: Doc, world: World) -> Claim:
    """Step 6: the task branch is no longer on the remote."""
    branch = detail["task"].get("branch") or "?"
    deleted = bool((steps(detail).get("remote_branch") or {}).get("deleted"))
    # A merge deletes the merged branch itself: the reset after it finds it gone.
    kinds = [event.get("kind") for event in detail.get("audit") or []]
    after_merge = not deleted and "merged_branch_deleted" in kinds
    seen = (
        "git ls-remote finds no such branch"
        if world.branch_on_remote is None
        else (f"git ls-remote still shows it at {short(world.branch_on_remote)}")
    )
    when = " after the merge" if after_merge else ""
    return Claim(
        (deleted or after_merge) and world.branch_on_remote is None,
        f"remote branch {branch} deleted{when}: {seen}",
    )


def default_untouched(detail: Doc, world: World) -> Claim:
    """The default branch is where it was before the task began."""
    same = world.main_after == world.main_before
    text = (
        f"default branch main untouched: {short(world.main_before)} before and "
        f"{short(world.main_after)} after"
    )
    return Claim(same and not world.merges, text)


def one_merge(detail: Doc, world: World) -> Claim:
    """A deferred stop lets the merge finish: exactly one merge commit, onto the old head."""
    merge_sha = detail["task"].get("merge_sha")
    holds = (
        len(world.merges) == 1
        and world.merges[0] == merge_sha == world.main_after
        and world.merge_parents[:1] == [world.main_before]
    )
    text = (
        f"the merge finished honestly: exactly {len(world.merges)} merge commit on main "
        f"({short(merge_sha)}, first parent {short(world.main_before)}, the head before)"
    )
    return Claim(holds, text)


def tombstoned(detail: Doc, world: World) -> Claim:
    """Step 7: the ticket's keys carry `#cancelled-<task id>`, freeing the originals."""
    suffix = f"#cancelled-{detail['task']['id']}"
    stone = steps(detail).get("tombstone") or {}
    issue, key = str(stone.get("issue_id", "")), str(stone.get("key", ""))
    holds = bool(detail["task"].get("tombstoned")) and issue.endswith(suffix)
    text = f"keys tombstoned: issue id {issue or '?'}, key {key or '?'} (a new start is a new task)"
    return Claim(holds and key.endswith(suffix), text)


def terminal(detail: Doc, world: World) -> Claim:
    """Step 8: the task is cancelled, with the outcome the process step implies."""
    task = detail["task"]
    forced = bool((steps(detail).get("processes") or {}).get("forced"))
    expected = "cancelled_forced" if forced else "cancelled_graceful"
    holds = task.get("stage") == "cancelled" and task.get("outcome") == expected
    committed = (steps(detail).get("terminal") or {}).get("effects_committed")
    return Claim(
        holds,
        f"task {task.get('key')} is {task.get('stage')} ({task.get('outcome')}), "
        f"effects_committed={str(bool(committed)).lower()}",
    )


def docs_kept(detail: Doc, world: World) -> Claim:
    """Docs the agents wrote outside the worktree are kept."""
    names = ", ".join(world.docs) or "nothing"
    return Claim(bool(world.docs), f"the agents' docs are kept: {names}")


Check = Callable[[Doc, World], Claim]
BASIC: tuple[Check, ...] = (
    stop_record,
    processes,
    jobs,
    worktree,
    remote_branch,
    default_untouched,
    tombstoned,
    terminal,
    docs_kept,
)
DEFERRED: tuple[Check, ...] = (
    stop_record,
    one_merge,
    processes,
    jobs,
    worktree,
    remote_branch,
    tombstoned,
    terminal,
    docs_kept,
)


# -- pull-request mode ----------------------------------------------------------------


def pr_opened(detail: Doc, world: World) -> Claim:
    """The pull request conveyor recorded is the forge's, from the task branch."""
    task, pr = detail["task"], world.pull_request
    holds = (
        bool(pr)
        and pr.get("number") == task.get("pr_number")
        and pr.get("head") == task.get("branch")
    )
    text = (
        f"pull request #{task.get('pr_number')} from {pr.get('head')} to {pr.get('base')}: "
        f'"{pr.get("title")}" ({task.get("pr_url")})'
    )
    return Claim(holds, text)


def waited_for_checks(detail: Doc, world: World) -> Claim:
    """Pending checks were waited for: mergeability asked more than once, the merge
    initiated only after."""
    kinds = [event.get("kind") for event in detail.get("audit") or []]
    ordered = "merge_waiting" in kinds and "merge_started" in kinds
    ordered = ordered and kinds.index("merge_waiting") < kinds.index("merge_started")
    reads = world.mergeability_reads
    text = f"the forge was asked {reads} times whether it merges; the merge began after"
    return Claim(ordered and reads >= 2, text)


def pr_merged(detail: Doc, world: World) -> Claim:
    """The forge has the pull request merged, by the commit main now points at."""
    pr, sha = world.pull_request, detail["task"].get("merge_sha")
    holds = pr.get("state") == "merged" and pr.get("merge_sha") == sha == world.main_after
    return Claim(holds, f"pull request {pr.get('state')} on the forge by {short(sha)}, main's head")


def branch_deleted_after_merge(detail: Doc, world: World) -> Claim:
    """The merged task branch is gone from the remote: no branch left behind."""
    branch = detail["task"].get("branch") or "?"
    kinds = [event.get("kind") for event in detail.get("audit") or []]
    gone = world.branch_on_remote is None and "merged_branch_deleted" in kinds
    seen = "git ls-remote finds no such branch" if world.branch_on_remote is None else "still there"
    return Claim(gone, f"merged branch {branch} deleted: {seen}")


def task_done(detail: Doc, world: World) -> Claim:
    task = detail["task"]
    holds = task.get("stage") == "done" and task.get("merged_at") is not None
    return Claim(holds, f"task {task.get('key')} is {task.get('stage')}")


PULL_REQUEST: tuple[Check, ...] = (
    pr_opened,
    waited_for_checks,
    one_merge,
    pr_merged,
    branch_deleted_after_merge,
    task_done,
    docs_kept,
)


def reset_claims(detail: Doc, world: World, scenario: str) -> list[Claim]:
    """Every claim the account makes, in the order of the steps (the reset's, or the
    pull request's for scenario pull-request)."""
    checks = {"deferred": DEFERRED, "pull-request": PULL_REQUEST}.get(scenario, BASIC)
    return [check(detail, world) for check in checks]


def audit_lines(detail: Doc, began: float) -> list[str]:
    """The audit trail, one line per event, with its time since the demo began."""
    lines = []
    for event in detail.get("audit") or []:
        at = epoch(event.get("at"))
        when = offset(at - began) if at is not None else " " * 8
        by = f" by {event['actor']}" if event.get("actor") else ""
        lines.append(f"{when}  {event.get('kind')}{by}{_detail(event.get('detail') or {})}")
    return lines


def job_lines(detail: Doc, began: float) -> list[str]:
    """Each job: stage, status, when it ran (since the demo began), pid and run id."""
    lines = []
    for job in detail.get("jobs") or []:
        start, end = (epoch(job.get(k)) for k in ("started_at", "finished_at"))
        ran = offset(start - began) if start is not None else "not started"
        if start is not None and end is not None:
            ran += f" to {offset(end - began)}"
        lines.append(
            f"#{job['id']} {job['stage']:<14} {job['status']:<9} {ran}  pid {job.get('pid')}"
            f"  run_id={job.get('run_id')}"
        )
    return lines


def _detail(detail: Doc) -> str:
    shown = {k: v for k, v in detail.items() if k not in ("delivery", "correlation", "path")}
    return ("  " + " ".join(f"{k}={v}" for k, v in shown.items())) if shown else ""
