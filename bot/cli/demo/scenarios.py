"""The demo's scenarios against the real server: send signed webhooks, wait (with a
spinner) for what each step should bring about, and say each step as it happens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.text import Text

from bot.cli.demo import account
from bot.cli.demo import repo as demo_repo
from bot.cli.demo.account import Claim
from bot.cli.demo.forge import DemoForge
from bot.cli.demo.repo import DemoError, DemoRepo
from bot.cli.remote import Reply, ServerClient, ref_path
from bot.cli.senders import describe_answer, plane_delivery
from bot.settings import Settings
from integrations.names import safe_name
from integrations.trackers.plane.payloads import Ticket

PROJECT = "0d3c6a52-5d0e-4c4e-9d51-0a9f3c1b7e21"  # the demo's Plane project
KEY = "DEMO-1"
START, STOP = "To Analyse", "STOP"
MERGE_SECONDS = 3.0  # how long the remote takes to accept a push to main (deferred)
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05

T = TypeVar("T")
Doc = dict[str, Any]


class Halted(DemoError):
    """A step of the run did not hold (already printed); nothing after it can."""


@dataclass
class Run:
    """One demo run: where it lives, what it talks to, and when it began."""

    root: Path
    scenario: str
    repo: DemoRepo
    settings: Settings
    console: Console
    began: float  # wall clock, to place the server's timestamps
    client: ServerClient | None = None
    forge: DemoForge | None = None  # scenario pull-request: the forge the server uses

    def elapsed(self) -> float:
        return time.time() - self.began

    def say(self, claim: Claim) -> Claim:
        """Print one timeline line as it happens; a claim that fails ends the run."""
        self.console.print(claim_line(claim, f"  {account.offset(self.elapsed())} "))
        if not claim.holds:
            raise Halted(claim.text)
        return claim

    @property
    def http(self) -> ServerClient:
        assert self.client is not None, "the server is not running"
        return self.client

    def data(self, *parts: str) -> Path:
        return self.settings.server.data_dir.joinpath(*parts)


def claim_line(claim: Claim, prefix: str = "  ") -> Text:
    """A claim as a line: its mark in green or red, its words as plain text."""
    colour = "green" if claim.holds else "red"
    return Text.assemble(prefix, (claim.mark, f"bold {colour}"), " ", claim.text)


# -- the scenarios -------------------------------------------------------------------------


def basic(demo: Run) -> Doc:
    """Start, wait for the working agent, STOP, wait for the reset to finish."""
    _start(demo)
    job = _wait(demo, _working_agent, "the implementation agent to be at work")
    at_work = f"job {job['id']}, pid {job['pid']}, run_id={job['run_id']}"
    demo.say(Claim(True, f"analysis agent passed; implementation agent at work: {at_work}"))
    sent = time.time()
    stopped = _send(demo, STOP)
    _expect(demo, stopped, "stop_requested", f'STOP webhook (signed, "{STOP}")')
    return _wait_cancelled(demo, sent=sent)


def deferred(demo: Run) -> Doc:
    """Start, wait for the merge to be pushing, STOP (deferred), wait for the finalizer."""
    _start(demo)
    _wait(demo, _merging, "the merge to begin")
    slow = f"the remote takes {MERGE_SECONDS:g} s per push to main"
    demo.say(Claim(True, f"three agents committed and passed; the merge is pushing ({slow})"))
    sent = time.time()
    stopped = _send(demo, STOP)
    _expect(demo, stopped, "stop_deferred", f'STOP webhook (signed, "{STOP}") during the merge')
    queued = [d for d in demo.http.get("/queue").doc["stop"]["deferred"] if d["task"] == KEY]
    window = queued[0]["window"] if queued else "?"
    demo.say(Claim(bool(queued), f"GET /queue lists the deferred stop (window {window})"))
    detail = _wait_cancelled(demo, sent=sent)
    merged, cancelled = (
        account.epoch(detail["task"].get(k)) for k in ("merged_at", "cancelled_at")
    )
    after = merged is not None and cancelled is not None and cancelled >= merged
    gap = f"{cancelled - merged:.2f} s" if after and merged and cancelled else "?"
    demo.say(Claim(after, f"the finalizer cancelled the task {gap} after the merge ended"))
    return detail


def pull_request(demo: Run) -> Doc:
    """Start; the pull request opens; its checks are pending, then pass; it is merged
    through the forge and the merged branch is deleted."""
    _start(demo)
    task = _wait(demo, _pr_opened, "the pull request to be opened")
    opened = f"pull request #{task['pr_number']} opened ({task['pr_url']})"
    demo.say(Claim(True, f"analysis and implementation passed and pushed: {opened}"))
    detail = _wait(demo, _done, "the pull request to be merged")
    kinds = [event.get("kind") for event in detail.get("audit") or []]
    waited = "merge_waiting" in kinds and kinds.index("merge_waiting") < kinds.index("merged")
    demo.say(
        Claim(
            waited,
            "checks pending: the merge stage waited outside the critical "
            "window, then the forge reported it mergeable",
        )
    )
    sha = str(detail["task"].get("merge_sha") or "")[:7]
    demo.say(Claim(bool(sha), f"merged through the forge (merge commit {sha}); task done"))
    return detail


SCENARIOS: dict[str, Callable[[Run], Doc]] = {
    "basic": basic,
    "deferred": deferred,
    "pull-request": pull_request,
}


def _start(demo: Run) -> None:
    answer = _send(demo, START)
    _expect(demo, answer, "started", f'start webhook (signed, "{START}")')


def _send(demo: Run, state: str) -> Reply:
    ticket = Ticket(key=KEY, state=state, project_id=PROJECT, actor="demo", title="Demo ticket")
    delivery = plane_delivery(demo.settings, ticket, datetime.now(UTC), uuid.uuid4().hex)
    return demo.http.post("/webhooks/plane", content=delivery.body, headers=delivery.headers)


def _expect(demo: Run, reply: Reply, outcome: str, what: str) -> None:
    holds = reply.doc.get("outcome") == outcome
    demo.say(Claim(holds, f"{what}: {describe_answer(reply.status, reply.doc)}"))


def _wait_cancelled(demo: Run, *, sent: float) -> Doc:
    detail = _wait(demo, _reset_done, "the task to be cancelled")
    task = detail["task"]
    took = (account.epoch(task.get("cancelled_at")) or sent) - sent
    outcome = task.get("outcome")
    demo.say(Claim(True, f"task {KEY} {outcome}, {max(took, 0):.2f} s after the STOP was sent"))
    return detail


# -- waiting on the server ---------------------------------------------------------------


def _working_agent(detail: Doc, demo: Run) -> Doc | None:
    """The running implementation job, once its agent has committed and said so."""
    marker = demo.data("docs", safe_name(KEY), demo_repo.STARTED_MARKER)
    for job in detail["jobs"]:
        if job["stage"] == "implementation" and job["status"] == "running" and job["pid"]:
            return job if marker.exists() else None
    return None


def _pr_opened(detail: Doc, demo: Run) -> Doc | None:
    task = detail["task"]
    return task if task.get("pr_url") else None


def _done(detail: Doc, demo: Run) -> Doc | None:
    """Done, and the merged branch dealt with (it is deleted right after the merge)."""
    kinds = [str(event.get("kind")) for event in detail.get("audit") or []]
    cleaned = any(kind.startswith("merged_branch_") for kind in kinds) or detail.get("cleanups")
    return detail if detail["task"].get("stage") == "done" and cleaned else None


def _merging(detail: Doc, demo: Run) -> Doc | None:
    task = detail["task"]
    return task if task.get("merge_initiated_at") and not task.get("merged_at") else None


def _reset_done(detail: Doc, demo: Run) -> Doc | None:
    """The task cancelled and its stop record closed (every step recorded)."""
    stops = detail.get("stops") or []
    closed = bool(stops) and all(s.get("status") == "done" for s in stops)
    return detail if detail["task"].get("stage") == "cancelled" and closed else None


def _wait(demo: Run, check: Callable[[Doc, Run], T | None], what: str) -> T:
    """Poll GET /tasks/{KEY} until `check` finds something, with a spinner meanwhile."""
    deadline = time.monotonic() + WAIT_SECONDS
    with demo.console.status(f"waiting for {what}…"):
        while True:
            detail = demo.http.get(ref_path("/tasks", KEY)).doc
            found = check(detail, demo)
            if found is not None:
                return found
            _fail_if_stuck(detail, ends=("blocked",) if demo.forge else ("blocked", "done"))
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {WAIT_SECONDS:g} s waiting for {what}")
            time.sleep(POLL_SECONDS)


def _fail_if_stuck(detail: Doc, *, ends: tuple[str, ...]) -> None:
    """A failed agent or a task that ended another way will never get where we wait."""
    failed = next((j for j in detail["jobs"] if j["status"] == "failed"), None)
    if failed is not None:
        why = failed.get("error") or f"exit status {failed.get('exit_code')}"
        raise DemoError(
            f"the {failed['stage']} agent failed ({why}); its log: {failed['log_path']}"
        )
    stage = detail["task"].get("stage")
    if stage in ends:
        why = detail["task"].get("blocked_reason") or "before the STOP landed"
        raise DemoError(f"the task went to {stage} ({why})")
