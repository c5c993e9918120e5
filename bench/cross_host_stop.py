"""Cross-host stop latency: two `conveyor serve` processes on one PostgreSQL database, the
second (B) under another host name (`unshare --uts`, root), each with its own clone and
data dir. N agent trees run on B; the STOPs go to B itself (the same-server path), then,
for N fresh agents on B, to A (the cross-host path: the intent and the owner's steps go
through the database, LISTEN/NOTIFY wakes B). Group-empty latency side by side.

Half the trees are cooperative, half ignore SIGTERM with two grandchildren that ignore
it too (killed at the grace), as in stop_latency.py. One watcher thread reads /proc.

    python bench/cross_host_stop.py [--tasks 20] [--grace 1] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/cross_host_stop.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.agents import (  # noqa: E402
    Running,
    start_tickets,  # noqa: E402
    stubborn,
    wait_running,
    write_agents,
)
from bench.common import (  # noqa: E402
    GroupWatcher,
    Server,
    group_snapshot,
    kill_survivors,
    new_token,
    survivors,
    table,
    task_key,
    verdict,
    workspace,
)
from bench.stop_latency import Side, _send_stops  # noqa: E402
from bench.two_servers import (  # noqa: E402
    HOST_B,
    Pair,
    make_pair,
    postgres_database,
    unshare_problem,
)
from integrations.names import safe_name  # noqa: E402
from integrations.processes import processes_with_env  # noqa: E402

TARGET_P99 = 1.0  # cooperative, cross-host: STOP sent -> group empty


@dataclass
class Round:
    label: str
    side: Side = field(default_factory=Side)
    problems: list[str] = field(default_factory=list)


@dataclass
class CrossResult:
    tasks: int
    grace: float
    same: Round
    cross: Round
    survivors: list[int]

    def p99(self, rnd: Round, forced: bool) -> float:
        return rnd.side.summary("empty", forced).p99

    @property
    def met(self) -> bool:
        return self.p99(self.cross, False) <= TARGET_P99

    @property
    def clean(self) -> bool:
        return not (self.same.problems or self.cross.problems or self.survivors)


def _stop_round(rnd: Round, receiver: Server, pair: Pair, running: Sequence[Running]) -> None:
    """STOP every running agent through `receiver`; note when each group empties."""
    members = {r.ticket: group_snapshot(r.pgid) for r in running}
    with GroupWatcher() as watcher:
        for ticket, snapshot in members.items():
            watcher.watch(str(ticket), snapshot)
        sent = asyncio.run(_send_stops(receiver.url, [r.ticket for r in running], 0.0, rnd.side))
        watcher.wait(timeout=60)
    for ticket, (mono, _) in sent.items():
        if str(ticket) in watcher.emptied:
            rnd.side.empty[ticket] = watcher.emptied[str(ticket)] - mono
        else:
            rnd.problems.append(f"{task_key(ticket)}: group not empty after 60 s")
    _check(rnd, pair, running)


def _check(rnd: Round, pair: Pair, running: Sequence[Running]) -> None:
    """Every task reset once with the right outcome; no agent, no worktree left."""
    with httpx.Client(base_url=pair.b.url, timeout=30) as client:
        deadline = time.monotonic() + 60
        for r in running:
            key = task_key(r.ticket)
            while True:
                doc = client.get(f"/tasks/{key}").json()
                stop = (doc.get("stops") or [{}])[-1]
                if stop.get("status") == "done" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            want = "cancelled_forced" if stubborn(r.ticket) else "cancelled_graceful"
            if doc["task"]["outcome"] != want:
                rnd.problems.append(f"{key}: {doc['task']['outcome']}, expected {want}")
            if [e["kind"] for e in doc["audit"]].count("cancelled") != 1:
                rnd.problems.append(f"{key}: not reset exactly once")
            if processes_with_env("CONVEYOR_RUN_ID", r.run_id):
                rnd.problems.append(f"{key}: processes left")
    left = [
        p.name
        for d in (pair.data_a, pair.data_b)
        if (d / "worktrees" / "app").is_dir()
        for p in (d / "worktrees" / "app").iterdir()
        if p.name in {safe_name(task_key(r.ticket)) for r in running}
    ]
    rnd.problems += [f"{name}: worktree left" for name in left]


async def _warm_up(url: str, concurrency: int) -> None:
    """Open A's database pool as B's already is (B took the starts), so the rounds differ
    only in where the agents live: a few bursts of concurrent GET /queue."""
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        for _ in range(3):
            await asyncio.gather(*(client.get("/queue") for _ in range(concurrency)))


def run(*, tasks: int, grace: float, postgres_url: str, keep: bool = False) -> CrossResult:
    token = new_token()
    same, cross = Round("STOP to B (same server)"), Round("STOP to A (other host)")
    with workspace("cross", keep) as root, postgres_database(postgres_url, "conveyor_cross") as url:
        command = write_agents(root / "agents")["mixed"]
        pair = make_pair(
            root,
            url,
            token,
            agents={"analysis": command},
            workers={"concurrency": 2},
            workers_b={"concurrency": min(64, tasks)},
            stop={"grace_seconds": grace},
        )
        try:
            pair.b.start()
            with httpx.Client(base_url=pair.b.url, timeout=30) as client:
                first = list(range(1, tasks + 1))
                start_tickets(client, first)
                running = wait_running(client, pair.data_b, first, "analysis", timeout=120)
                _stop_round(same, pair.b, pair, running)
                second = list(range(tasks + 1, 2 * tasks + 1))
                start_tickets(client, second)
                running = wait_running(client, pair.data_b, second, "analysis", timeout=120)
            pair.a.start()  # after B holds every job: A's workers find nothing to claim
            asyncio.run(_warm_up(pair.a.url, tasks))
            _stop_round(cross, pair.a, pair, running)
        finally:
            pair.stop()
            left = kill_survivors(token) if survivors(token) else []
    return CrossResult(tasks, grace, same, cross, left)


def render(result: CrossResult) -> str:
    rows = []
    for forced in (False, True):
        kind = "forced" if forced else "cooperative"
        for rnd in (result.same, result.cross):
            s = rnd.side.summary("empty", forced)
            rows.append(
                [
                    kind,
                    f"{rnd.label}: sent -> group empty",
                    s.n,
                    s.ms("p50"),
                    s.ms("p99"),
                    s.ms("max"),
                ]
            )
            a = rnd.side.summary("answered", forced)
            rows.append(
                [kind, f"{rnd.label}: sent -> 202", a.n, a.ms("p50"), a.ms("p99"), a.ms("max")]
            )
    cross = result.p99(result.cross, False)
    same = result.p99(result.same, False)
    problems = result.same.problems + result.cross.problems
    return "\n".join(
        [
            f"cross-host stop: {result.tasks} agent trees per round on server B ({HOST_B}; A is "
            f"{socket.gethostname()}), half ignoring SIGTERM, grace {result.grace:g} s, "
            "one PostgreSQL database",
            "",
            table(["trees", "measure", "n", "p50 ms", "p99 ms", "max ms"], rows),
            "",
            f"cooperative p99: other host {cross * 1000:.1f} ms vs same server {same * 1000:.1f} ms "
            f"(x{cross / same if same else float('nan'):.2f}; target other host <= "
            f"{TARGET_P99 * 1000:.0f} ms: {verdict(result.met)})",
            f"problems: {len(problems)}; survivors: {len(result.survivors)}; "
            f"checks: {'OK' if result.clean else 'FAILED'}",
            *[f"problem: {p}" for p in problems],
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20, help="agents per round (default 20)")
    parser.add_argument("--grace", type=float, default=1.0, help="SIGTERM grace, s (default 1)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CONVEYOR_BENCH_POSTGRES_URL")
        or os.environ.get("CONVEYOR_TEST_POSTGRES_URL"),
        help="a PostgreSQL server to make a throw-away database on "
        "(default: CONVEYOR_BENCH_POSTGRES_URL, else CONVEYOR_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    args = parser.parse_args(argv)
    if not args.postgres_url:
        print("cross_host_stop needs PostgreSQL: --postgres-url or CONVEYOR_BENCH_POSTGRES_URL")
        return 2
    problem = unshare_problem()
    if problem:
        print(f"cross_host_stop needs a second host name: {problem}")
        return 2
    result = run(tasks=args.tasks, grace=args.grace, postgres_url=args.postgres_url, keep=args.keep)
    print(render(result))
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
