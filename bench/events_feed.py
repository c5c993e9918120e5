"""The dashboard's change feed (`GET /events`): what one poll of the store costs with 1k,
10k and 100k tasks, beside the bare floor of asking the store anything at all.

The store is filled as `bench/queue_scale.py` fills it (mostly finished tasks, some live,
jobs, audit events and stop records in proportion). A poll is `bot.ui.feed.poll_once` in one
read transaction: a fingerprint (the trigger-kept counts per stage and status, the newest
audit event and job ids, the open stops) and, only when it moved (or every 2 s), the whole
diff: the live tasks, live jobs and open stops against the previous snapshot, and the
audit events past the cursor. Both are measured: the steady-state poll (nothing moved)
and the whole diff. The floor is the cheapest question that could tell a poller anything
changed: `SELECT max(id) FROM audit_events` in its own read transaction. The feed polls
four times a second while anyone listens and not at all otherwise; what matters is that
the steady-state poll stays flat as the store grows.

    python bench/events_feed.py [--sizes 1000,10000,100000] [--samples 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/events_feed.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from bench.common import Summary, ratio, summarize, table  # noqa: E402
from bench.queue_scale import fill  # noqa: E402
from bot.ui.feed import poll_once, start_snapshot  # noqa: E402
from state.db import make_engine, upgrade  # noqa: E402
from state.schema import audit_events  # noqa: E402
from state.store import Store  # noqa: E402


@dataclass(frozen=True)
class Point:
    size: int
    live_tasks: int
    floor: Summary
    poll: Summary  # the steady state: the fingerprint says nothing moved
    full: Summary  # the whole diff (when something moved, and every 2 s anyway)

    @property
    def ratio_p50(self) -> float:
        return ratio(self.poll.p50, self.floor.p50)


def _floor(conn: object) -> int:
    return int(conn.execute(select(func.max(audit_events.c.id))).scalar() or 0)  # type: ignore[attr-defined]


def measure(size: int, samples: int, root: Path) -> Point:
    engine = make_engine(f"sqlite:///{root / f'feed-{size}.db'}")
    upgrade(engine)
    fill(engine, size, time.time())
    store = Store(engine)
    try:
        seen = store.query(start_snapshot)
        floor: list[float] = []
        poll: list[float] = []
        full: list[float] = []
        for _ in range(samples):  # interleaved, so all three see the same machine
            started = time.perf_counter()
            store.query(_floor)
            floor.append(time.perf_counter() - started)
            started = time.perf_counter()
            seen, changes, whole = store.query(poll_once, seen)
            poll.append(time.perf_counter() - started)
            assert changes == [] and not whole, changes  # nothing moved: the fast path
            started = time.perf_counter()
            seen, changes, whole = store.query(poll_once, seen, force=True)
            full.append(time.perf_counter() - started)
            assert changes == [] and whole, changes
        return Point(size, len(seen.tasks), summarize(floor), summarize(poll), summarize(full))
    finally:
        store.dispose()


def run(sizes: Sequence[int], samples: int) -> list[Point]:
    with tempfile.TemporaryDirectory(prefix="conveyor-feed-") as tmp:
        return [measure(size, samples, Path(tmp)) for size in sizes]


def render(points: Sequence[Point]) -> str:
    rows = [
        (
            p.size,
            p.live_tasks,
            p.floor.ms("p50"),
            p.floor.ms("p99"),
            p.poll.ms("p50"),
            p.poll.ms("p99"),
            f"{p.ratio_p50:.1f}x",
            p.full.ms("p50"),
            p.full.ms("p99"),
        )
        for p in points
    ]
    header = (
        "tasks",
        "live",
        "floor p50 ms",
        "floor p99 ms",
        "poll p50 ms",
        "poll p99 ms",
        "poll/floor",
        "full diff p50 ms",
        "full diff p99 ms",
    )
    lines = [table(header, rows)]
    if len(points) > 1:
        growth = ratio(points[-1].poll.p50, points[0].poll.p50)
        full = ratio(points[-1].full.p50, points[0].full.p50)
        lines.append(
            f"from {points[0].size} to {points[-1].size} tasks the steady-state poll p50 grows "
            f"{growth:.1f}x, the full diff {full:.1f}x (it reads what is live). SQLite; the "
            "feed polls every 0.25 s, the full diff when something moved or every 2 s, and "
            "only while someone listens"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(render(run(sizes, args.samples)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
