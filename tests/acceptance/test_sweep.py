"""The sweep of a server's own worktrees root: at start-up (and on the finalizer's
schedule) a worktree whose task is terminal, or that no task knows, is removed within
the root; a live task's worktree stays. Counted in /metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.app import create_app
from bot.settings import settings_from_dict
from bot.stopplane import sweep
from state.db import make_engine, upgrade
from state.models import NewTask, Stage
from state.store import Store, get_task, insert_task, update_task
from tests.apptools import app_client
from tests.gitrepo import git, make_repo
from tests.harness import base_settings

NOW = 1_700_000_000.0

pytestmark = pytest.mark.timeout(120)


def add_worktree(clone: Path, root: Path, name: str) -> Path:
    path = root / "app" / name
    git(clone, "worktree", "add", "-q", "-b", f"conveyor/{name.lower()}", str(path), "main")
    return path


def seed_task(store: Store, key: str, stage: Stage, worktree: Path, server: str | None) -> int:
    new = NewTask(tracker="plane", issue_id=f"issue-{key}", key=key, repo="app", title=key)
    task = store.write(insert_task, new, NOW)
    changes = {"stage": stage, "worktree_path": str(worktree), "worktree_server": server}
    if stage is Stage.CANCELLED:
        changes.update(cancelled_at=NOW, outcome="cancelled_graceful")
    store.write(update_task, task, NOW, **changes)
    return task.id


def listed_worktrees(clone: Path) -> list[str]:
    out = git(clone, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


async def test_start_up_sweeps_terminal_and_unknown_worktrees_and_keeps_live_ones(
    tmp_path: Path,
) -> None:
    repo, _ = make_repo(tmp_path)
    doc = base_settings(tmp_path, repo)
    data = Path(doc["server"]["data_dir"])
    root = data / "worktrees"
    engine = make_engine(doc["server"]["database_url"])
    upgrade(engine)
    store = Store(engine)
    cancelled = add_worktree(repo.path, root, "PROJ-9")
    stray = add_worktree(repo.path, root, "STRAY-1")
    live = add_worktree(repo.path, root, "PROJ-10")
    other = add_worktree(repo.path, root, "PROJ-11")  # its task moved to another server
    seed_task(store, "PROJ-9", Stage.CANCELLED, cancelled, None)
    live_id = seed_task(store, "PROJ-10", Stage.IMPLEMENTATION, live, None)
    seed_task(store, "PROJ-11", Stage.REVIEW, other, "another-server-id")
    store.dispose()
    outside = tmp_path / "outside"
    outside.mkdir()

    app = create_app(settings_from_dict(doc))
    async with app_client(app) as client:
        svc = app.state.services
        assert sorted(p.name for p in (root / "app").iterdir()) == ["PROJ-10"]
        assert str(live.resolve()) in listed_worktrees(repo.path)
        assert str(cancelled.resolve()) not in listed_worktrees(repo.path)  # pruned
        assert (await svc.store.run_read(get_task, live_id)).worktree_path == str(live)
        assert outside.is_dir()  # nothing outside the root is touched
        metrics = (await client.get("/metrics")).text
        assert 'conveyor_worktrees_swept_total{result="removed"} 3.0' in metrics

        # On the schedule, a young worktree nobody knows yet is left alone (a worker may
        # be about to record it); an old one goes.
        young = add_worktree(repo.path, root, "YOUNG-1")
        report = await sweep.sweep_worktrees(svc)
        assert report.removed == [] and young.is_dir()
        busy = add_worktree(repo.path, root, "BUSY-1")  # a process works in it
        worker = subprocess.Popen(["sleep", "60"], cwd=busy)
        try:
            report = await sweep.sweep_worktrees(svc, min_age=0.0)
            assert report.removed == [str(young)] and not young.exists()
            assert busy.is_dir()
        finally:
            worker.kill()
            worker.wait()
        report = await sweep.sweep_worktrees(svc, min_age=0.0)
        assert report.removed == [str(busy)]
        assert live.is_dir() and stray.exists() is False
