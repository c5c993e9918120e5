"""Stop latency: STOP through the webhook → process group empty → task terminal, beside
the floor of the same process trees stopped by a bare killpg loop, in one run.

N agent trees run (half cooperative, half ignoring SIGTERM with two grandchildren that
ignore it too). The floor spawns them with `spawn_agent` and stops them all at once
with SIGTERM, a poll loop and SIGKILL at the grace; conveyor runs them as the analysis
agents of N tasks of a real `conveyor serve` and gets N signed STOP webhooks at once.
One watcher thread notes when each group's processes are gone, for both.

    python bench/stop_latency.py [--tasks 20] [--grace 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/stop_latency.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.agents import (  # noqa: E402
    Running,
    StoreReader,
    TaskState,
    start_tickets,
    stop_body,
    stubborn,
    wait_running,
    write_agents,
)
from bench.common import (  # noqa: E402
    GroupWatcher,
    Summary,
    child_env,
    conveyor_server,
    free_port,
    group_snapshot,
    kill_survivors,
    make_repo,
    members_gone,
    new_token,
    settings_doc,
    summarize,
    survivors,
    table,
    task_key,
    verdict,
    workspace,
)
from integrations.processes import AgentProcess, processes_with_env, spawn_agent  # noqa: E402

COOPERATIVE_BUDGET = 0.250  # conveyor's cooperative p99 within floor p99 + this
FORCED_BUDGET = 0.300  # conveyor's forced p99 within grace + this
FLOOR_POLL = 0.010


@dataclass
class Side:
    """Seconds from the stop (TERM for the floor, STOP sent for conveyor) per ticket."""

    empty: dict[int, float] = field(default_factory=dict)
    answered: dict[int, float] = field(default_factory=dict)  # the webhook's 202
    terminal: dict[int, float] = field(default_factory=dict)
    closed: dict[int, float] = field(default_factory=dict)

    def summary(self, what: str, forced: bool) -> Summary:
        values = getattr(self, what)
        return summarize([v for t, v in values.items() if stubborn(t) == forced])


@dataclass
class StopResult:
    tasks: int
    grace: float
    stagger: float
    floor: Side
    conveyor: Side
    wrong_outcomes: list[str]
    survivors: list[int]
    unfinished: list[str]

    def p99(self, side: Side, forced: bool, what: str = "empty") -> float:
        return side.summary(what, forced).p99

    @property
    def cooperative_overhead(self) -> float:
        return self.p99(self.conveyor, False) - self.p99(self.floor, False)

    @property
    def cooperative_met(self) -> bool:
        return self.cooperative_overhead <= COOPERATIVE_BUDGET

    @property
    def forced_met(self) -> bool:
        return self.p99(self.conveyor, True) <= self.grace + FORCED_BUDGET

    @property
    def clean(self) -> bool:
        return not (self.wrong_outcomes or self.survivors or self.unfinished)


# -- the floor -------------------------------------------------------------------------------


def floor(
    root: Path, command: str, tickets: Sequence[int], grace: float, stagger: float, token: str
) -> Side:
    """Spawn the trees with spawn_agent, then SIGTERM all, poll, SIGKILL at the grace."""
    procs: dict[int, AgentProcess] = {}
    for ticket in tickets:
        env = child_env(
            token,
            CONVEYOR_TASK_KEY=task_key(ticket),
            CONVEYOR_DOCS_DIR=str(root / "floor" / task_key(ticket)),
        )
        log = root / "floor-logs" / f"{ticket}.log"
        procs[ticket] = spawn_agent(command, cwd=root, env=env, log_path=log)
    try:
        _wait_started(root / "floor", tickets, timeout=60)
        return _stop_all(procs, grace, stagger)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.ref.pgid, signal.SIGKILL)
                proc.popen.wait()


def _wait_started(docs: Path, tickets: Sequence[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all((docs / task_key(t) / "started").exists() for t in tickets):
        if time.monotonic() > deadline:
            raise RuntimeError(f"floor agents did not start within {timeout}s")
        time.sleep(0.02)


def _stop_all(procs: dict[int, AgentProcess], grace: float, stagger: float) -> Side:
    members = {t: group_snapshot(p.ref.pgid) for t, p in procs.items()}
    side = Side()
    term_at: dict[int, float] = {}
    with GroupWatcher() as watcher:
        for ticket, snapshot in members.items():
            watcher.watch(str(ticket), snapshot)
        start = time.monotonic()
        due = {ticket: start + n * stagger for n, ticket in enumerate(procs)}
        _bare_stop(procs, members, due, term_at, grace)
        watcher.wait(timeout=5)
    for ticket in procs:
        name = str(ticket)
        if name in watcher.emptied:
            side.empty[ticket] = watcher.emptied[name] - term_at[ticket]
    return side


def _bare_stop(
    procs: dict[int, AgentProcess],
    members: dict[int, list[tuple[int, int]]],
    due: dict[int, float],
    term_at: dict[int, float],
    grace: float,
) -> None:
    """The floor's loop: SIGTERM each group when due; reap, check, SIGKILL at the grace."""
    left, killed = set(procs), set()
    deadline = max(due.values()) + grace + 10
    while left and time.monotonic() < deadline:
        for ticket in sorted(left):
            if ticket not in term_at:
                if time.monotonic() >= due[ticket]:
                    term_at[ticket] = time.monotonic()
                    os.killpg(procs[ticket].ref.pgid, signal.SIGTERM)
                continue
            procs[ticket].poll()
            if members_gone(members[ticket]):
                left.discard(ticket)
            elif ticket not in killed and time.monotonic() - term_at[ticket] >= grace:
                os.killpg(procs[ticket].ref.pgid, signal.SIGKILL)
                killed.add(ticket)
        time.sleep(FLOOR_POLL)


# -- conveyor --------------------------------------------------------------------------------


def through_conveyor(
    root: Path, command: str, tickets: Sequence[int], grace: float, stagger: float, token: str
) -> tuple[Side, list[str], list[str]]:
    """N tasks of `conveyor serve` running the trees; N STOP webhooks."""
    clone, _ = make_repo(root)
    doc = settings_doc(
        root,
        clone,
        free_port(),
        agents={"analysis": command, "implementation": command, "review": command},
        workers={"concurrency": min(64, max(2, len(tickets)))},
        stop={"grace_seconds": grace},
    )
    server = conveyor_server(root, doc, token)
    reader = StoreReader(root / "conveyor.db")
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            start_tickets(client, tickets)
            running = wait_running(client, root / "data", tickets, "analysis", timeout=120)
        side, unfinished = _stop_through_webhook(server.url, running, reader, grace, stagger)
        wrong = _wrong_outcomes(reader, running)
        wrong += [
            f"{task_key(r.ticket)}: processes left"
            for r in running
            if processes_with_env("CONVEYOR_RUN_ID", r.run_id)
        ]
        return side, wrong, unfinished
    finally:
        reader.close()
        server.stop()


def _stop_through_webhook(
    url: str, running: Sequence[Running], reader: StoreReader, grace: float, stagger: float
) -> tuple[Side, list[str]]:
    members = {r.ticket: group_snapshot(r.pgid) for r in running}
    side = Side()
    with GroupWatcher() as watcher:
        for ticket, snapshot in members.items():
            watcher.watch(str(ticket), snapshot)
        sent = asyncio.run(_send_stops(url, [r.ticket for r in running], stagger, side))
        watcher.wait(timeout=grace + 15 + stagger * len(running))
    for ticket, (mono, _) in sent.items():
        if str(ticket) in watcher.emptied:
            side.empty[ticket] = watcher.emptied[str(ticket)] - mono
    ids = {r.task_id: r.ticket for r in running}
    states = _wait_terminal(reader, list(ids), timeout=grace + 30 + stagger * len(running))
    for task_id, state in states.items():
        wall = sent[ids[task_id]][1]
        if state.cancelled_at is not None:
            side.terminal[ids[task_id]] = state.cancelled_at - wall
        if state.stop_closed_at is not None:
            side.closed[ids[task_id]] = state.stop_closed_at - wall
    unfinished = [task_key(ids[i]) for i, s in states.items() if s.stop_closed_at is None]
    return side, unfinished


async def _send_stops(
    url: str, tickets: Sequence[int], stagger: float, side: Side
) -> dict[int, tuple[float, float]]:
    """The STOPs, `stagger` seconds apart (0: all at once); (monotonic, wall) time each
    was sent."""
    bodies = {t: stop_body(t) for t in tickets}
    sent: dict[int, tuple[float, float]] = {}
    limits = httpx.Limits(max_connections=len(tickets))
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(n: int, ticket: int) -> None:
            await asyncio.sleep(n * stagger)
            body, headers = bodies[ticket]
            sent[ticket] = (time.monotonic(), time.time())
            answer = await client.post("/webhooks/plane", content=body, headers=headers)
            side.answered[ticket] = time.monotonic() - sent[ticket][0]
            if answer.status_code != 202 or answer.json().get("outcome") != "stop_requested":
                raise RuntimeError(f"STOP {task_key(ticket)}: {answer.status_code} {answer.text}")

        await asyncio.gather(*(one(n, t) for n, t in enumerate(tickets)))
    return sent


def _wait_terminal(reader: StoreReader, ids: list[int], timeout: float) -> dict[int, TaskState]:
    deadline = time.monotonic() + timeout
    while True:
        states = reader.tasks(ids)
        if (
            all(s.stop_closed_at is not None for s in states.values())
            or time.monotonic() > deadline
        ):
            return states
        time.sleep(0.05)


def _wrong_outcomes(reader: StoreReader, running: Sequence[Running]) -> list[str]:
    states = reader.tasks(r.task_id for r in running)
    wrong = []
    for r in running:
        want = "cancelled_forced" if stubborn(r.ticket) else "cancelled_graceful"
        got = states[r.task_id].outcome
        if got != want:
            wrong.append(f"{task_key(r.ticket)}: {got}, expected {want}")
    return wrong


# -- the run ---------------------------------------------------------------------------------


def run(
    *, tasks: int = 20, grace: float = 1.0, stagger: float = 0.0, keep: bool = False
) -> StopResult:
    """Floor then conveyor, same trees, same grace; nothing left running afterwards."""
    if grace < 1:
        raise ValueError("grace must be at least 1 s (conveyor's stop.grace_seconds minimum)")
    token = new_token()
    tickets = list(range(1, tasks + 1))
    with workspace("stop", keep) as root:
        command = write_agents(root / "agents")["mixed"]
        try:
            floor_side = floor(root, command, tickets, grace, stagger, token)
            conveyor_side, wrong, unfinished = through_conveyor(
                root, command, tickets, grace, stagger, token
            )
        finally:
            left = kill_survivors(token) if survivors(token) else []
        return StopResult(tasks, grace, stagger, floor_side, conveyor_side, wrong, left, unfinished)


def render(result: StopResult) -> str:
    rows = []
    for forced in (False, True):
        kind = "forced" if forced else "cooperative"
        for label, side, what in (
            ("floor: TERM -> group empty", result.floor, "empty"),
            ("conveyor: STOP sent -> 202 answer", result.conveyor, "answered"),
            ("conveyor: STOP sent -> group empty", result.conveyor, "empty"),
            ("conveyor: STOP sent -> task terminal", result.conveyor, "terminal"),
            ("conveyor: STOP sent -> reset closed", result.conveyor, "closed"),
        ):
            s = side.summary(what, forced)
            rows.append([kind, label, s.n, s.ms("p50"), s.ms("p99"), s.ms("max")])
    coop_floor = result.p99(result.floor, False)
    forced_p99 = result.p99(result.conveyor, True)
    half = result.tasks // 2
    return "\n".join(
        [
            f"stop latency: {result.tasks} agent trees ({result.tasks - half} cooperative, {half} "
            f"ignoring SIGTERM with 2 grandchildren), grace {result.grace:g} s, "
            + (
                "all stopped at once"
                if not result.stagger
                else f"stopped {result.stagger:g} s apart"
            ),
            "",
            table(["trees", "measure", "n", "p50 ms", "p99 ms", "max ms"], rows),
            "",
            f"cooperative: conveyor p99 - floor p99 = {result.cooperative_overhead * 1000:+.1f} ms "
            f"(floor p99 {coop_floor * 1000:.1f} ms; target <= +{COOPERATIVE_BUDGET * 1000:.0f} ms: "
            f"{verdict(result.cooperative_met)})",
            f"forced: conveyor p99 = {forced_p99 * 1000:.1f} ms (target <= grace + "
            f"{FORCED_BUDGET * 1000:.0f} ms = {(result.grace + FORCED_BUDGET) * 1000:.0f} ms: "
            f"{verdict(result.forced_met)})",
            f"outcomes wrong: {len(result.wrong_outcomes)}; resets unfinished: {len(result.unfinished)}; "
            f"survivors: {len(result.survivors)}; checks: {'OK' if result.clean else 'FAILED'}",
            *[f"problem: {p}" for p in result.wrong_outcomes + result.unfinished],
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", type=int, default=20, help="agent trees (default 20, at most 64)"
    )
    parser.add_argument(
        "--grace", type=float, default=1.0, help="SIGTERM grace, s (default 1, at least 1)"
    )
    parser.add_argument(
        "--stagger", type=float, default=0.0, help="seconds between stops (default 0: all at once)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = parser.parse_args(argv)
    result = run(tasks=args.tasks, grace=args.grace, stagger=args.stagger, keep=args.keep)
    print(render(result))
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
