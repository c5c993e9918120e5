"""Idle workers on the real WorkerPool and a real store (both databases): while nothing
is due they only read, one shared read at a time, and never take the writer for a
claim; a job queued by another process without a wake-up is still claimed by their
poll; a wake-up for one job costs two claims, not one per idle worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.clock import SystemClock
from bot.engine.agents import AgentRegistry
from bot.engine.workers import WorkerPool
from bot.settings import settings_from_dict
from state import jobs
from state.models import Job, NewTask
from state.store import Store, insert_task
from tests.conftest import migrated_store

WORKERS = 10
POLL = 0.02


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    with migrated_store(db_url) as opened:
        yield opened


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[float]:
    """Count calls of `state.jobs.<name>` (the pool looks it up at every call)."""
    calls: list[float] = []
    real = getattr(jobs, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, name, counted)
    return calls


@asynccontextmanager
async def running_pool(store: Store, tmp_path: Path) -> AsyncIterator[tuple[WorkerPool, list[Job]]]:
    """The pool started, and the jobs it ran; stopped on the way out."""
    settings = settings_from_dict(
        {
            "server": {"database_url": "sqlite://", "data_dir": str(tmp_path / "data")},
            "workers": {"concurrency": WORKERS, "poll_interval_seconds": POLL},
        }
    )
    ran: list[Job] = []

    async def run(job: Job) -> None:
        ran.append(job)

    async def crash(job: Job) -> None:
        raise AssertionError(f"job {job.id} crashed")

    workers = WorkerPool(
        settings, store, SystemClock(), AgentRegistry(), asyncio.Event(), run=run, on_crash=crash
    )
    await workers.start()
    try:
        yield workers, ran
    finally:
        await workers.stop()


async def until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def queue_job(store: Store, key: str, run_after: float) -> None:
    new = NewTask(tracker="plane", issue_id=f"iss-{key}", key=key, repo="app", title="t")
    task = store.write(insert_task, new, time.time())
    store.write(jobs.enqueue_job, task.id, "analysis", run_after)


async def test_idle_workers_read_and_do_not_claim_while_nothing_is_due(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = counting(monkeypatch, "claim_next_job")
    looks = counting(monkeypatch, "next_due_at")
    async with running_pool(store, tmp_path) as (_, ran):
        await until(lambda: len(claims) >= WORKERS)  # each worker's first claim
        await until(lambda: len(looks) >= 5)  # a few polls
        # A job due only later: seen by the polls, not claimed before it is due.
        queue_job(store, "APP-1", time.time() + 3600)
        looked = len(looks)
        await until(lambda: len(looks) >= looked + 5)
    assert len(claims) == WORKERS and ran == []
    # One shared read per half interval at most, not one per worker per interval.
    span = looks[-1] - looks[0]
    assert len(looks) <= 2 * (span / (POLL / 2) + 1) + WORKERS


async def test_a_job_queued_without_a_wake_up_is_claimed_by_the_poll(
    store: Store, tmp_path: Path
) -> None:
    async with running_pool(store, tmp_path) as (_, ran):
        await asyncio.sleep(5 * POLL)  # every worker idle
        queue_job(store, "APP-2", time.time())  # as another process would: no wake-up
        await until(lambda: len(ran) == 1)
    assert ran[0].stage == "analysis"


async def test_a_wake_up_for_one_job_costs_two_claims_not_one_per_worker(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = counting(monkeypatch, "claim_next_job")
    async with running_pool(store, tmp_path) as (workers, ran):
        await until(lambda: len(claims) >= WORKERS)  # each worker's first claim
        await asyncio.sleep(5 * POLL)
        before = len(claims)
        queue_job(store, "APP-3", time.time())
        workers.wake.set()  # as `Services.wake_workers` after an enqueue
        await until(lambda: len(ran) == 1)
        await asyncio.sleep(10 * POLL)  # let every woken worker have its say
    # One claim finds the job, one finds the queue empty and answers for the rest; the
    # worker that ran the job looks once more when it is done.
    assert len(ran) == 1
    assert len(claims) - before <= 3, len(claims) - before
