"""Play a plan of requests against a server through the load generator's own process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import Summary, child_env, ratio, summarize


@dataclass(frozen=True)
class Answer:
    index: int
    status: int
    latency: float
    outcome: str


@dataclass(frozen=True)
class LoadResult:
    """What one load-generator run saw."""

    elapsed: float
    answers: list[Answer]
    errors: int
    error_samples: list[object]
    connections: int

    @property
    def throughput(self) -> float:
        return ratio(len(self.answers), self.elapsed)

    @property
    def latency(self) -> Summary:
        return summarize([a.latency for a in self.answers])

    @property
    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(a.outcome for a in self.answers)


def write_plan(path: Path, items: Iterable[tuple[str, Mapping[str, str], bytes]]) -> int:
    """Write (path, headers, body) requests as the load generator's JSON lines."""
    count = 0
    with open(path, "w") as out:
        for url_path, headers, body in items:
            doc = {"path": url_path, "headers": dict(headers), "body": body.decode()}
            out.write(json.dumps(doc) + "\n")
            count += 1
    return count


def drive(
    port: int,
    plan: Path,
    out: Path,
    token: str,
    *,
    concurrency: int,
    max_seconds: float,
    rate: float | None = None,
) -> LoadResult:
    """Run `python -m bench.loadgen` against 127.0.0.1:<port> and read its report."""
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(port),
        "--plan",
        str(plan),
        "--out",
        str(out),
        "--concurrency",
        str(concurrency),
        "--max-seconds",
        str(max_seconds),
    ]
    if rate:
        argv += ["--rate", str(rate)]
    subprocess.run(argv, env=child_env(token), check=True, timeout=max_seconds + 120)
    doc = json.loads(out.read_text())
    return LoadResult(
        elapsed=float(doc["elapsed"]),
        answers=[Answer(int(i), int(s), float(lat), str(o)) for i, s, lat, o in doc["results"]],
        errors=int(doc["errors"]),
        error_samples=list(doc["error_samples"]),
        connections=int(doc["connections"]),
    )
