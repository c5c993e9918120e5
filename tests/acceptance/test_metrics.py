"""GET /metrics after a real STOP: a real agent process, real git, the real app."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from state.models import Stage
from tests.harness import COOPERATIVE_AGENT, Harness, running, wait_until, write_agent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def agents(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "agents"
    d.mkdir(exist_ok=True)
    return {"agents.implementation": write_agent(d, "impl.py", COOPERATIVE_AGENT)}


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(h: Harness) -> str:
    answer = await h.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


async def implementation_running(h: Harness) -> bool:
    task = await h.task()
    started = (h.svc.docs_dir(task.key) / "started").exists()
    return started and any(j.stage == "implementation" and j.pgid for j in await h.jobs(task.id))


async def test_a_graceful_stop_shows_in_the_metrics(tmp_path: Path) -> None:
    async with running(tmp_path, **agents(tmp_path)) as h:
        assert (await h.send("To Analyse")).json()["outcome"] == "started"
        await wait_until(lambda: implementation_running(h), timeout=30, what="agent running")
        during = parse(await scrape(h))
        assert value(during, "conveyor_agent_processes_running") == 1.0
        assert value(during, "conveyor_jobs", status="running") == 1.0
        assert value(during, "conveyor_tasks", stage="implementation") == 1.0

        assert (await h.send("STOP")).json()["outcome"] == "stop_requested"

        async def terminal_observed() -> str | None:
            text = await scrape(h)
            return text if "conveyor_stop_terminal_seconds_count 1.0" in text else None

        text = await wait_until(terminal_observed, timeout=20, what="stop terminal observed")
        task = await h.task()
        assert task.stage is Stage.CANCELLED and task.outcome == "cancelled_graceful"

    assert 'conveyor_stops_total{outcome="cancelled_graceful"} 1.0' in text
    after = parse(text)
    deliveries = "conveyor_webhook_deliveries_total"
    assert value(after, deliveries, tracker="plane", outcome="started") == 1
    assert value(after, deliveries, tracker="plane", outcome="stop_requested") == 1
    assert value(after, "conveyor_stops_total", outcome="stop_requested") == 1
    assert value(after, "conveyor_stops_total", outcome="cancelled_forced") == 0
    assert value(after, "conveyor_stop_group_empty_seconds_count") == 1
    assert 0 < (value(after, "conveyor_stop_group_empty_seconds_sum") or 0) < 1.5
    assert value(after, "conveyor_stop_terminal_seconds_count") == 1
    # The gauges, read from the store at scrape time.
    assert value(after, "conveyor_tasks", stage="cancelled") == 1
    assert value(after, "conveyor_tasks", stage="implementation") == 0
    assert value(after, "conveyor_jobs", status="succeeded") == 1  # analysis
    assert value(after, "conveyor_jobs", status="cancelled") == 1  # implementation
    assert value(after, "conveyor_jobs", status="running") == 0
    assert value(after, "conveyor_agent_processes_running") == 0
    assert value(after, "conveyor_stops_deferred") == 0
    assert value(after, "conveyor_cleanups_pending") == 0


async def test_each_app_counts_on_its_own_registry(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        running(tmp_path / "a") as first,
        running(tmp_path / "b") as second,
    ):
        await first.send_body(b"{}")  # unsigned JSON: refused before anything is stored
        a = parse(await scrape(first))
        b = parse(await scrape(second))
    assert value(a, "conveyor_webhook_deliveries_total", tracker="plane", outcome="refused") == 1
    assert value(b, "conveyor_webhook_deliveries_total", tracker="plane", outcome="refused") is None
