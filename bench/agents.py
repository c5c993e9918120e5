"""Real agent processes for the stop benchmarks, and conveyor tasks that run them.

One script serves both kinds of tree: a ticket with an even number gets a cooperative
agent (exits on SIGTERM); an odd one gets a stubborn agent that ignores SIGTERM and
keeps two grandchildren that ignore it too. Each writes `started` in its docs dir once
its whole tree is in place.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, select

from bench.common import plane_body, plane_headers, stamp, task_key
from integrations.names import safe_name
from state.schema import stop_records, tasks

MIXED_AGENT = """\
import os, signal, subprocess, sys, time
key = os.environ.get("CONVEYOR_TASK_KEY", "X-0")
docs = os.environ["CONVEYOR_DOCS_DIR"]
os.makedirs(docs, exist_ok=True)
if int(key.rsplit("-", 1)[-1]) % 2:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open(sys.argv[1], 'w').close(); time.sleep(600)")
    marks = [os.path.join(docs, f"child-{n}") for n in range(2)]
    kids = [subprocess.Popen([sys.executable, "-c", code, m]) for m in marks]
    while not all(os.path.exists(m) for m in marks):
        time.sleep(0.01)
else:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
with open(os.path.join(docs, "started"), "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

# Commits one file in its worktree and exits 0: conveyor then pushes the task branch.
COMMITTING_AGENT = """\
#!/bin/sh
set -e
echo "$CONVEYOR_STAGE of $CONVEYOR_TASK_KEY" > "$CONVEYOR_STAGE.txt"
git add "$CONVEYOR_STAGE.txt"
git -c user.name=bench -c user.email=bench@conveyor.invalid commit -q -m "$CONVEYOR_STAGE by agent"
"""


def stubborn(ticket: int) -> bool:
    """Whether ticket `ticket` gets the TERM-ignoring tree (odd numbers)."""
    return ticket % 2 == 1


def write_agents(directory: Path) -> dict[str, str]:
    """The scripts on disk; the shell command for each kind."""
    directory.mkdir(parents=True, exist_ok=True)
    mixed, committing = directory / "mixed.py", directory / "commit.sh"
    mixed.write_text(MIXED_AGENT)
    committing.write_text(COMMITTING_AGENT)
    return {"mixed": f"exec {sys.executable} {mixed}", "commit": f"exec sh {committing}"}


@dataclass(frozen=True)
class Running:
    """A task whose agent runs: what the benchmark needs to stop it and watch it."""

    ticket: int
    task_id: int
    job_id: int
    pgid: int
    run_id: str


def start_tickets(client: httpx.Client, tickets: Iterable[int]) -> None:
    """Move every ticket to the start status through the signed webhook."""
    for ticket in tickets:
        body = plane_body(ticket, "To Analyse", stamp(2 * ticket))
        answer = client.post("/webhooks/plane", content=body, headers=plane_headers(body))
        if answer.status_code != 202 or answer.json().get("outcome") != "started":
            raise RuntimeError(f"start of {task_key(ticket)}: {answer.status_code} {answer.text}")


def stop_body(ticket: int) -> tuple[bytes, dict[str, str]]:
    body = plane_body(ticket, "STOP", stamp(2 * ticket + 1))
    return body, plane_headers(body)


def wait_running(
    client: httpx.Client, data_dir: Path, tickets: Iterable[int], stage: str, timeout: float
) -> list[Running]:
    """Wait until each ticket's `stage` agent runs with its whole tree in place."""
    pending, found = list(tickets), []
    deadline = time.monotonic() + timeout
    while pending:
        for ticket in list(pending):
            running = _running(client, data_dir, ticket, stage)
            if running is not None:
                found.append(running)
                pending.remove(ticket)
        if pending and time.monotonic() > deadline:
            names = ", ".join(task_key(t) for t in pending[:5])
            raise RuntimeError(f"agents not running after {timeout}s: {names}")
        time.sleep(0.1)
    return sorted(found, key=lambda r: r.ticket)


def _running(client: httpx.Client, data_dir: Path, ticket: int, stage: str) -> Running | None:
    key = task_key(ticket)
    if not (data_dir / "docs" / safe_name(key) / "started").exists():
        return None
    doc: dict[str, Any] = client.get(f"/tasks/{key}").json()
    jobs = [j for j in doc.get("jobs", []) if j["stage"] == stage and j.get("pgid")]
    if not jobs or jobs[-1]["status"] != "running":
        return None
    job = jobs[-1]
    return Running(
        ticket, int(doc["task"]["id"]), int(job["id"]), int(job["pgid"]), str(job["run_id"])
    )


@dataclass(frozen=True)
class TaskState:
    stage: str
    outcome: str | None
    cancelled_at: float | None
    stop_closed_at: float | None
    stop_requested_at: float | None
    steps: str | None


class StoreReader:
    """Reads tasks and their stop records straight from the server's SQLite file
    (WAL: a reader never blocks the server), without loading the server with requests."""

    def __init__(self, database: Path) -> None:
        self.engine = create_engine(f"sqlite:///{database}")

    def tasks(self, ids: Iterable[int]) -> dict[int, TaskState]:
        query = (
            select(
                tasks.c.id,
                tasks.c.stage,
                tasks.c.outcome,
                tasks.c.cancelled_at,
                stop_records.c.closed_at,
                stop_records.c.requested_at,
                stop_records.c.steps,
            )
            .outerjoin(stop_records, stop_records.c.task_id == tasks.c.id)
            .where(tasks.c.id.in_(list(ids)))
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {r[0]: TaskState(r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows}

    def close(self) -> None:
        self.engine.dispose()
