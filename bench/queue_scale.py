"""Queue scale: GET /queue and the webhook path with 1k, 10k and 100k tasks in the
store, on SQLite and on PostgreSQL, with the growth factor per 10x.

The store is filled with SQLAlchemy Core executemany before the server starts: tasks
mostly finished (done, cancelled and tombstoned), some blocked or live, with jobs,
audit events, webhook deliveries and stop records in proportion, and the handful of
running jobs, deferred stops and pending cleanups that /queue lists. A real
`conveyor serve` then answers sequential GET /queue requests, and signed start + STOP
deliveries for fresh tickets. PostgreSQL runs when CONVEYOR_BENCH_POSTGRES_URL or
CONVEYOR_TEST_POSTGRES_URL is set: a fresh database is created and dropped.

    python bench/queue_scale.py [--sizes 1000,10000,100000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/queue_scale.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import Engine, create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.common import (  # noqa: E402
    Summary,
    conveyor_server,
    free_port,
    kill_survivors,
    make_repo,
    new_token,
    plane_body,
    plane_headers,
    ratio,
    settings_doc,
    stamp,
    summarize,
    survivors,
    table,
    verdict,
    workspace,
)
from state.db import make_engine, normalise_url, upgrade  # noqa: E402
from state.schema import (  # noqa: E402
    audit_events,
    counts,
    jobs,
    pending_cleanups,
    stop_records,
    tasks,
    webhook_deliveries,
)

PG_ENVS = ("CONVEYOR_BENCH_POSTGRES_URL", "CONVEYOR_TEST_POSTGRES_URL")
TARGET_P99 = 0.050
TARGET_SIZE = 100_000
BATCH = 5000
DAY = 86400.0
RUNNING_JOBS = 20  # what /queue lists is bounded in life: workers x processes
DEFERRED_STOPS = 5
PENDING_CLEANUPS = 5
AGENT_STAGES = ("analysis", "implementation", "review")
# (stage, share of tasks); the rest of the mix is `done`
STAGE_MIX = (
    ("cancelled", 0.30),
    ("blocked", 0.02),
    ("analysis", 0.03),
    ("implementation", 0.02),
    ("review", 0.02),
    ("merge", 0.005),
    ("deploy", 0.005),
)


@dataclass
class Point:
    backend: str
    size: int
    rows: dict[str, int]
    fill_seconds: float
    queue: Summary
    webhook: Summary
    queue_bytes: int
    statuses: dict[int, int] = field(default_factory=dict)
    # (kind, name, counts table, rows counted) where migration 0002's trigger-kept counts
    # disagree with the rows the fill wrote: GET /queue would report them wrong
    count_mismatches: list[tuple[str, str, int, int]] = field(default_factory=list)


@dataclass
class ScaleResult:
    points: list[Point] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for p in self.points for status, n in p.statuses.items() if status >= 500)

    def growth(self, backend: str, what: str) -> list[tuple[int, int, float]]:
        """(smaller size, larger size, p50 ratio normalised to a 10x step)."""
        points = sorted((p for p in self.points if p.backend == backend), key=lambda p: p.size)
        out = []
        for small, large in zip(points, points[1:], strict=False):
            steps = max(1e-9, math.log10(large.size / small.size))
            factor = ratio(getattr(large, what).p50, getattr(small, what).p50) ** (1 / steps)
            out.append((small.size, large.size, factor))
        return out

    @property
    def count_mismatches(self) -> int:
        return sum(len(p.count_mismatches) for p in self.points)

    @property
    def clean(self) -> bool:
        return not self.server_errors and not self.survivors and not self.count_mismatches


# -- filling the store ---------------------------------------------------------------------


def _stage(rng: random.Random) -> str:
    r, acc = rng.random(), 0.0
    for stage, share in STAGE_MIX:
        acc += share
        if r < acc:
            return stage
    return "done"


def fill(
    engine: Engine, size: int, now: float, seed: int = 7, *, pg_triggers: bool = False
) -> dict[str, int]:
    """Tasks with jobs, events, deliveries and stop records in proportion (executemany).
    On SQLite every row goes through migration 0002's count triggers, as in the product;
    on PostgreSQL the counts are recounted after the load unless `pg_triggers`."""
    rng = random.Random(seed)
    counts = dict.fromkeys(
        ("tasks", "jobs", "audit_events", "webhook_deliveries", "stop_records", "pending_cleanups"),
        0,
    )
    batches: dict[str, list[dict[str, Any]]] = {name: [] for name in counts}
    tables = {
        "tasks": tasks,
        "jobs": jobs,
        "audit_events": audit_events,
        "webhook_deliveries": webhook_deliveries,
        "stop_records": stop_records,
        "pending_cleanups": pending_cleanups,
    }
    special = {"running": RUNNING_JOBS, "deferred": DEFERRED_STOPS, "cleanups": PENDING_CLEANUPS}
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql" and not pg_triggers:
            # Migration 0002's row trigger upserts the same `counts` row for every task and
            # job; inside ONE bulk transaction each upsert walks every earlier version of
            # that row, so the fill goes quadratic (100k tasks: killed after 9 min, 30 s
            # without). The product writes a few rows per transaction and never sees this.
            # So the fill skips the triggers and recounts below, as the migration's
            # backfill does; check_counts() then proves the counts table right.
            conn.execute(text("SET LOCAL session_replication_role = replica"))

        def flush() -> None:
            # Parents first: a batch of tasks is written before the rows that refer to it.
            for name, rows in batches.items():
                if rows:
                    conn.execute(tables[name].insert(), _uniform(rows))
                    counts[name] += len(rows)
                    batches[name] = []

        for task_id in range(1, size + 1):
            for name, rows in _task_rows(task_id, _stage(rng), rng, now, special).items():
                batches[name] += rows
            if len(batches["tasks"]) >= BATCH:
                flush()
        flush()
        if conn.dialect.name == "postgresql" and not pg_triggers:
            for table, kind, column in (("tasks", "task", "stage"), ("jobs", "job", "status")):
                conn.execute(
                    text(
                        f"INSERT INTO counts (kind, name, n) SELECT '{kind}', {column}, 0 "
                        f"FROM {table} GROUP BY {column} ON CONFLICT (kind, name) DO NOTHING"
                    )
                )
                conn.execute(
                    text(
                        f"UPDATE counts SET n = (SELECT count(*) FROM {table} "
                        f"WHERE {table}.{column} = counts.name) WHERE kind = '{kind}'"
                    )
                )
        if conn.dialect.name == "postgresql":
            for name in ("tasks", "jobs", "audit_events", "webhook_deliveries", "pending_cleanups"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))"
                    )
                )
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return counts


def check_counts(engine: Engine) -> list[tuple[str, str, int, int]]:
    """The fill goes through migration 0002's triggers like every product write; check
    that the `counts` rows GET /queue reads agree with counting the tables themselves."""
    mismatches: list[tuple[str, str, int, int]] = []
    with engine.connect() as conn:
        kept = {
            (k, n): int(v)
            for k, n, v in conn.execute(select(counts.c.kind, counts.c.name, counts.c.n))
        }
        for kind, column in (("task", tasks.c.stage), ("job", jobs.c.status)):
            real = {
                (kind, name): int(n)
                for name, n in conn.execute(select(column, func.count()).group_by(column))
            }
            for key in sorted({k for k in kept if k[0] == kind} | set(real)):
                if kept.get(key, 0) != real.get(key, 0):
                    mismatches.append((kind, key[1], kept.get(key, 0), real.get(key, 0)))
    return mismatches


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """executemany wants the same keys in every row: the missing ones are NULL."""
    keys = set().union(*rows)
    return [{key: row.get(key) for key in keys} for row in rows]


def _task_rows(
    task_id: int, stage: str, rng: random.Random, now: float, special: dict[str, int]
) -> dict[str, list[dict[str, Any]]]:
    created = now - rng.uniform(0, 90 * DAY)
    issue, key = str(uuid.UUID(int=task_id)), f"SCALE-{task_id}"
    task: dict[str, Any] = dict(
        id=task_id,
        tracker="plane",
        issue_id=issue,
        key=key,
        project_id="scale",
        repo="app",
        title=f"Scaled ticket {task_id}",
        stage=stage,
        version=5,
        created_at=created,
        updated_at=created + 3600,
        branch=f"conveyor/{key}",
    )
    rows: dict[str, list[dict[str, Any]]] = {
        "tasks": [task],
        "jobs": [],
        "audit_events": [],
        "webhook_deliveries": [],
        "stop_records": [],
        "pending_cleanups": [],
    }
    done_stages = {
        "done": 5,
        "cancelled": rng.randint(1, 3),
        "blocked": rng.randint(1, 3),
        "merge": 3,
        "deploy": 4,
    }.get(stage, AGENT_STAGES.index(stage) if stage in AGENT_STAGES else 0)
    for n in range(done_stages):
        rows["jobs"].append(
            _job(
                task_id,
                ("analysis", "implementation", "review", "merge", "deploy")[n],
                "succeeded",
                created + 60 * n,
                now,
            )
        )
    if stage in AGENT_STAGES:
        live = "running" if special["running"] > 0 else "queued"
        special["running"] -= live == "running"
        rows["jobs"].append(_job(task_id, stage, live, created, now))
    if stage == "cancelled":
        _cancel(task, rows, rng, created, special)
    if stage == "merge" and special["deferred"] > 0:
        special["deferred"] -= 1
        task.update(merge_initiated_at=created + 600)
        rows["stop_records"].append(_stop(task_id, "deferred", created + 700, window="merge"))
    if stage == "done":
        task.update(done_at=created + 3600, outcome="done")
    for n in range(len(rows["jobs"]) + 2):
        rows["audit_events"].append(
            dict(
                task_id=task_id,
                at=created + n,
                kind="advanced",
                actor="plane:bench",
                detail='{"stage": "x"}',
            )
        )
    for n in range(2):
        rows["webhook_deliveries"].append(
            dict(
                tracker="plane",
                dedup_key=f"scale-{task_id}-{n}",
                delivery_id=uuid.uuid4().hex,
                received_at=created + n,
                outcome="started",
                task_id=task_id,
            )
        )
    return rows


def _job(task_id: int, stage: str, status: str, at: float, now: float) -> dict[str, Any]:
    """A job row; a queued one waits a day (a retry's backoff), a running one belongs to
    a worker of another host whose lease runs for a day: neither is touched here."""
    row: dict[str, Any] = dict(
        task_id=task_id, stage=stage, status=status, attempt=1, run_after=at, created_at=at
    )
    if status == "queued":
        row.update(run_after=now + DAY)
    elif status == "running":
        row.update(
            started_at=now,
            run_id=uuid.uuid4().hex,
            worker_id="bench-elsewhere:1:0",
            lease_expires_at=now + DAY,
            heartbeat_at=now,
        )
    else:
        row.update(started_at=at, finished_at=at + 30)
    return row


def _cancel(
    task: dict[str, Any],
    rows: dict[str, list[dict[str, Any]]],
    rng: random.Random,
    at: float,
    special: dict[str, int],
) -> None:
    task_id = task["id"]
    task.update(
        issue_id=f"{task['issue_id']}#cancelled-{task_id}",
        key=f"{task['key']}#cancelled-{task_id}",
        cancelled_at=at + 1800,
        cancel_requested_at=at + 1790,
        outcome=rng.choice(["cancelled_graceful", "cancelled_forced"]),
    )
    rows["jobs"][-1:] = [{**rows["jobs"][-1], "status": "cancelled"}] if rows["jobs"] else []
    steps = json.dumps(
        {"processes": {"groups": 1}, "jobs": {"cancelled": 1}, "worktree": {"removed": True}}
    )
    rows["stop_records"].append(
        {
            **_stop(task_id, "done", at + 1790),
            "outcome": task["outcome"],
            "steps": steps,
            "closed_at": at + 1800,
        }
    )
    if special["cleanups"] > 0:
        special["cleanups"] -= 1
        rows["pending_cleanups"].append(
            dict(
                task_id=task_id,
                stop_id=f"stop-{task_id}",
                step="remote_branch",
                status="pending",
                attempts=2,
                last_error="remote unreachable",
                detail="{}",
                next_attempt_at=at + 400 * DAY,
                created_at=at,
            )
        )


def _stop(task_id: int, status: str, at: float, window: str | None = None) -> dict[str, Any]:
    return dict(
        id=f"stop-{task_id}",
        task_id=task_id,
        status=status,
        requested_at=at,
        requested_by="plane:bench",
        reason="ticket moved to STOP",
        window=window,
        steps="{}",
        outcome=None,
        closed_at=None,
    )


# -- databases -----------------------------------------------------------------------------


def postgres_url(explicit: str | None) -> str | None:
    return explicit or next((os.environ[v] for v in PG_ENVS if os.environ.get(v)), None)


@contextmanager
def database(backend: str, root: Path, size: int, pg_url: str | None) -> Iterator[str]:
    """A fresh, migrated, empty database URL; a PostgreSQL one is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{root / f'scale-{size}.db'}"
        return
    assert pg_url is not None
    name = f"conveyor_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalise_url(pg_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield (
            make_url(normalise_url(pg_url)).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- measuring -----------------------------------------------------------------------------


def measure_point(
    root: Path,
    clone: Path,
    backend: str,
    size: int,
    url: str,
    token: str,
    samples: int,
    budget: float,
    pg_triggers: bool = False,
) -> Point:
    engine = make_engine(url)
    try:
        upgrade(engine)
        started = time.perf_counter()
        rows = fill(engine, size, time.time(), pg_triggers=pg_triggers)
        fill_seconds = time.perf_counter() - started
        mismatches = check_counts(engine)
    finally:
        engine.dispose()
    doc = settings_doc(
        root,
        clone,
        free_port(),
        database_url=url,
        agents=dict.fromkeys(AGENT_STAGES, "exec sleep 600"),
        workers={"concurrency": 1, "max_runtime_seconds": 7 * DAY},
    )
    server = conveyor_server(root, doc, token, name=f"{backend}-{size}")
    statuses: dict[int, int] = {}
    with server, httpx.Client(base_url=server.url, timeout=60) as client:
        queue, size_bytes = _queue_latencies(client, samples, budget, statuses)
        webhook = _webhook_latencies(client, size, samples, budget, statuses)
    return Point(
        backend,
        size,
        rows,
        fill_seconds,
        summarize(queue),
        summarize(webhook),
        size_bytes,
        statuses,
        mismatches,
    )


def _queue_latencies(
    client: httpx.Client, samples: int, budget: float, statuses: dict[int, int]
) -> tuple[list[float], int]:
    for _ in range(3):  # warm the pool and the caches
        client.get("/queue")
    latencies: list[float] = []
    size_bytes = 0
    deadline = time.monotonic() + budget
    while len(latencies) < samples and time.monotonic() < deadline:
        started = time.perf_counter()
        answer = client.get("/queue")
        latencies.append(time.perf_counter() - started)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        size_bytes = len(answer.content)
    return latencies, size_bytes


def _webhook_latencies(
    client: httpx.Client, size: int, samples: int, budget: float, statuses: dict[int, int]
) -> list[float]:
    """Start a fresh ticket, then STOP it: the two routed paths, one request at a time."""
    latencies: list[float] = []
    deadline = time.monotonic() + budget
    ticket = 10 * size
    while len(latencies) < samples and time.monotonic() < deadline:
        ticket += 1
        for state, serial in (("To Analyse", 2 * ticket), ("STOP", 2 * ticket + 1)):
            body = plane_body(ticket, state, stamp(serial))
            started = time.perf_counter()
            answer = client.post("/webhooks/plane", content=body, headers=plane_headers(body))
            latencies.append(time.perf_counter() - started)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    return latencies


def run(
    *,
    sizes: Sequence[int] = (1000, 10_000, 100_000),
    backends: Sequence[str] = ("sqlite", "postgresql"),
    samples: int = 100,
    budget: float = 10.0,
    pg_url: str | None = None,
    keep: bool = False,
    pg_fill_triggers: bool = False,
) -> ScaleResult:
    """Every size on every backend that is available; servers and databases cleaned up."""
    result = ScaleResult()
    token = new_token()
    pg = postgres_url(pg_url)
    with workspace("scale", keep) as root:
        clone, _ = make_repo(root)
        try:
            for backend in backends:
                if backend == "postgresql" and pg is None:
                    result.skipped.append(f"postgresql: set {' or '.join(PG_ENVS)}")
                    continue
                for size in sizes:
                    with database(backend, root, size, pg) as url:
                        result.points.append(
                            measure_point(
                                root,
                                clone,
                                backend,
                                size,
                                url,
                                token,
                                samples,
                                budget,
                                pg_triggers=pg_fill_triggers,
                            )
                        )
        finally:
            result.survivors = kill_survivors(token) if survivors(token) else []
    return result


def render(result: ScaleResult) -> str:
    rows = [
        [
            p.backend,
            p.size,
            p.rows["jobs"],
            p.rows["audit_events"],
            f"{p.fill_seconds:.1f}",
            p.queue.n,
            p.queue.ms("p50"),
            p.queue.ms("p99"),
            f"{p.queue_bytes / 1024:.1f}",
            p.webhook.n,
            p.webhook.ms("p50"),
            p.webhook.ms("p99"),
        ]
        for p in result.points
    ]
    lines = [
        "queue scale: GET /queue and webhook start+STOP, one request at a time, real `conveyor serve`",
        "",
        table(
            [
                "backend",
                "tasks",
                "jobs",
                "events",
                "fill s",
                "n",
                "/queue p50 ms",
                "/queue p99 ms",
                "KiB",
                "n",
                "webhook p50 ms",
                "webhook p99 ms",
            ],
            rows,
        ),
        "",
    ]
    for backend in sorted({p.backend for p in result.points}):
        for what in ("queue", "webhook"):
            steps = ", ".join(f"{a}->{b}: {f:.2f}x" for a, b, f in result.growth(backend, what))
            lines.append(
                f"{backend} {what} p50 growth per 10x tasks: {steps or 'n/a'} (linear = 10x)"
            )
        top = [p for p in result.points if p.backend == backend and p.size == TARGET_SIZE]
        if top:
            p99 = top[0].queue.p99
            lines.append(
                f"{backend} /queue p99 at {TARGET_SIZE}: {p99 * 1000:.1f} ms (target < {TARGET_P99 * 1000:.0f} ms: {verdict(p99 < TARGET_P99)})"
            )
    lines += [f"skipped: {s}" for s in result.skipped]
    lines += [
        f"counts wrong: {p.backend} {p.size} {kind} {name}: counts table {kept}, rows {real}"
        for p in result.points
        for kind, name, kept, real in p.count_mismatches
    ]
    lines.append(
        f"5xx: {result.server_errors}; counts table (migration 0002 triggers) vs rows: "
        f"{result.count_mismatches} mismatches; survivors: {len(result.survivors)}; "
        f"checks: {'OK' if result.clean else 'FAILED'}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="task counts, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite and/or postgresql")
    parser.add_argument(
        "--samples", type=int, default=100, help="requests per measure (default 100)"
    )
    parser.add_argument(
        "--budget", type=float, default=10.0, help="seconds per measure at most (default 10)"
    )
    parser.add_argument(
        "--postgres-url",
        help="admin URL (default: $CONVEYOR_BENCH_POSTGRES_URL, $CONVEYOR_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (logs, SQLite files)"
    )
    parser.add_argument(
        "--pg-fill-triggers",
        action="store_true",
        help="fill PostgreSQL through the count triggers in one transaction (quadratic: "
        "minutes at 10k+; default recounts after the load)",
    )
    args = parser.parse_args(argv)
    result = run(
        sizes=[int(s) for s in args.sizes.split(",") if s.strip()],
        backends=[b.strip() for b in args.backends.split(",") if b.strip()],
        samples=args.samples,
        budget=args.budget,
        pg_url=args.postgres_url,
        keep=args.keep,
        pg_fill_triggers=args.pg_fill_triggers,
    )
    print(render(result))
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
