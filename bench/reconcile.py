"""Reconciliation: what a pass costs beside the bare HTTP reads it needs, and how long a
STOP made in the tracker with no webhook takes to empty the agent's process group, beside
the webhook path, in one run.

A fake Plane API (`bench/fake_plane.py`, its own process, loopback) holds the work items
and counts every request. Part 1: a real `conveyor serve` with N quiet live tasks (10,
100, 1000: rows written straight into its SQLite file, each ticket seen in the state the
tracker shows, the work items last changed two days ago); `POST /reconcile` runs one
pass at a time. The floor is the same GETs the pass needs (the change list's first page,
one work item) made by a plain httpx client against the same fake. A last row has 100
tickets changed since the pass before. Part 2: a second server (interval
`--interval`), M tasks with real cooperative agents started by signed webhooks; one at a
time each ticket is moved to STOP in the fake tracker, half of them with no webhook (a
pass must find it), half with the signed STOP webhook; a watcher thread notes when each
process group is empty.

    python bench/reconcile.py [--sizes 10,100,1000] [--passes 20] [--tasks 10] [--interval 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/reconcile.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.agents import StoreReader, start_tickets, stop_body, wait_running, write_agents  # noqa: E402
from bench.common import (  # noqa: E402
    PROJECT,
    GroupWatcher,
    Summary,
    conveyor_server,
    free_port,
    group_snapshot,
    issue_id,
    kill_survivors,
    make_repo,
    new_token,
    ratio,
    settings_doc,
    summarize,
    table,
    task_key,
    verdict,
    workspace,
)
from bench.fake_plane import Control, fake_plane_server  # noqa: E402
from state.db import make_engine  # noqa: E402
from state.models import NewTask, Stage  # noqa: E402
from state.store import Store, insert_task  # noqa: E402
from state.tickets import SeenTicket, remember  # noqa: E402

ADMIN = {"X-Admin-Token": "bench-admin-token"}
WORKSPACE = "bench"
REQUESTS_BUDGET = 3  # per project per quiet pass: the change list + one round-robin read
TWO_DAYS = 2 * 86400.0


@dataclass
class PassRow:
    label: str
    live: int
    changed: int
    requests: list[int] = field(default_factory=list)
    conveyor: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    floor_requests: int = 0


@dataclass
class Latency:
    reconcile: list[float] = field(default_factory=list)
    webhook: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def plane_section(url: str) -> dict[str, object]:
    return {"base_url": url, "api_key": "bench-plane-api-key", "workspace": WORKSPACE}


def server_doc(root: Path, clone: Path, plane_url: str, interval: float, **kw: object) -> dict:  # type: ignore[type-arg]
    doc = settings_doc(root, clone, free_port(), **kw)  # type: ignore[arg-type]
    doc["trackers"]["plane"].update(plane_section(plane_url))
    doc["reconcile"] = {"interval_seconds": interval, "startup_wait_seconds": 1}
    return doc


# -- part 1: the cost of a pass ----------------------------------------------------------------


def add_quiet_tasks(store: Store, plane: Control, first: int, last: int) -> None:
    """Live (blocked) tasks for tickets first..last, seen as the tracker shows them."""
    long_ago = time.time() - TWO_DAYS

    def write(conn) -> None:  # type: ignore[no-untyped-def]
        now = time.time()
        for ticket in range(first, last + 1):
            key = task_key(ticket)
            new = NewTask(
                tracker="plane",
                issue_id=issue_id(ticket),
                key=key,
                repo="app",
                title=f"Bench ticket {ticket}",
                project_id=PROJECT,
                stage=Stage.BLOCKED,
            )
            insert_task(conn, new, now)
            remember(
                conn,
                SeenTicket("plane", issue_id(ticket), PROJECT, key, "In Progress", (), None, now),
            )

    store.write(write)
    plane.put(range(first, last + 1), "In Progress", long_ago + first * 1e-3)


def floor_reads(http: httpx.Client, plane_url: str, pages: int) -> tuple[float, int]:
    """The GETs the pass made, made bare: `pages` pages of the change list, one item."""
    base = f"{plane_url}/api/v1/workspaces/{WORKSPACE}/projects/{PROJECT}/work-items/"
    params = {"order_by": "-updated_at", "per_page": "100", "expand": "state"}
    started = time.perf_counter()
    for page in range(pages):
        cursor = {"cursor": f"100:{page}:0"} if page else {}
        http.get(base, params={**params, **cursor}, headers={"X-API-Key": "k"}).raise_for_status()
    http.get(f"{base}{issue_id(1)}/", params={"expand": "state"}).raise_for_status()
    return time.perf_counter() - started, pages + 1


def measure_passes(
    conveyor: httpx.Client, bare: httpx.Client, plane: Control, row: PassRow, passes: int
) -> None:
    for _ in range(passes):
        if row.changed:  # a fresh batch of edits before every pass (state unchanged)
            plane.put(range(1, row.changed + 1), "In Progress", time.time())
        before = plane.counts()["counts"]
        started = time.perf_counter()
        answer = conveyor.post("/reconcile", headers=ADMIN)
        row.conveyor.append(time.perf_counter() - started)
        answer.raise_for_status()
        report = answer.json()["trackers"]["plane"]
        if report["error"] or report["tickets"] != row.changed:
            raise RuntimeError(f"pass at {row.label}: {report}")
        after = plane.counts()["counts"]
        made = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after}
        row.requests.append(sum(made.values()))
        seconds, row.floor_requests = floor_reads(bare, plane.url, made.get("list", 0))
        row.floor.append(seconds)


def pass_cost(root: Path, token: str, sizes: Sequence[int], passes: int) -> list[PassRow]:
    """Rows of pass cost at each size of quiet live tasks, then with 100 changed."""
    clone, _ = make_repo(root)
    with fake_plane_server(root, token) as fake:
        plane = Control(fake.url)
        doc = server_doc(root, clone, fake.url, 3600.0)
        store = Store(make_engine(doc["server"]["database_url"]))
        try:
            with conveyor_server(root, doc, token) as server:
                return _rows(server.url, store, plane, sizes, passes)
        finally:
            store.engine.dispose()
            plane.close()


def _rows(
    url: str, store: Store, plane: Control, sizes: Sequence[int], passes: int
) -> list[PassRow]:
    rows: list[PassRow] = []
    with httpx.Client(base_url=url, timeout=60) as conveyor, httpx.Client(timeout=60) as bare:
        have = 0
        for size in sizes:
            add_quiet_tasks(store, plane, have + 1, size)
            have = size
            rows.append(PassRow(f"{size} live, quiet", size, 0))
            measure_passes(conveyor, bare, plane, rows[-1], passes)
        rows.append(PassRow(f"{have} live, 100 changed", have, 100))
        measure_passes(conveyor, bare, plane, rows[-1], passes)
    return rows


# -- part 2: from a STOP in the tracker to an empty process group ----------------------------


def stop_latency(root: Path, token: str, tasks: int, interval: float) -> Latency:
    clone, _ = make_repo(root)
    agents = write_agents(root / "agents")
    tickets = [2 * n for n in range(1, tasks + 1)]  # even: the cooperative agent
    found = Latency()
    with fake_plane_server(root, token) as fake:
        plane = Control(fake.url)
        doc = server_doc(
            root,
            clone,
            fake.url,
            interval,
            agents={"analysis": agents["mixed"]},
            workers={"concurrency": tasks},
        )
        with (
            conveyor_server(root, doc, token) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            plane.put(tickets, "To Analyse", time.time())
            start_tickets(client, tickets)
            running = wait_running(client, root / "data", tickets, "analysis", timeout=120)
            with GroupWatcher() as watcher:
                for n, run in enumerate(running):
                    time.sleep(random.uniform(0, interval))  # any phase of the pass schedule
                    by_pass = n % 2 == 0
                    watcher.watch(str(run.ticket), group_snapshot(run.pgid))
                    sent = time.monotonic()
                    if by_pass:
                        plane.put([run.ticket], "STOP", time.time())  # and no webhook
                    else:
                        body, headers = stop_body(run.ticket)
                        client.post("/webhooks/plane", content=body, headers=headers)
                        plane.put([run.ticket], "STOP", time.time())
                    if not watcher.wait(timeout=3 * interval + 15):
                        found.problems.append(f"{task_key(run.ticket)}: group not empty")
                        continue
                    side = found.reconcile if by_pass else found.webhook
                    side.append(watcher.emptied[str(run.ticket)] - sent)
            check_stops(client, plane, running, found, root)
        plane.close()
    return found


def check_stops(client: httpx.Client, plane: Control, running, found: Latency, root: Path) -> None:  # type: ignore[no-untyped-def]
    """Every task cancelled once, by the path that was meant to find it, one comment each."""
    reader = StoreReader(root / "conveyor.db")
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            states = reader.tasks(r.task_id for r in running)
            if all(s.stage == "cancelled" and s.stop_closed_at for s in states.values()):
                break
            time.sleep(0.1)
    finally:
        reader.close()
    time.sleep(1.0)  # a pass or two more: none may stop anything again
    for n, run in enumerate(running):
        doc = client.get(f"/tasks/{task_key(run.ticket)}").json()
        stops = doc["stops"]
        by = "plane:reconcile" if n % 2 == 0 else "plane:bench"
        if doc["task"]["stage"] != "cancelled" or [s["requested_by"] for s in stops] != [by]:
            found.problems.append(f"{task_key(run.ticket)}: {doc['task']['stage']}, {stops}")
        comments = plane.comments(issue_id(run.ticket))
        if comments != 1:
            found.problems.append(f"{task_key(run.ticket)}: {comments} comments")
    health = client.get("/queue").json()["reconcile"]["trackers"]["plane"]
    if health["missed_webhooks"] != (len(running) + 1) // 2:
        found.problems.append(f"missed_webhooks {health['missed_webhooks']}")


# -- report ------------------------------------------------------------------------------------


def ms(summary: Summary, name: str) -> str:
    return summary.ms(name)


def render(rows: list[PassRow], latency: Latency, interval: float) -> str:
    lines = ["one pass (POST /reconcile) vs the bare reads it needs, same fake Plane"]
    body = []
    for row in rows:
        mine, bare = summarize(row.conveyor), summarize(row.floor)
        body.append(
            [
                row.label,
                f"{max(row.requests)} vs {row.floor_requests}",
                ms(mine, "p50"),
                ms(mine, "p99"),
                ms(bare, "p50"),
                ms(bare, "p99"),
                f"{ratio(mine.p50, bare.p50):.1f}x",
            ]
        )
    header = ["live tasks", "requests", "pass p50", "p99", "floor p50", "p99", "p50 ratio"]
    lines.append(table(header, body))
    quiet = [r for r in rows if not r.changed]
    worst = max(max(r.requests) for r in quiet)
    lines.append(
        f"requests per quiet pass: at most {worst} (budget {REQUESTS_BUDGET}: "
        f"{verdict(worst <= REQUESTS_BUDGET)}), the same at every size"
    )
    rec, hook = summarize(latency.reconcile), summarize(latency.webhook)
    lines += [
        "",
        f"STOP in the tracker -> agent's process group empty (interval {interval:g} s, grace 1 s)",
        table(
            ["path", "n", "p50 ms", "p99 ms", "max ms"],
            [
                [
                    "no webhook: a pass finds it",
                    rec.n,
                    ms(rec, "p50"),
                    ms(rec, "p99"),
                    ms(rec, "max"),
                ],
                ["signed STOP webhook", hook.n, ms(hook, "p50"), ms(hook, "p99"), ms(hook, "max")],
            ],
        ),
        f"bound interval + grace = {interval + 1:g} s: {verdict(rec.max <= interval + 1)}",
        "correctness: "
        + (
            "every task cancelled once, one comment each, missed_webhooks right"
            if not latency.problems
            else "; ".join(latency.problems)
        ),
    ]
    return "\n".join(lines)


@dataclass
class Result:
    rows: list[PassRow]
    latency: Latency
    interval: float
    survivors: list[int]

    @property
    def over_budget(self) -> bool:
        return any(max(r.requests) > REQUESTS_BUDGET for r in self.rows if not r.changed)

    @property
    def clean(self) -> bool:
        return not (self.latency.problems or self.survivors or self.over_budget)


def run(
    sizes: Sequence[int], passes: int, tasks: int, interval: float, keep: bool = False
) -> Result:
    """Both parts, in a temp dir; whatever the run started is killed by pid afterwards."""
    token = new_token()
    try:
        with workspace("reconcile", keep) as root:
            (root / "cost").mkdir()
            (root / "stop").mkdir()
            rows = pass_cost(root / "cost", token, sorted(sizes), passes)
            latency = stop_latency(root / "stop", token, tasks, interval)
    finally:
        left = kill_survivors(token)
    return Result(rows, latency, interval, left)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="live tasks per row")
    parser.add_argument("--passes", type=int, default=20, help="passes measured per row")
    parser.add_argument("--tasks", type=int, default=10, help="tasks stopped in part 2")
    parser.add_argument("--interval", type=float, default=2.0, help="reconcile interval, part 2")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    result = run(sizes, args.passes, args.tasks, args.interval, args.keep)
    print(render(result.rows, result.latency, result.interval))
    if result.survivors:
        print(f"survivors killed: {result.survivors}")
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
