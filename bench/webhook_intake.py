"""Webhook intake: conveyor's POST /webhooks/plane beside a bare Starlette 202 endpoint.

Both run under uvicorn with the same settings, each in its own process: conveyor as
`conveyor serve` (SQLite in a temp dir, one repo mapped, workers running), the floor as
`bench.bare_app`. One load generator (its own process) plays the same signed v1
deliveries at both: a mix of real start and STOP events for many distinct tickets,
ignored field changes and duplicates. Closed-loop first (requests/s, p50/p99), then a
fixed rate (p99 acknowledgement latency, counted from when each request was due).
Afterwards the store is checked: no 5xx, no delivery lost or doubled, one task per
ticket started.

    python bench/webhook_intake.py [--requests 4000] [--concurrency 16] [--rate 200]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/webhook_intake.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, select  # noqa: E402

from bench.common import (  # noqa: E402
    bare_server,
    conveyor_server,
    free_port,
    issue_id,
    kill_survivors,
    make_repo,
    new_token,
    plane_body,
    plane_headers,
    ratio,
    settings_doc,
    stamp,
    survivors,
    table,
    verdict,
    workspace,
)
from bench.driver import LoadResult, drive, write_plan  # noqa: E402
from integrations.trackers.plane.webhook import parse_event  # noqa: E402
from state.schema import stop_records, tasks, webhook_deliveries  # noqa: E402
from state.store import original_key  # noqa: E402

PATH = "/webhooks/plane"
BLOCK = 32  # tickets per block: a ticket's start goes out ~2 blocks of requests before its STOP
WARM_REQUESTS = 200
TARGET_RATIO = 0.5
TARGET_P99_AT_RATE = 0.020
AGENTS = {
    # What the workers run for every agent stage. `sleep` keeps the workers claiming and
    # running real processes without turning the run into a git benchmark: each worker
    # holds one agent, the other started tasks wait queued. `true` runs the whole
    # pipeline (worktree, push, merge) for every ticket behind the load.
    "sleep": "exec sleep 600",
    "true": "true",
}


@dataclass(frozen=True)
class Planned:
    """One delivery of the plan: what it is, for which ticket, and its content key when
    conveyor routes it (None for a field change, which is ignored before it is stored)."""

    kind: str  # start | stop | field | dup-start | dup-stop
    ticket: int
    body: bytes
    key: str | None


def build_plan(first_ticket: int, tickets: int) -> list[Planned]:
    """Per ticket: a start, an ignored field change, a duplicate of the start, and for
    every other ticket a STOP (every fourth also duplicated), laid out block by block so
    that a ticket's start goes out well before its STOP."""
    plan: list[Planned] = []
    serial = first_ticket * 10
    for block in range(first_ticket, first_ticket + tickets, BLOCK):
        ids = range(block, min(block + BLOCK, first_ticket + tickets))
        starts = {t: plane_body(t, "To Analyse", stamp(serial + 2 * t)) for t in ids}
        stops = {t: plane_body(t, "STOP", stamp(serial + 2 * t + 1)) for t in ids if t % 2 == 0}
        plan += [_planned("start", t, starts[t]) for t in ids]
        plan += [
            _planned("field", t, plane_body(t, "In Progress", stamp(t), field="priority"))
            for t in ids
        ]
        plan += [_planned("dup-start", t, starts[t]) for t in ids]
        plan += [_planned("stop", t, body) for t, body in stops.items()]
        plan += [_planned("dup-stop", t, body) for t, body in stops.items() if t % 4 == 0]
    return plan


def _planned(kind: str, ticket: int, body: bytes) -> Planned:
    key = None if kind == "field" else parse_event(body).dedup_key
    return Planned(kind, ticket, body, key)


def warm_plan(count: int) -> list[Planned]:
    """Field changes only: they exercise the whole intake but are never stored."""
    return [
        _planned(
            "field",
            9_000_000 + n,
            plane_body(9_000_000 + n, "In Progress", stamp(n), field="priority"),
        )
        for n in range(count)
    ]


def save(path: Path, plan: Sequence[Planned]) -> Path:
    write_plan(path, ((PATH, plane_headers(p.body), p.body) for p in plan))
    return path


@dataclass
class StoreCheck:
    """Deliveries and tasks as the store holds them against what was sent and answered."""

    keys_sent: int = 0
    deliveries_stored: int = 0
    tickets_started: int = 0
    tasks_stored: int = 0
    lost: int = 0  # content keys sent that no answer acted on, or the store lacks
    doubled: int = 0  # content keys acted on twice, or stored twice
    tasks_doubled: int = 0
    unaccounted: int = 0  # requests without an answer (transport errors): effect unknown
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.doubled or self.tasks_doubled or self.unaccounted) and (
            self.keys_sent == self.deliveries_stored and self.tickets_started == self.tasks_stored
        )


@dataclass
class IntakeResult:
    requests: int
    concurrency: int
    rate: float
    agent: str
    bare: LoadResult
    conveyor: LoadResult
    bare_rate: LoadResult
    conveyor_rate: LoadResult
    store: StoreCheck
    survivors: list[int]
    mix: dict[str, int]
    drained: dict[str, float]  # seconds the resets behind each conveyor run took to finish

    @property
    def throughput_ratio(self) -> float:
        return ratio(self.conveyor.throughput, self.bare.throughput)

    @property
    def server_errors(self) -> int:
        loads = (self.bare, self.conveyor, self.bare_rate, self.conveyor_rate)
        return sum(load.server_errors for load in loads)

    @property
    def transport_errors(self) -> int:
        loads = (self.bare, self.conveyor, self.bare_rate, self.conveyor_rate)
        return sum(load.errors for load in loads)

    @property
    def clean(self) -> bool:
        return (
            not self.server_errors
            and not self.transport_errors
            and self.store.clean
            and not self.survivors
        )


def drain(database: Path, timeout: float = 120.0) -> float:
    """Wait until no reset is still open; how long that took. Resets run behind the 202,
    so a run that ends with a backlog hands it to the next run unless it is drained."""
    engine = create_engine(f"sqlite:///{database}")
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            with engine.connect() as conn:
                query = (
                    select(func.count())
                    .select_from(stop_records)
                    .where(stop_records.c.status == "open")
                )
                if not conn.execute(query).scalar_one():
                    break
            time.sleep(0.05)
    finally:
        engine.dispose()
    return time.monotonic() - started


def check_store(
    database: Path, phases: Sequence[tuple[Sequence[Planned], LoadResult]]
) -> StoreCheck:
    """Compare the store with the deliveries that were answered."""
    check = StoreCheck()
    acted: dict[str, int] = defaultdict(int)
    sent_keys: set[str] = set()
    started: set[int] = set()
    for plan, load in phases:
        check.unaccounted += load.errors
        for answer in load.answers:
            item = plan[answer.index]
            if item.kind in ("start", "dup-start"):
                started.add(item.ticket)
            if item.key is None:
                continue
            sent_keys.add(item.key)
            if answer.outcome != "duplicate":
                acted[item.key] += 1
    check.keys_sent, check.tickets_started = len(sent_keys), len(started)
    check.lost = sum(1 for key in sent_keys if acted[key] == 0)
    check.doubled = sum(1 for n in acted.values() if n > 1)
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            stored = [row[0] for row in conn.execute(select(webhook_deliveries.c.dedup_key))]
            issues = [original_key(row[0]) for row in conn.execute(select(tasks.c.issue_id))]
            check.tasks_stored = int(
                conn.execute(select(func.count()).select_from(tasks)).scalar_one()
            )
    finally:
        engine.dispose()
    check.deliveries_stored = len(stored)
    check.lost += len(sent_keys - set(stored))
    check.doubled += len(stored) - len(set(stored))
    check.tasks_doubled = len(issues) - len(set(issues))
    missing = {issue_id(t) for t in started} - set(issues)
    if missing:
        check.problems.append(f"{len(missing)} started tickets have no task")
    return check


def run(
    *,
    requests: int = 4000,
    concurrency: int = 16,
    rate: float = 200.0,
    rate_seconds: float = 10.0,
    max_seconds: float = 60.0,
    agent: str = "sleep",
    keep: bool = False,
) -> IntakeResult:
    """Measure both servers side by side; nothing is left running afterwards."""
    token = new_token()
    with workspace("intake", keep) as root:
        clone, _ = make_repo(root)
        closed = build_plan(1, math.ceil(requests / 3.75) + 1)[:requests]
        fixed = build_plan(1_000_000, math.ceil(rate * rate_seconds / 3.75) + 1)
        fixed = fixed[: max(1, int(rate * rate_seconds))]
        warm = warm_plan(WARM_REQUESTS)
        doc = settings_doc(
            root,
            clone,
            free_port(),
            agents={stage: AGENTS[agent] for stage in ("analysis", "implementation", "review")},
        )
        bare, conveyor = bare_server(root, token), conveyor_server(root, doc, token)
        loads: dict[str, LoadResult] = {}
        drained: dict[str, float] = {}
        try:
            bare.start()
            conveyor.start()
            for name, server, plan, rate_or_none in (
                ("warm-bare", bare, warm, None),
                ("warm-conveyor", conveyor, warm, None),
                ("bare", bare, closed, None),
                ("conveyor", conveyor, closed, None),
                ("bare-rate", bare, fixed, rate),
                ("conveyor-rate", conveyor, fixed, rate),
            ):
                loads[name] = drive(
                    server.port,
                    save(root / f"{name}.jsonl", plan),
                    root / f"{name}.json",
                    token,
                    concurrency=concurrency,
                    max_seconds=rate_seconds + 5 if rate_or_none else max_seconds,
                    rate=rate_or_none,
                )
                if server is conveyor:
                    drained[name] = drain(root / "conveyor.db")
        finally:
            bare.stop()
            conveyor.stop()
        store = check_store(
            root / "conveyor.db", [(closed, loads["conveyor"]), (fixed, loads["conveyor-rate"])]
        )
        left = kill_survivors(token) if survivors(token) else []
        mix: dict[str, int] = defaultdict(int)
        for item in closed:
            mix[item.kind] += 1
        return IntakeResult(
            requests=len(closed),
            concurrency=concurrency,
            rate=rate,
            agent=agent,
            bare=loads["bare"],
            conveyor=loads["conveyor"],
            bare_rate=loads["bare-rate"],
            conveyor_rate=loads["conveyor-rate"],
            store=store,
            survivors=left,
            mix=dict(mix),
            drained=drained,
        )


def render(result: IntakeResult) -> str:
    mix = ", ".join(f"{kind} {n}" for kind, n in sorted(result.mix.items()))
    closed_rows = [
        [
            name,
            f"{load.throughput:.0f}",
            load.latency.ms("p50"),
            load.latency.ms("p99"),
            load.latency.ms("max"),
            len(load.answers),
        ]
        for name, load in (("bare Starlette 202", result.bare), ("conveyor", result.conveyor))
    ]
    rate_rows = [
        [
            name,
            f"{load.throughput:.0f}",
            load.latency.ms("p50"),
            load.latency.ms("p99"),
            load.latency.ms("max"),
            len(load.answers),
        ]
        for name, load in (
            ("bare Starlette 202", result.bare_rate),
            ("conveyor", result.conveyor_rate),
        )
    ]
    s = result.store
    p99 = result.conveyor_rate.latency.p99
    lines = [
        f"webhook intake: {result.requests} signed Plane v1 deliveries ({mix}), "
        f"{result.concurrency} keep-alive connections, agents: {result.agent}",
        "",
        "closed loop",
        table(["server", "req/s", "p50 ms", "p99 ms", "max ms", "answered"], closed_rows),
        f"throughput conveyor/bare = {result.throughput_ratio:.2f}  "
        f"(target >= {TARGET_RATIO}: {verdict(result.throughput_ratio >= TARGET_RATIO)})",
        f"p99 conveyor/bare = {ratio(result.conveyor.latency.p99, result.bare.latency.p99):.1f}x",
        "",
        f"fixed rate {result.rate:g} req/s (latency from when each request was due)",
        table(["server", "req/s", "p50 ms", "p99 ms", "max ms", "answered"], rate_rows),
        f"conveyor p99 ack = {p99 * 1000:.1f} ms  "
        f"(target < {TARGET_P99_AT_RATE * 1000:.0f} ms: {verdict(p99 < TARGET_P99_AT_RATE)})",
        "",
        "resets still running when the load stopped finished within: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.drained.items()),
        f"conveyor outcomes: {dict(sorted((result.conveyor.outcomes + result.conveyor_rate.outcomes).items()))}",
        f"store: deliveries {s.deliveries_stored} stored / {s.keys_sent} distinct content keys "
        f"answered; tasks {s.tasks_stored} / {s.tickets_started} tickets started; "
        f"lost {s.lost}, doubled {s.doubled + s.tasks_doubled}, unaccounted {s.unaccounted}",
        f"5xx: {result.server_errors}; transport errors: {result.transport_errors}; "
        f"survivors: {len(result.survivors)}; checks: {'OK' if result.clean else 'FAILED'}",
    ]
    lines += [f"problem: {p}" for p in s.problems]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=4000, help="closed-loop requests (default 4000)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--rate", type=float, default=200.0, help="fixed rate, req/s (default 200)")
    parser.add_argument(
        "--rate-seconds", type=float, default=10.0, help="fixed-rate run (default 10 s)"
    )
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per closed-loop run")
    parser.add_argument(
        "--agent", choices=sorted(AGENTS), default="sleep", help="what workers run (default sleep)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = parser.parse_args(argv)
    result = run(
        requests=args.requests,
        concurrency=args.concurrency,
        rate=args.rate,
        rate_seconds=args.rate_seconds,
        max_seconds=args.max_seconds,
        agent=args.agent,
        keep=args.keep,
    )
    print(render(result))
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
