"""Deferred stop: a STOP that arrives while conveyor pushes a merge waits for the merge
to end, then the finalizer applies it. This measures how long after the merge a deferred
stop is applied, beside the floor of a bare APScheduler interval job with the same
interval (the delay from an event to the next tick of a plain scheduler), in one run.

Each ticket goes through analysis, implementation and review (agents that commit) to
the merge; the bare remote's pre-receive hook holds every push to `main` for
`--merge-seconds`, so the STOP lands inside the merge. Tickets go one at a time (one
repo: merges take turns anyway). Afterwards the store is checked: every STOP answered
`stop_deferred`, every task merged and then cancelled (applied ≥ merged_at, cancelled ≥
applied), one merge commit per task on main, no worktree, branch or process left.

    python bench/deferred_stop.py [--tasks 5] [--interval 1.0] [--merge-seconds 1.0]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/deferred_stop.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from apscheduler.schedulers.background import BackgroundScheduler  # noqa: E402

from bench.agents import start_tickets, stop_body, write_agents  # noqa: E402
from bench.common import (  # noqa: E402
    conveyor_server,
    free_port,
    git,
    kill_survivors,
    make_repo,
    new_token,
    settings_doc,
    summarize,
    survivors,
    table,
    task_key,
    verdict,
    workspace,
)

# The promise: applied within one finalizer interval of the merge's end, plus this.
SLACK = 0.25

HOOK = """#!/bin/sh
# Hold pushes to main (the merge), let feature branches through.
while read old new ref; do
  if [ "$ref" = "refs/heads/main" ]; then sleep {seconds}; fi
done
exit 0
"""


@dataclass
class DeferredResult:
    tasks: int
    interval: float
    applied: list[float] = field(default_factory=list)  # merged_at -> deferred stop applied
    terminal: list[float] = field(default_factory=list)  # merged_at -> task cancelled
    closed: list[float] = field(default_factory=list)  # merged_at -> reset closed
    floor: list[float] = field(default_factory=list)  # event -> next bare tick
    problems: list[str] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return bool(self.applied) and summarize(self.applied).p99 <= self.interval + SLACK

    @property
    def ok(self) -> bool:
        return not self.problems and not self.survivors and len(self.applied) == self.tasks


def floor_delays(interval: float, samples: int, seconds: float) -> list[float]:
    """A bare APScheduler interval job; events at random times; delay to the next tick."""
    ticks: list[float] = []
    lock = threading.Lock()

    def tick() -> None:
        with lock:
            ticks.append(time.time())

    scheduler = BackgroundScheduler()
    scheduler.add_job(tick, "interval", seconds=interval, max_instances=1, coalesce=True)
    scheduler.start()
    rng = random.Random(20261203)
    events = []
    try:
        deadline = time.monotonic() + seconds
        while len(events) < samples and time.monotonic() < deadline:
            time.sleep(rng.uniform(0, interval))
            events.append(time.time())
        time.sleep(interval * 1.5)
    finally:
        scheduler.shutdown(wait=False)
    with lock:
        seen = sorted(ticks)
    return [min((t for t in seen if t >= e), default=e + interval) - e for e in events]


def merging(db: Path, task_key_: str, timeout: float) -> int | None:
    """Wait until the task's merge has started and not ended; the task's id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT id, merge_initiated_at, merged_at FROM tasks WHERE key = ?", (task_key_,)
            ).fetchone()
        if row and row[1] is not None and row[2] is None:
            return int(row[0])
        time.sleep(0.01)
    return None


def closed(db: Path, task_id: int, timeout: float) -> tuple[float, float, float, float] | None:
    """(merged_at, applied, cancelled_at, closed_at) once the task's stop has closed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT t.merged_at, t.cancelled_at, s.closed_at,"
                " (SELECT min(at) FROM audit_events e WHERE e.task_id = t.id"
                "  AND e.kind = 'deferred_stop_applied')"
                " FROM tasks t JOIN stop_records s ON s.task_id = t.id"
                " WHERE t.id = ? AND s.status = 'done'",
                (task_id,),
            ).fetchone()
        if row and None not in row:
            merged, cancelled, done, applied = row
            return float(merged), float(applied), float(cancelled), float(done)
        time.sleep(0.02)
    return None


def run(
    *, tasks: int = 5, interval: float = 1.0, merge_seconds: float = 1.0, keep: bool = False
) -> DeferredResult:
    token = new_token()
    result = DeferredResult(tasks, interval)
    with workspace("deferred", keep) as root:
        clone, bare = make_repo(root)
        hook = bare / "hooks" / "pre-receive"
        hook.write_text(HOOK.format(seconds=merge_seconds))
        hook.chmod(0o755)
        commands = write_agents(root / "agents")
        agents = {stage: commands["commit"] for stage in ("analysis", "implementation", "review")}
        doc = settings_doc(
            root,
            clone,
            free_port(),
            agents=agents,
            stop={"finalizer_interval_seconds": interval},
        )
        server = conveyor_server(root, doc, token)
        db = root / "conveyor.db"
        main_before = git(bare, "rev-parse", "main")
        try:
            server.start()
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for ticket in range(1, tasks + 1):
                    key = task_key(ticket)
                    start_tickets(client, [ticket])
                    task_id = merging(db, key, timeout=120)
                    if task_id is None:
                        result.problems.append(f"{key}: merge never started")
                        continue
                    body, headers = stop_body(ticket)
                    answer = client.post("/webhooks/plane", content=body, headers=headers)
                    outcome = answer.json().get("outcome") if answer.status_code == 202 else None
                    if outcome != "stop_deferred":
                        result.problems.append(f"{key}: STOP {answer.status_code} {answer.text}")
                    times = closed(db, task_id, timeout=60 + merge_seconds)
                    if times is None:
                        result.problems.append(f"{key}: deferred stop not closed")
                        continue
                    merged, applied, cancelled, done = times
                    if not merged <= applied <= cancelled <= done:
                        result.problems.append(f"{key}: out of order {times}")
                    result.applied.append(applied - merged)
                    result.terminal.append(cancelled - merged)
                    result.closed.append(done - merged)
            result.floor = floor_delays(interval, samples=max(10, tasks * 4), seconds=60)
        finally:
            server.stop()
            result.survivors = kill_survivors(token) if survivors(token) else []
        merges = git(bare, "rev-list", "--merges", "--count", f"{main_before}..main")
        if int(merges) != len(result.applied):
            result.problems.append(f"{merges} merge commits for {len(result.applied)} tasks")
        left = git(bare, "for-each-ref", "--format=%(refname:short)", "refs/heads/conveyor/")
        if left:
            result.problems.append(f"remote branches left: {left.split()[:5]}")
        trees = git(clone, "worktree", "list", "--porcelain").count("worktree ")
        if trees != 1:
            result.problems.append(f"{trees - 1} worktrees left")
    return result


def render(result: DeferredResult) -> str:
    rows = []
    for label, values in (
        ("floor: event -> next bare APScheduler tick", result.floor),
        ("conveyor: merged -> deferred stop applied", result.applied),
        ("conveyor: merged -> task cancelled", result.terminal),
        ("conveyor: merged -> reset closed", result.closed),
    ):
        if values:
            s = summarize(values)
            rows.append([label, s.n, s.ms("p50"), s.ms("p99"), s.ms("max")])
    lines = [
        f"{result.tasks} deferred stops, finalizer interval {result.interval:g} s",
        table(["measure", "n", "p50 ms", "p99 ms", "max ms"], rows),
    ]
    if result.applied and result.floor:
        conveyor, floor = summarize(result.applied), summarize(result.floor)
        lines.append(
            f"applied p99 {conveyor.p99 * 1000:.0f} ms vs floor p99 {floor.p99 * 1000:.0f} ms;"
            f" target <= interval + {SLACK * 1000:.0f} ms: {verdict(result.met)}"
        )
    lines += [f"problem: {p}" for p in result.problems]
    if result.survivors:
        lines.append(f"survivors killed: {result.survivors}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5, help="deferred stops to measure")
    parser.add_argument("--interval", type=float, default=1.0, help="finalizer interval, s")
    parser.add_argument(
        "--merge-seconds", type=float, default=1.0, help="how long a merge push is held"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    result = run(
        tasks=args.tasks, interval=args.interval, merge_seconds=args.merge_seconds, keep=args.keep
    )
    print(render(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
