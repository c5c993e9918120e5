"""Two worker pools (two conveyor processes, say) on one PostgreSQL database: the real
WorkerPool, each with its own engine; every job is run once, never twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from bot.clock import SystemClock
from bot.engine.agents import AgentRegistry
from bot.engine.workers import WorkerPool
from bot.settings import settings_from_dict
from state import jobs
from state.db import make_engine
from state.models import Job, JobStatus, NewTask
from state.store import Store, insert_task

JOBS = 60


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_two_pools_on_one_database_never_run_a_job_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = settings_from_dict(
        {
            "server": {"database_url": postgres_url, "data_dir": str(tmp_path / "data")},
            "workers": {"concurrency": 4, "poll_interval_seconds": 0.01, "lease_seconds": 30},
        }
    )
    stores = [Store(make_engine(postgres_url)) for _ in range(2)]
    now = time.time()
    for n in range(JOBS // 3):
        task = stores[0].write(
            insert_task,
            NewTask(tracker="plane", issue_id=f"i{n}", key=f"APP-{n}", repo="app", title="t"),
            now,
        )
        for stage in ("analysis", "implementation", "review"):
            stores[0].write(jobs.enqueue_job, task.id, stage, now)

    runs: list[tuple[str, int, str]] = []

    def runner(name: str, store: Store):  # type: ignore[no-untyped-def]
        async def run(job: Job) -> None:
            runs.append((name, job.id, job.run_id or ""))
            await asyncio.sleep(0.005)  # let the other pool's claims interleave
            finished = await store.run(
                jobs.finish_job, job.id, job.run_id or "", JobStatus.SUCCEEDED, time.time()
            )
            assert finished, f"job {job.id} was not this run's to finish"

        return run

    async def noop(job: Job) -> None:
        raise AssertionError(f"job {job.id} crashed")

    pools = [
        WorkerPool(
            settings,
            store,
            SystemClock(),
            AgentRegistry(),
            asyncio.Event(),
            run=runner(f"pool{i}", store),
            on_crash=noop,
        )
        for i, store in enumerate(stores)
    ]
    try:
        for pool in pools:
            await pool.start()
        deadline = time.monotonic() + 60
        while len(runs) < JOBS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a job run twice would show up now
    finally:
        for pool in pools:
            await pool.stop()
    counts = Counter(job_id for _, job_id, _ in runs)
    assert len(counts) == JOBS and set(counts.values()) == {1}, counts.most_common(3)
    assert len({run_id for _, _, run_id in runs}) == JOBS
    by_pool = Counter(name for name, _, _ in runs)
    assert set(by_pool) == {"pool0", "pool1"}, by_pool  # both pools really took part
    done = stores[0].query(lambda c: jobs.running_jobs(c))
    assert done == []
    for store in stores:
        store.dispose()
