"""The services made by hand around a real store (SQLite and PostgreSQL), a real clone
with a bare remote and a manual clock, for the stop plane's fast tests
(test_finalizer.py, test_stop_request.py): no app, no workers, no scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from bot.services import Services
from bot.settings import settings_from_dict
from bot.stopplane.intent import decide_stop
from state import jobs
from state.models import Job, NewTask, ServerIdentity, Stage, Task
from state.store import insert_task
from tests.conftest import migrated_store
from tests.gitrepo import make_repo
from tests.harness import ManualClock

NOW = 1_796_035_300.0
INTERVAL = 5.0


async def services(tmp_path: Path, db_url: str) -> AsyncIterator[Services]:
    """Services on a migrated store at `db_url`, a clone `app` with its bare remote under
    `tmp_path`, no tracker; background work is let finish before the store closes."""
    repo, _ = make_repo(tmp_path)
    settings = settings_from_dict(
        {
            "server": {"database_url": db_url, "data_dir": str(tmp_path / "data")},
            "stop": {"grace_seconds": 1, "finalizer_interval_seconds": INTERVAL},
            "repos": [
                {"name": "app", "path": str(repo.path), "protected_branches": ["conveyor/keep-*"]}
            ],
        }
    )
    with migrated_store(db_url) as store:
        services = Services(
            settings=settings,
            store=store,
            clock=ManualClock(NOW),
            server=ServerIdentity("server-a", "host-a"),
        )
        try:
            yield services
        finally:
            await services.background_tasks_done()


def clock(svc: Services) -> ManualClock:
    assert isinstance(svc.clock, ManualClock)
    return svc.clock


async def make_task(svc: Services, stage: Stage, key: str = "APP-1", repo: str = "app") -> Task:
    new = NewTask(tracker="plane", issue_id=f"iss-{key}", key=key, repo=repo, stage=stage)
    return await svc.store.run(insert_task, new, NOW - 100)


async def run_job(svc: Services, task: Task, stage: str) -> Job:
    await svc.store.run(jobs.enqueue_job, task.id, stage, NOW - 80)
    job = await svc.store.run(jobs.claim_next_job, "w0", NOW - 70, 600.0, server=svc.server)
    assert job is not None and job.task_id == task.id
    return job  # type: ignore[no-any-return]


async def stop(svc: Services, task: Task) -> str:
    """The stop decided and committed, its reset not launched (as after a crash)."""
    result = await svc.store.run(decide_stop, task.id, "alice", "", None, svc.clock.now())
    assert result.new and result.stop_id
    return result.stop_id  # type: ignore[no-any-return]
