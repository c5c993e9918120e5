"""The reaper never re-queues a cancelled job, nor a job whose task is being stopped: the
store's conditions under 1,000 interleavings on SQLite and PostgreSQL, then the
scheduled `reaper_tick` against the real app's Services."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, update

from bot.app import create_app
from bot.engine import reaper
from bot.services import Services
from bot.settings import settings_from_dict
from integrations.processes import group_alive, spawn_agent
from state import jobs, stops
from state.models import Job, JobStatus, NewTask, StopStatus
from state.schema import jobs as jobs_table
from state.store import Store, events_for_task, insert_task
from tests.apptools import app_client

NOW = 1_700_000_000.0
LEASE = 5.0
ITERATIONS = 400  # seeded: 156 requeues, 53 and 250 refusals (cancelled, stopping)


def make_task(store: Store, n: int, now: float) -> int:
    new = NewTask(tracker="plane", issue_id=f"iss-{n}", key=f"APP-{n}", repo="app", title="t")
    return store.write(insert_task, new, now).id


def open_stop_for(store: Store, task_id: int, now: float) -> None:
    store.write(
        stops.insert_stop,
        task_id=task_id,
        status=StopStatus.OPEN,
        now=now,
        requested_by="test",
        reason="interleaving",
        correlation_id=None,
        job_id=None,
        run_id=None,
    )


def cancel_and_list(conn: Connection, task_id: int, now: float) -> list[Job]:
    """The reset's "cancel the jobs" step, and what it left behind."""
    jobs.cancel_task_jobs(conn, task_id, now)
    return jobs.jobs_for_task(conn, task_id)


def requeue_and_read(conn: Connection, job: Job, now: float) -> tuple[bool, Job]:
    """A second reaper acting on the same (stale) scan, and the row afterwards."""
    again = jobs.requeue_expired(conn, job, now)
    after = jobs.get_job(conn, job.id)
    assert after is not None
    return again, after


def statuses(conn: Connection, ids: list[int]) -> dict[int, JobStatus]:
    found = (jobs.get_job(conn, i) for i in ids)
    return {j.id: j.status for j in found if j is not None}


class Interleaving:
    """One seeded run of claim / expire / cancel-or-stop / reap, with its bookkeeping."""

    def __init__(self, store: Store, seed: int) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.now = NOW
        self.tasks: list[int] = []
        self.cancelled: set[int] = set()  # job ids ever seen cancelled
        self.stopping: set[int] = set()  # task ids with an open stop
        self.requeued = self.refused_cancelled = self.refused_stopping = 0

    def step(self, n: int) -> None:
        self.now += 10.0
        # The oldest queued job: one re-queued earlier (a new run of it), else a new task's.
        claimed = self.store.write(jobs.claim_next_job, f"w:{n}", self.now, LEASE)
        if claimed is None:
            self.tasks.append(make_task(self.store, n, self.now))
            self.store.write(jobs.enqueue_job, self.tasks[-1], "analysis", self.now)
            claimed = self.store.write(jobs.claim_next_job, f"w:{n}", self.now, LEASE)
        assert claimed is not None and claimed.status is JobStatus.RUNNING
        assert claimed.id not in self.cancelled, "a cancelled job was claimed"
        later = self.now + LEASE + 1.0  # the lease has expired
        if self.rng.random() < 0.5:  # the cancel/stop lands before the reaper's scan …
            self.interfere(claimed, later)
            snapshot = self.store.query(jobs.expired_jobs, later)
            assert not {j.id for j in snapshot} & self.cancelled
        else:  # … or between its scan and its re-queue (the scan is then stale)
            snapshot = self.store.query(jobs.expired_jobs, later)
            self.interfere(claimed, later)
        assert claimed.id in {j.id for j in snapshot} | self.cancelled
        for job in snapshot:
            self.reap(job, later)

    def interfere(self, claimed: Job, now: float) -> None:
        """Cancel the jobs of, or open a stop for, the claimed job's task or an older one."""
        roll = self.rng.random()
        if roll >= 0.9:
            return
        target = claimed.task_id if roll < 0.6 else self.rng.choice(self.tasks)
        if roll < 0.3 or 0.6 <= roll < 0.75:
            self.cancel(target, now)
        elif target not in self.stopping:
            open_stop_for(self.store, target, now)
            self.stopping.add(target)

    def cancel(self, task_id: int, now: float) -> None:
        found = self.store.write(cancel_and_list, task_id, now)
        self.cancelled |= {j.id for j in found if j.status is JobStatus.CANCELLED}

    def reap(self, job: Job, now: float) -> None:
        assert job.status is JobStatus.RUNNING
        ok = self.store.write(jobs.requeue_expired, job, now)
        if job.id in self.cancelled:
            assert not ok, f"cancelled job {job.id} was re-queued"
            self.refused_cancelled += 1
        elif job.task_id in self.stopping:
            assert not ok, f"job {job.id} of a task being stopped was re-queued"
            self.refused_stopping += 1
        else:
            assert ok, f"job {job.id} with an expired lease was not re-queued"
            self.requeued += 1
        again, after = self.store.write(requeue_and_read, job, now)  # a second reaper
        assert not again, f"job {job.id} re-queued twice from one scan"
        if job.id in self.cancelled:
            assert after.status is JobStatus.CANCELLED
        elif job.task_id in self.stopping:
            assert after.status is JobStatus.RUNNING and after.run_id == job.run_id
            if self.rng.random() < 0.5:  # the reset gets to its "cancel the jobs" step
                self.cancel(job.task_id, now)

    def check_all(self) -> None:
        """Every job ever cancelled is still cancelled."""
        seen = self.store.query(statuses, sorted(self.cancelled))
        assert len(seen) == len(self.cancelled)
        assert set(seen.values()) == {JobStatus.CANCELLED}, seen


def test_reaper_never_requeues_a_cancelled_job_or_one_being_stopped(store: Store) -> None:
    run = Interleaving(store, seed=20261121)
    for n in range(ITERATIONS):
        run.step(n)
        if n % 100 == 99:
            run.check_all()
    run.check_all()
    # Every branch was exercised many times: the assertions above were not vacuous.
    assert run.requeued > 40, run.requeued
    assert run.refused_cancelled > 40, run.refused_cancelled
    assert run.refused_stopping > 40, run.refused_stopping


# -- reaper_tick on the app's Services ---------------------------------------------------------


@pytest.fixture
async def services(tmp_path: Path, db_url: str) -> AsyncIterator[Services]:
    """The real app's Services on `db_url` (no workers, no scheduler: we tick by hand)."""
    settings = settings_from_dict(
        {
            "server": {"database_url": db_url, "data_dir": str(tmp_path / "data")},
            "workers": {"lease_seconds": 2},
            "stop": {"grace_seconds": 1},
        }
    )
    holder: dict[str, Services] = {}
    app = create_app(
        settings, configure=lambda svc: holder.setdefault("svc", svc), start_background=False
    )
    async with app_client(app):
        yield holder["svc"]


def dead_worker() -> str:
    """The worker id of a conveyor process on this host that is gone."""
    for pid in (999_999, 4_194_303, 3_999_999):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"{socket.gethostname()}:{pid}:0"
        except PermissionError:
            continue
    raise AssertionError("no free pid found")


def current(store: Store, job_id: int) -> Job:
    job = store.query(jobs.get_job, job_id)
    assert job is not None
    return job


def claim_expired(
    store: Store, task_id: int, *, worker: str | None = None, lease: float = 2, ago: float = 60
) -> Job:
    """Queue and claim a job for the task `ago` seconds back (lease expired by default)."""
    past = time.time() - ago
    store.write(jobs.enqueue_job, task_id, "implementation", past)
    job = store.write(jobs.claim_next_job, worker or dead_worker(), past, lease)
    assert job is not None and job.task_id == task_id
    return job


async def test_reaper_tick_leaves_cancelled_jobs_and_stopping_tasks_alone(
    services: Services, tmp_path: Path
) -> None:
    store = services.store
    now = time.time()
    cancelled_task, raw_task, stopping_task, live_task = (
        make_task(store, n, now) for n in range(4)
    )
    cancelled = claim_expired(store, cancelled_task)
    assert store.write(jobs.cancel_task_jobs, cancelled_task, now) == 1
    # A cancelled row that still carries its expired lease (cancelled by an older path).
    raw = claim_expired(store, raw_task)
    store.write(
        lambda c: c.execute(
            update(jobs_table)
            .where(jobs_table.c.id == raw.id)
            .values(status=JobStatus.CANCELLED.value)
        )
    )
    stopping = claim_expired(store, stopping_task)
    open_stop_for(store, stopping_task, now)
    live = claim_expired(store, live_task)
    # The live job's agent is still running somewhere: the reaper stops it before re-queueing.
    agent = spawn_agent(
        "exec sleep 60", cwd=tmp_path, env=dict(os.environ), log_path=tmp_path / "agent.log"
    )
    store.write(
        jobs.record_process,
        live.id,
        live.run_id or "",
        pid=agent.ref.pid,
        pgid=agent.ref.pgid,
        start_time=agent.ref.start_time,
        log_path=str(tmp_path / "agent.log"),
    )
    try:
        await reaper.reaper_tick(services)
        assert not group_alive(agent.ref.pgid)
    finally:
        if agent.poll() is None:
            os.killpg(agent.ref.pgid, signal.SIGKILL)
        agent.poll()

    after = {i: current(store, i) for i in (cancelled.id, raw.id, stopping.id, live.id)}
    assert after[cancelled.id].status is JobStatus.CANCELLED
    assert after[cancelled.id].finished_at == now  # untouched since the cancel
    assert after[raw.id].status is JobStatus.CANCELLED
    assert after[stopping.id].status is JobStatus.RUNNING
    assert after[stopping.id].run_id == stopping.run_id
    assert after[live.id].status is JobStatus.QUEUED and after[live.id].run_id is None
    assert after[live.id].pgid is None
    # The next claim gets the re-queued live job, never a cancelled one.
    claimed = store.write(jobs.claim_next_job, "w:next", time.time(), 30)
    assert claimed is not None and claimed.id == live.id
    assert store.write(jobs.claim_next_job, "w:next", time.time(), 30) is None
    # A second tick changes nothing more.
    await reaper.reaper_tick(services)
    assert current(store, cancelled.id).status is JobStatus.CANCELLED
    assert current(store, raw.id).status is JobStatus.CANCELLED


# -- a pgid recorded on another host means nothing here ------------------------------------------


def leaderless_group() -> tuple[int, int]:
    """A local process group whose leader has exited: (pgid, surviving member pid). Its
    pgid can be read back from /proc while the leader's start time cannot."""
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        stdout=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    assert leader.stdout is not None
    member = int(leader.stdout.readline())
    leader.stdout.close()
    assert leader.wait() == 0
    assert group_alive(leader.pid)
    return leader.pid, member


@pytest.mark.parametrize("tick", ["reaper", "watchdog"])
async def test_a_job_of_another_host_never_gets_a_local_process_group_signalled(
    services: Services, tick: str
) -> None:
    store = services.store
    task_id = make_task(store, 0, time.time())
    pgid, member = leaderless_group()
    try:
        if tick == "reaper":  # the other host went away: its lease expired
            job = claim_expired(store, task_id, worker="other-host:4242:0")
        else:  # the other host is alive and over its max runtime: its own watchdog acts
            job = claim_expired(store, task_id, worker="other-host:4242:0", lease=1e6, ago=1e5)
        store.write(
            jobs.record_process,
            job.id,
            job.run_id or "",
            pid=pgid,
            pgid=pgid,
            start_time=123_456,  # ticks since the other machine booted
            log_path="/elsewhere/agent.log",
        )
        await getattr(reaper, f"{tick}_tick")(services)
        assert group_alive(pgid), f"the {tick} killed a local process group ({member})"
        after = current(store, job.id)
        expected = JobStatus.QUEUED if tick == "reaper" else JobStatus.RUNNING
        assert after.status is expected
        trail = store.query(events_for_task, task_id)
        assert [e for e in trail if e["kind"] == "watchdog_stopped"] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
