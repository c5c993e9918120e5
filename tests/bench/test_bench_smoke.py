"""Every benchmark at tiny sizes: it runs, cleans up, and its numbers are sane (positive,
ratios finite, no 5xx, no survivors). Never a timing threshold: the machine is shared."""

from __future__ import annotations

import math

import pytest

from bench import (
    cli_startup,
    deferred_stop,
    queue_scale,
    reconcile,
    reset_cost,
    stop_latency,
    webhook_intake,
)

pytestmark = pytest.mark.slow


def sane(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_webhook_intake_smoke() -> None:
    result = webhook_intake.run(
        requests=120, concurrency=4, rate=40, rate_seconds=1, max_seconds=30
    )
    assert result.server_errors == 0 and result.transport_errors == 0
    assert result.store.clean, result.store
    assert result.store.keys_sent > 0 and result.store.tickets_started > 0
    assert sane(result.bare.throughput) and sane(result.conveyor.throughput)
    assert sane(result.throughput_ratio)
    assert sane(result.conveyor.latency.p99) and sane(result.conveyor_rate.latency.p99)
    assert result.conveyor.outcomes["duplicate"] > 0 and result.conveyor.outcomes["started"] > 0
    assert all(math.isfinite(s) for s in result.drained.values())
    assert result.survivors == [] and result.clean
    assert "throughput conveyor/bare" in webhook_intake.render(result)


def test_stop_latency_smoke() -> None:
    result = stop_latency.run(tasks=2, grace=1.0)
    assert result.clean, (result.wrong_outcomes, result.unfinished, result.survivors)
    for side in (result.floor, result.conveyor):
        assert sorted(side.empty) == [1, 2]
        assert all(sane(v) for v in side.empty.values())
    assert sorted(result.conveyor.terminal) == sorted(result.conveyor.answered) == [1, 2]
    assert all(sane(v) for v in result.conveyor.terminal.values())
    assert math.isfinite(result.cooperative_overhead)
    assert "conveyor p99 - floor p99" in stop_latency.render(result)


def test_reset_cost_smoke() -> None:
    result = reset_cost.run(tasks=2)
    assert result.clean, (result.problems, result.survivors)
    assert len(result.floor) == len(result.conveyor) == len(result.stopping) == 2
    assert all(sane(v) for v in result.floor + result.conveyor + result.agent_stop)
    assert sane(result.ratio_total) and sane(result.ratio_p50) and sane(result.ratio_guarded)
    assert sane(result.ratio_stopping)
    # the stopping floor is the agent's stop plus the guarded git (never a speed check)
    assert all(s > a for s, a in zip(result.stopping, result.agent_stop, strict=True))
    assert set(result.steps) >= {"processes", "worktree", "remote_branch", "terminal"}
    assert "conveyor/stopping floor" in reset_cost.render(result)


def test_deferred_stop_smoke() -> None:
    result = deferred_stop.run(tasks=1, interval=0.5, merge_seconds=0.5)
    assert result.ok, (result.problems, result.survivors)
    assert len(result.applied) == len(result.terminal) == len(result.closed) == 1
    assert result.floor and all(sane(v) for v in result.floor)
    assert result.applied[0] >= 0 and result.closed[0] >= result.applied[0]
    assert "merged -> deferred stop applied" in deferred_stop.render(result)


def test_queue_scale_smoke() -> None:
    backends = ["sqlite"]
    if queue_scale.postgres_url(None):
        backends.append("postgresql")
    result = queue_scale.run(
        sizes=[100, 300], pg_sizes=[100, 300], backends=backends, samples=5, budget=5.0
    )
    assert result.clean and result.server_errors == 0
    assert result.count_mismatches == 0  # migration 0002's counts agree with the rows
    assert result.orphans == 0  # the COPY fill (no FK triggers) names only real tasks
    assert len(result.points) == 2 * len(backends)
    for point in result.points:
        assert point.rows["tasks"] == point.size and point.rows["jobs"] > point.size
        assert sane(point.queue.p50) and sane(point.webhook.p99) and point.queue_bytes > 0
    for backend in backends:
        assert all(sane(factor) for _, _, factor in result.growth(backend, "queue"))
    for point in result.points:
        assert sane(result.vs_base(point, "queue")) and sane(result.vs_base(point, "webhook"))
    text = queue_scale.render(result)
    assert "growth per 10x" in text and "webhook p50 at 300" in text


def test_reconcile_smoke() -> None:
    result = reconcile.run(sizes=[5, 20], passes=2, tasks=2, interval=1.0)
    assert result.clean, (result.latency.problems, result.survivors)
    assert [row.live for row in result.rows] == [5, 20, 20]
    for row in result.rows:
        assert len(row.conveyor) == len(row.floor) == 2
        assert all(sane(v) for v in row.conveyor + row.floor)
        assert all(n >= 2 for n in row.requests) and row.floor_requests >= 2
    assert len(result.latency.reconcile) == len(result.latency.webhook) == 1
    assert all(sane(v) for v in result.latency.reconcile + result.latency.webhook)
    assert "a pass finds it" in reconcile.render(result.rows, result.latency, 1.0)


def test_cross_host_stop_smoke() -> None:
    from bench import cross_host_stop
    from bench.two_servers import unshare_problem

    url = queue_scale.postgres_url(None)
    if not url:
        pytest.skip("cross_host_stop needs PostgreSQL (CONVEYOR_TEST_POSTGRES_URL)")
    if problem := unshare_problem():
        pytest.skip(f"cross_host_stop needs a second host name: {problem}")
    result = cross_host_stop.run(tasks=2, grace=1.0, postgres_url=url)
    assert result.clean, (result.same.problems, result.cross.problems, result.survivors)
    for rnd in (result.same, result.cross):
        assert len(rnd.side.empty) == 2 and all(sane(v) for v in rnd.side.empty.values())
    assert "other host" in cross_host_stop.render(result)


def test_cli_startup_smoke() -> None:
    result = cli_startup.run(repeats=2)
    assert result.clean, (result.failures, result.survivors)
    assert all(len(v) == 2 and all(sane(t) for t in v) for v in result.times.values())
    assert sane(result.floor)
    assert "python -c pass (floor)" in cli_startup.render(result)
