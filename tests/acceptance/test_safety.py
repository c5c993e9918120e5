"""Other people's work is safe whatever the store or the configuration says: no default
or protected branch deleted, no path outside the data directory removed, no process
conveyor did not start signalled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from integrations.processes import read_start_time
from state.jobs import jobs_for_task
from state.schema import jobs as jobs_table
from state.schema import tasks as tasks_table
from state.store import events_for_task
from tests.acceptance.test_stop import COOPERATIVE_AGENT, agents, cancelled, running_job
from tests.harness import Harness, running


async def _force(h: Harness, table, row_id: int, **values) -> None:  # type: ignore[no-untyped-def]
    def write(conn) -> None:  # type: ignore[no-untyped-def]
        conn.execute(table.update().where(table.c.id == row_id).values(**values))

    await h.store.run(write)


@pytest.mark.parametrize("hostile", ["main", "Main", "refs/heads/main", "release/1.0", " main"])
async def test_a_recorded_default_or_protected_branch_is_never_deleted(
    tmp_path: Path, hostile: str
) -> None:
    repo = {"protected_branches": ["release/*"]}
    async with running(tmp_path, repo_settings=repo, **agents(tmp_path, COOPERATIVE_AGENT)) as h:
        from tests.gitrepo import git

        git(h.repo.path, "push", "-q", "origin", "main:refs/heads/release/1.0")
        await h.send("To Analyse")
        await running_job(h)
        task = await h.task()
        target = hostile.strip().removeprefix("refs/heads/")
        sha = h.remote_sha("main" if target.lower() == "main" else target)
        await _force(h, tasks_table, task.id, branch=hostile, branch_sha=sha)
        before = {b: h.remote_sha(b) for b in h.remote_branches()}
        await h.send("STOP")
        done = await cancelled(h)
        after = {b: h.remote_sha(b) for b in h.remote_branches()}
        assert after.get("main") == before["main"]
        assert after.get("release/1.0") == before["release/1.0"]
        kinds = [e["kind"] for e in await h.store.run_read(events_for_task, done.id)]
        assert "branch_refused" in kinds


async def test_a_worktree_path_outside_the_data_dir_is_never_removed(tmp_path: Path) -> None:
    async with running(tmp_path, **agents(tmp_path, COOPERATIVE_AGENT)) as h:
        precious = tmp_path / "precious"
        precious.mkdir()
        (precious / "keep.txt").write_text("mine")
        await h.send("To Analyse")
        await running_job(h)
        task = await h.task()
        for hostile in (
            str(precious),
            str(h.svc.worktrees_root / "app" / ".." / ".." / ".." / "precious"),
        ):
            await _force(h, tasks_table, task.id, worktree_path=hostile)
        await h.send("STOP")
        done = await cancelled(h)
        assert (precious / "keep.txt").read_text() == "mine"
        kinds = [e["kind"] for e in await h.store.run_read(events_for_task, done.id)]
        assert "worktree_refused" in kinds


async def test_a_process_conveyor_did_not_start_is_never_signalled(tmp_path: Path) -> None:
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        async with running(tmp_path, **agents(tmp_path, COOPERATIVE_AGENT)) as h:
            await h.send("To Analyse")
            job = await running_job(h)
            start = read_start_time(stranger.pid)
            assert start is not None
            # The store now claims the job runs as the stranger (pid recycled, say) with a
            # start time that does not match: conveyor must refuse to signal it.
            await _force(
                h,
                jobs_table,
                job.id,
                pid=stranger.pid,
                pgid=stranger.pid,
                proc_start_time=start + 1,
            )
            await h.send("STOP")
            done = await cancelled(h)
            assert stranger.poll() is None, "a process conveyor did not start was signalled"
            rows = await h.store.run_read(jobs_for_task, done.id)
            assert all(r.status.value in ("succeeded", "cancelled") for r in rows)
            from state import stops

            rec = (await h.store.run_read(stops.stops_for_task, done.id))[0]
            assert stops.stop_steps(rec)["processes"]["refused"] == 1
            # The real agent (in the worker's registry) was still stopped.
            from integrations.processes import processes_with_env

            assert processes_with_env("CONVEYOR_RUN_ID", job.run_id or "") == []
    finally:
        stranger.kill()
        stranger.wait()
