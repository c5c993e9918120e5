"""Queue scale: GET /queue and the webhook path with 1k to 100k tasks in the store on
SQLite and 1k to 1M on PostgreSQL, each size against the same backend's 1k figure.

The store is filled before the servers start: tasks mostly finished (done, cancelled
and tombstoned), some blocked or live, with jobs, audit events, webhook deliveries and
stop records in proportion, and the handful of running jobs, deferred stops and pending
cleanups that /queue lists (on the newest tasks). SQLite is filled with SQLAlchemy Core
executemany through the count triggers; PostgreSQL with COPY (psycopg 3), triggers off,
then `counts` recounted, sequences moved on, VACUUM ANALYZE, and both the counts and the
task references checked. One real `conveyor serve` per size, all up at once, answers
sequential GET /queue requests and signed start + STOP deliveries for fresh tickets,
round robin over the sizes so that every size sees the same machine; the floor is the
same backend's smallest store. PostgreSQL runs when CONVEYOR_BENCH_POSTGRES_URL or
CONVEYOR_TEST_POSTGRES_URL is set: one fresh database per size, dropped afterwards.

The default run stops at 100k on both backends (about 2 minutes on 2 shared cores).
Issue 18's 1M on PostgreSQL is `--pg-sizes 1000,10000,100000,1000000`: 6-8 minutes,
most of it the COPY of 1M tasks (3-5 min), ~4 GB of disk while it runs.

    python bench/queue_scale.py [--sizes 1000,10000,100000]
        [--pg-sizes 1000,10000,100000,1000000] [--backends sqlite,postgresql]
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/queue_scale.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import Engine, create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.common import (  # noqa: E402
    Server,
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
TARGET_P99 = 0.050  # GET /queue p99 at the largest size
TARGET_WEBHOOK_RATIO = 1.5  # webhook p50 at the largest size / at the smallest (1k)
SQLITE_SIZES = (1000, 10_000, 100_000)
PG_SIZES = (1000, 10_000, 100_000)  # issue 18's 1M: --pg-sizes 1000,10000,100000,1000000
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
    # child table.column -> rows naming no task (the PostgreSQL fill runs without FK checks)
    orphans: dict[str, int] = field(default_factory=dict)
    fill_phases: dict[str, float] = field(default_factory=dict)  # PostgreSQL: copy etc.


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

    def base(self, point: Point) -> Point:
        """The floor of `point`: the same backend's smallest store (1k by default)."""
        return min((p for p in self.points if p.backend == point.backend), key=lambda p: p.size)

    def vs_base(self, point: Point, what: str) -> float:
        """p50 at this size / p50 at the smallest size, same backend."""
        return ratio(getattr(point, what).p50, getattr(self.base(point), what).p50)

    def largest(self, backend: str) -> Point | None:
        points = [p for p in self.points if p.backend == backend]
        return max(points, key=lambda p: p.size) if points else None

    @property
    def count_mismatches(self) -> int:
        return sum(len(p.count_mismatches) for p in self.points)

    @property
    def orphans(self) -> int:
        return sum(sum(p.orphans.values()) for p in self.points)

    @property
    def clean(self) -> bool:
        return (
            not self.server_errors
            and not self.survivors
            and not self.count_mismatches
            and not self.orphans
        )


# -- filling the store ---------------------------------------------------------------------


def _stage(rng: random.Random) -> str:
    r, acc = rng.random(), 0.0
    for stage, share in STAGE_MIX:
        acc += share
        if r < acc:
            return stage
    return "done"


TABLES = {
    "tasks": tasks,
    "jobs": jobs,
    "audit_events": audit_events,
    "webhook_deliveries": webhook_deliveries,
    "stop_records": stop_records,
    "pending_cleanups": pending_cleanups,
}
SERIAL_TABLES = ("tasks", "jobs", "audit_events", "webhook_deliveries", "pending_cleanups")
# (child table, column, parent table): what check_references() looks for, the rows the
# PostgreSQL fill writes with the foreign-key triggers off
REFERENCES = (
    ("jobs", "task_id", "tasks"),
    ("audit_events", "task_id", "tasks"),
    ("stop_records", "task_id", "tasks"),
    ("pending_cleanups", "task_id", "tasks"),
    ("webhook_deliveries", "task_id", "tasks"),
)


def _chunks(size: int, now: float, seed: int) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """The rows of every table, BATCH tasks at a time, parents before their children.
    The running jobs, deferred stops and pending cleanups /queue lists belong to the
    newest tasks that can hold them (the highest ids, so the newest jobs), as in life."""
    pick = random.Random(seed)
    stages = [_stage(pick) for _ in range(size)]
    newest = reversed(range(1, size + 1))
    special: dict[str, set[int]] = {"running": set(), "deferred": set(), "cleanups": set()}
    wanted = {"running": RUNNING_JOBS, "deferred": DEFERRED_STOPS, "cleanups": PENDING_CLEANUPS}
    holds = {"running": set(AGENT_STAGES), "deferred": {"merge"}, "cleanups": {"cancelled"}}
    for task_id in newest:
        for what, chosen in special.items():
            if len(chosen) < wanted[what] and stages[task_id - 1] in holds[what]:
                chosen.add(task_id)
        if all(len(chosen) == wanted[what] for what, chosen in special.items()):
            break
    rng = random.Random(seed + 1)
    batch: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for task_id in range(1, size + 1):
        for name, rows in _task_rows(task_id, stages[task_id - 1], rng, now, special).items():
            batch[name] += rows
        if len(batch["tasks"]) >= BATCH or task_id == size:
            yield batch
            batch = {name: [] for name in TABLES}


def fill(
    engine: Engine,
    size: int,
    now: float,
    seed: int = 7,
    *,
    pg_triggers: bool = False,
    phases: dict[str, float] | None = None,
) -> dict[str, int]:
    """Tasks with jobs, events, deliveries and stop records in proportion: SQLite with
    executemany, every row through migration 0002's count triggers as in the product;
    PostgreSQL with COPY (fill_postgres)."""
    if engine.dialect.name == "postgresql":
        return fill_postgres(engine, size, now, seed, triggers=pg_triggers, phases=phases)
    written = dict.fromkeys(TABLES, 0)
    with engine.begin() as conn:
        for batch in _chunks(size, now, seed):
            for name, rows in batch.items():  # parents first
                if rows:
                    conn.execute(TABLES[name].insert(), _uniform(rows))
                    written[name] += len(rows)
    return written


def fill_postgres(
    engine: Engine,
    size: int,
    now: float,
    seed: int = 7,
    *,
    triggers: bool = False,
    phases: dict[str, float] | None = None,
) -> dict[str, int]:
    """The same rows through psycopg 3's COPY, one transaction per BATCH tasks.

    By default with `session_replication_role = replica`: no count triggers and no
    foreign-key triggers per row (1M tasks are ~13M rows). Then `counts` is recounted
    the way migration 0002's backfill does it, the sequences are moved past the ids
    written, and VACUUM ANALYZE runs (autovacuum would, for an insert-only table too);
    check_counts() and check_references() then prove the counts and the references
    right. With `triggers`, every row goes through the count triggers (migration 0005:
    noted per row, applied at each commit) and the foreign-key checks instead.
    `phases` receives the seconds of "copy", "recount" and "vacuum"."""
    written = dict.fromkeys(TABLES, 0)
    phases = {} if phases is None else phases
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        pg = raw.driver_connection
        assert pg is not None
        with pg.cursor() as cur:
            for batch in _chunks(size, now, seed):
                if not triggers:
                    cur.execute("SET LOCAL session_replication_role = replica")
                for name, rows in batch.items():  # parents first
                    if not rows:
                        continue
                    columns = sorted(set().union(*rows))
                    quoted = ", ".join(f'"{c}"' for c in columns)  # `window` is a keyword
                    statement = f"COPY {name} ({quoted}) FROM STDIN"
                    with cur.copy(statement) as copy:
                        for row in rows:
                            copy.write_row([row.get(c) for c in columns])
                    written[name] += len(rows)
                pg.commit()
            phases["copy"] = time.perf_counter() - started
            started = time.perf_counter()
            if not triggers:
                for table, kind, column in (("tasks", "task", "stage"), ("jobs", "job", "status")):
                    cur.execute(
                        f"INSERT INTO counts (kind, name, n) SELECT '{kind}', {column}, 0 "
                        f"FROM {table} GROUP BY {column} ON CONFLICT (kind, name) DO NOTHING"
                    )
                    cur.execute(
                        f"UPDATE counts SET n = (SELECT count(*) FROM {table} "
                        f"WHERE {table}.{column} = counts.name) WHERE kind = '{kind}'"
                    )
            for name in SERIAL_TABLES:
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"(SELECT max(id) FROM {name}))"
                )
            pg.commit()
            phases["recount"] = time.perf_counter() - started
            started = time.perf_counter()
            pg.autocommit = True
            cur.execute("VACUUM ANALYZE")
            pg.autocommit = False
            phases["vacuum"] = time.perf_counter() - started
    finally:
        raw.close()
    return written


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


def check_references(engine: Engine) -> dict[str, int]:
    """Rows whose task_id names no task, per child table (none expected): the PostgreSQL
    fill writes with the foreign-key triggers off."""
    found: dict[str, int] = {}
    with engine.connect() as conn:
        for child, column, parent in REFERENCES:
            n = conn.execute(
                text(
                    f"SELECT count(*) FROM {child} c WHERE c.{column} IS NOT NULL AND NOT EXISTS "
                    f"(SELECT 1 FROM {parent} p WHERE p.id = c.{column})"
                )
            ).scalar_one()
            if n:
                found[f"{child}.{column}"] = int(n)
    return found


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """executemany wants the same keys in every row: the missing ones are NULL."""
    keys = set().union(*rows)
    return [{key: row.get(key) for key in keys} for row in rows]


def _task_rows(
    task_id: int, stage: str, rng: random.Random, now: float, special: dict[str, set[int]]
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
        live = "running" if task_id in special["running"] else "queued"
        rows["jobs"].append(_job(task_id, stage, live, created, now))
    if stage == "cancelled":
        _cancel(task, rows, rng, created, special)
    if stage == "merge" and task_id in special["deferred"]:
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
    """A job row; a queued one waits a day (a retry's backoff; each its own due time, as
    in life), a running one belongs to a worker of another host whose lease runs for a
    day: neither is touched here."""
    row: dict[str, Any] = dict(
        task_id=task_id, stage=stage, status=status, attempt=1, run_after=at, created_at=at
    )
    if status == "queued":
        row.update(run_after=now + DAY + task_id / 1000)
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
    special: dict[str, set[int]],
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
    if task_id in special["cleanups"]:
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


@dataclass
class Prepared:
    """A filled store, its checks, and the server that answers for it."""

    backend: str
    size: int
    rows: dict[str, int]
    fill_seconds: float
    phases: dict[str, float]
    mismatches: list[tuple[str, str, int, int]]
    orphans: dict[str, int]
    server: Server | None = None
    client: httpx.Client | None = None
    queue: list[float] = field(default_factory=list)
    webhook: list[float] = field(default_factory=list)
    queue_bytes: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    ticket: int = 0

    def point(self) -> Point:
        return Point(
            self.backend,
            self.size,
            self.rows,
            self.fill_seconds,
            summarize(self.queue),
            summarize(self.webhook),
            self.queue_bytes,
            self.statuses,
            self.mismatches,
            self.orphans,
            self.phases,
        )


def prepare(backend: str, size: int, url: str, pg_triggers: bool = False) -> Prepared:
    """Migrate, fill and check one store."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        started = time.perf_counter()
        phases: dict[str, float] = {}
        rows = fill(engine, size, time.time(), pg_triggers=pg_triggers, phases=phases)
        fill_seconds = time.perf_counter() - started
        return Prepared(
            backend,
            size,
            rows,
            fill_seconds,
            phases,
            check_counts(engine),
            check_references(engine),
        )
    finally:
        engine.dispose()


def measure(
    stores: Sequence[Prepared],
    urls: Sequence[str],
    root: Path,
    clone: Path,
    token: str,
    samples: int,
    budget: float,
) -> None:
    """One server per store, all up at once; the samples go round robin over the stores
    (one request at a time), so that every size sees the same machine: on shared cores
    the load moves within minutes, and the ratio against the smallest store is the
    figure that matters."""
    with ExitStack() as stack:
        for store, url in zip(stores, urls, strict=True):
            name = f"{store.backend}-{store.size}"
            doc = settings_doc(
                root,
                clone,
                free_port(),
                database_url=url,
                agents=dict.fromkeys(AGENT_STAGES, "exec sleep 600"),
                workers={"concurrency": 1, "max_runtime_seconds": 7 * DAY},
            )
            doc["server"]["data_dir"] = str(root / f"data-{name}")
            store.server = stack.enter_context(conveyor_server(root, doc, token, name=name))
            store.client = stack.enter_context(httpx.Client(base_url=store.server.url, timeout=60))
            store.ticket = 10 * store.size
        for store in stores:  # warm the pools and the caches
            for _ in range(3):
                _client(store).get("/queue")
        deadline = time.monotonic() + budget * len(stores)
        for _ in range(samples):
            if time.monotonic() >= deadline:
                break
            for store in stores:
                _queue_sample(store)
        deadline = time.monotonic() + budget * len(stores)
        for _ in range(samples // 2 + samples % 2):
            if time.monotonic() >= deadline:
                break
            for store in stores:
                _webhook_sample(store)


def _client(store: Prepared) -> httpx.Client:
    assert store.client is not None
    return store.client


def _count(store: Prepared, status: int) -> None:
    store.statuses[status] = store.statuses.get(status, 0) + 1


def _queue_sample(store: Prepared) -> None:
    started = time.perf_counter()
    answer = _client(store).get("/queue")
    store.queue.append(time.perf_counter() - started)
    _count(store, answer.status_code)
    store.queue_bytes = len(answer.content)


def _webhook_sample(store: Prepared) -> None:
    """Start a fresh ticket, then STOP it: the two routed paths, one request at a time."""
    store.ticket += 1
    ticket = store.ticket
    for state, serial in (("To Analyse", 2 * ticket), ("STOP", 2 * ticket + 1)):
        body = plane_body(ticket, state, stamp(serial))
        started = time.perf_counter()
        answer = _client(store).post("/webhooks/plane", content=body, headers=plane_headers(body))
        store.webhook.append(time.perf_counter() - started)
        _count(store, answer.status_code)


def run(
    *,
    sizes: Sequence[int] = SQLITE_SIZES,
    pg_sizes: Sequence[int] | None = None,
    backends: Sequence[str] = ("sqlite", "postgresql"),
    samples: int = 100,
    budget: float = 10.0,
    pg_url: str | None = None,
    keep: bool = False,
    pg_fill_triggers: bool = False,
) -> ScaleResult:
    """Every size on every backend that is available (`sizes` on SQLite, `pg_sizes` on
    PostgreSQL, None: `sizes` there too); servers and databases cleaned up."""
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
                backend_sizes = pg_sizes if backend == "postgresql" and pg_sizes else sizes
                with ExitStack() as stack:
                    urls = [
                        stack.enter_context(database(backend, root, size, pg))
                        for size in backend_sizes
                    ]
                    stores = [
                        prepare(backend, size, url, pg_fill_triggers)
                        for size, url in zip(backend_sizes, urls, strict=True)
                    ]
                    measure(stores, urls, root, clone, token, samples, budget)
                    result.points += [store.point() for store in stores]
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
            f"{result.vs_base(p, 'queue'):.2f}x",
            p.webhook.n,
            p.webhook.ms("p50"),
            p.webhook.ms("p99"),
            f"{result.vs_base(p, 'webhook'):.2f}x",
        ]
        for p in result.points
    ]
    lines = [
        "queue scale: GET /queue and webhook start+STOP, one request at a time, real `conveyor serve`",
        "floor: the same backend's smallest store (x = p50 / that p50)",
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
                "p50 vs floor",
                "n",
                "webhook p50 ms",
                "webhook p99 ms",
                "p50 vs floor",
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
        top = result.largest(backend)
        if top is None:
            continue
        base = result.base(top)
        p99 = top.queue.p99
        lines.append(
            f"{backend} /queue p99 at {top.size}: {p99 * 1000:.1f} ms "
            f"(target < {TARGET_P99 * 1000:.0f} ms: {verdict(p99 < TARGET_P99)})"
        )
        grown = result.vs_base(top, "webhook")
        lines.append(
            f"{backend} webhook p50 at {top.size}: {top.webhook.ms('p50')} ms vs "
            f"{base.webhook.ms('p50')} ms at {base.size} = {grown:.2f}x "
            f"(target <= {TARGET_WEBHOOK_RATIO}x: {verdict(grown <= TARGET_WEBHOOK_RATIO)})"
        )
    lines += [
        f"{p.backend} {p.size} fill: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in p.fill_phases.items())
        for p in result.points
        if p.fill_phases and p.size >= 100_000
    ]
    lines += [f"skipped: {s}" for s in result.skipped]
    lines += [
        f"counts wrong: {p.backend} {p.size} {kind} {name}: counts table {kept}, rows {real}"
        for p in result.points
        for kind, name, kept, real in p.count_mismatches
    ]
    lines += [
        f"references wrong: {p.backend} {p.size} {ref}: {n} rows name no task"
        for p in result.points
        for ref, n in p.orphans.items()
    ]
    lines.append(
        f"5xx: {result.server_errors}; counts table vs rows: {result.count_mismatches} "
        f"mismatches; rows naming no task: {result.orphans}; survivors: "
        f"{len(result.survivors)}; checks: {'OK' if result.clean else 'FAILED'}"
    )
    return "\n".join(lines)


def _sizes(value: str) -> list[int]:
    return [int(s) for s in value.split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, SQLITE_SIZES)),
        help="task counts on SQLite, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--pg-sizes",
        default=",".join(map(str, PG_SIZES)),
        help="task counts on PostgreSQL (default %(default)s)",
    )
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
        help="fill PostgreSQL through the count and foreign-key triggers (default: off "
        "for the load, then counts recounted and references checked)",
    )
    args = parser.parse_args(argv)
    result = run(
        sizes=_sizes(args.sizes),
        pg_sizes=_sizes(args.pg_sizes),
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
