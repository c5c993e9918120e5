"""The finalizer's tick without the app: the services made by hand around a real store
(SQLite and PostgreSQL), a real clone with a bare remote, and a manual clock. A tick
applies deferred stops whose window closed, resumes open stops' resets, retries due
cleanups (settled, or backed off) and drops terminal tasks' expired merge leases.

`svc` is tests/integration/conftest.py's. These are the fast tests the mutation run of `bot/stopplane/finalizer.py` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.services import Services
from bot.stopplane import finalizer
from state import jobs, stops
from state.models import JobStatus, Stage, StopStatus, Task
from state.store import events_for_task, get_task, update_task
from tests.gitrepo import commit_file, git
from tests.integration.stopplane import INTERVAL, NOW, clock, make_task, run_job, stop

BRANCH = "conveyor/APP-1"


async def tick(svc: Services) -> None:
    await finalizer.finalizer_tick(svc)
    await svc.background_tasks_done()


async def status(svc: Services, stop_id: str) -> StopStatus:
    rec = await svc.store.run_read(stops.get_stop, stop_id)
    assert rec is not None
    return rec.status


async def kinds(svc: Services, task: Task) -> list[str]:
    return [e["kind"] for e in await svc.store.run_read(events_for_task, task.id)]


async def stage(svc: Services, task: Task) -> Stage:
    current = await svc.store.run_read(get_task, task.id)
    assert current is not None
    return current.stage


# -- deferred and open stops -------------------------------------------------------------


async def test_a_deferred_stop_is_applied_and_reset_by_the_first_tick_after_its_window(
    svc: Services,
) -> None:
    task = await make_task(svc, Stage.MERGE)
    job = await run_job(svc, task, "merge")
    assert await svc.store.run(jobs.acquire_lease, "app", task.id, NOW - 60, 600.0)
    stop_id = await stop(svc, task)
    assert await status(svc, stop_id) is StopStatus.DEFERRED

    await tick(svc)  # the merge still runs: nothing happens
    assert await status(svc, stop_id) is StopStatus.DEFERRED
    assert await stage(svc, task) is Stage.MERGE
    assert "deferred_stop_applied" not in await kinds(svc, task)

    assert await svc.store.run(
        jobs.finish_job, job.id, job.run_id, JobStatus.SUCCEEDED, NOW + 1, exit_code=0
    )
    clock(svc).t += 10
    await tick(svc)
    assert await status(svc, stop_id) is StopStatus.DONE
    assert await stage(svc, task) is Stage.CANCELLED
    seen = await kinds(svc, task)
    assert seen.index("deferred_stop_applied") < seen.index("cancelled")
    assert await svc.store.run_read(jobs.lease_of_task, task.id) is None  # the reset's


async def test_an_open_stop_whose_reset_was_interrupted_is_resumed_by_a_tick(
    svc: Services,
) -> None:
    tasks = [await make_task(svc, Stage.IMPLEMENTATION, key=f"APP-{n}") for n in (1, 2)]
    stop_ids = [await stop(svc, task) for task in tasks]
    await tick(svc)
    for task, stop_id in zip(tasks, stop_ids, strict=True):
        assert await status(svc, stop_id) is StopStatus.DONE
        assert await stage(svc, task) is Stage.CANCELLED


async def test_a_tick_leaves_a_reset_already_running_here_to_itself(svc: Services) -> None:
    task = await make_task(svc, Stage.IMPLEMENTATION)
    stop_id = await stop(svc, task)
    svc.resets.add(stop_id)  # this process runs it (launch_reset's own bookkeeping)
    await tick(svc)
    assert await status(svc, stop_id) is StopStatus.OPEN  # not launched a second time
    svc.resets.discard(stop_id)
    await tick(svc)
    assert await status(svc, stop_id) is StopStatus.DONE


async def test_a_tick_drops_only_terminal_tasks_expired_merge_leases(svc: Services) -> None:
    done = await make_task(svc, Stage.DEPLOY, key="APP-1")
    live = await make_task(svc, Stage.MERGE, key="APP-2")
    other = "app-twin"  # leases are per repo: a second one needs no clone
    assert await svc.store.run(jobs.acquire_lease, "app", done.id, NOW - 60, 10.0)
    assert await svc.store.run(jobs.acquire_lease, other, live.id, NOW - 60, 10.0)
    await svc.store.run(update_task, done, NOW - 50, stage=Stage.DONE)
    await tick(svc)
    assert await svc.store.run_read(jobs.lease_of_task, done.id) is None
    assert await svc.store.run_read(jobs.lease_of_task, live.id) == other


# -- pending cleanups --------------------------------------------------------------------


async def add_cleanup(
    svc: Services, task: Task, step: str, detail: dict[str, Any], due_in: float = 5.0
) -> None:
    await svc.store.run(
        stops.add_cleanup,
        task_id=task.id,
        stop_id="stop-1",
        step=step,
        detail=detail,
        error="earlier failure",
        now=svc.clock.now(),
        retry_at=svc.clock.now() + due_in,
    )


async def cleanups(svc: Services, task: Task) -> dict[str, dict[str, Any]]:
    return {r["step"]: r for r in await svc.store.run_read(stops.cleanups_for_task, task.id)}


async def audit(svc: Services, task: Task, kind: str) -> dict[str, Any]:
    found = [e for e in await svc.store.run_read(events_for_task, task.id) if e["kind"] == kind]
    assert len(found) == 1, found
    return found[0]


def push_branch(svc: Services, name: str = BRANCH) -> str:
    clone = svc.settings.repos[0].path
    git(clone, "checkout", "-q", "-b", name)
    sha = commit_file(clone, "work.txt", "work\n", "work")
    git(clone, "push", "-q", "origin", name)
    git(clone, "checkout", "-q", "main")
    return sha


def remote_has(svc: Services, name: str = BRANCH) -> bool:
    clone = svc.settings.repos[0].path
    return bool(git(clone, "ls-remote", "--heads", "origin", name))


async def test_a_due_branch_cleanup_deletes_the_branch_and_is_settled(svc: Services) -> None:
    task = await make_task(svc, Stage.CANCELLED)
    sha = push_branch(svc)
    await add_cleanup(svc, task, "remote_branch", {"branch": BRANCH, "sha": sha})
    clock(svc).t += 4.999  # not due yet: not tried
    await finalizer.retry_cleanups(svc)
    assert (await cleanups(svc, task))["remote_branch"]["status"] == "pending"
    assert remote_has(svc)

    clock(svc).t = NOW + 5
    await finalizer.retry_cleanups(svc)
    row = (await cleanups(svc, task))["remote_branch"]
    assert (row["status"], row["resolved_at"]) == ("done", NOW + 5)
    assert row["last_error"] == f"deleted {BRANCH} at {sha}"
    assert not remote_has(svc)
    ev = await audit(svc, task, "cleanup_done")
    assert (ev["at"], ev["stop_id"]) == (NOW + 5, "stop-1")
    assert ev["detail"] == {"step": "remote_branch", "note": f"deleted {BRANCH} at {sha}"}


async def test_a_branch_already_gone_settles_its_cleanup(svc: Services) -> None:
    task = await make_task(svc, Stage.CANCELLED)
    await add_cleanup(svc, task, "remote_branch", {"branch": BRANCH, "sha": "2" * 40})
    clock(svc).t += 5
    await finalizer.retry_cleanups(svc)
    assert (await cleanups(svc, task))["remote_branch"]["status"] == "done"
    assert (await audit(svc, task, "cleanup_done"))["detail"]["note"] == (
        f"{BRANCH} is not on origin"
    )


async def test_a_branch_someone_moved_is_kept_and_shown_as_a_conflict(svc: Services) -> None:
    task = await make_task(svc, Stage.CANCELLED)
    sha = push_branch(svc)
    await add_cleanup(svc, task, "remote_branch", {"branch": BRANCH, "sha": "1" * 40})
    clock(svc).t += 5
    await finalizer.retry_cleanups(svc)
    row = (await cleanups(svc, task))["remote_branch"]
    assert row["status"] == "conflict" and remote_has(svc)
    note = f"remote head moved: {sha} != recorded {'1' * 40}"
    assert row["last_error"] == note
    assert (await audit(svc, task, "cleanup_conflict"))["detail"]["note"] == note
    clock(svc).t += 3600  # settled: never tried again
    await finalizer.retry_cleanups(svc)
    assert (await cleanups(svc, task))["remote_branch"]["attempts"] == 1


async def test_a_protected_branch_is_refused_for_good(svc: Services) -> None:
    task = await make_task(svc, Stage.CANCELLED)
    sha = push_branch(svc, "conveyor/keep-1")
    await add_cleanup(svc, task, "remote_branch", {"branch": "conveyor/keep-1", "sha": sha})
    clock(svc).t += 5
    await finalizer.retry_cleanups(svc)
    row = (await cleanups(svc, task))["remote_branch"]
    assert row["status"] == "refused" and row["last_error"]
    assert "protected" in row["last_error"]
    assert remote_has(svc, "conveyor/keep-1")
    assert (await audit(svc, task, "cleanup_refused"))["detail"]["step"] == "remote_branch"


async def test_a_worktree_cleanup_is_settled_once_the_worktree_is_gone(svc: Services) -> None:
    task = await make_task(svc, Stage.CANCELLED)
    path = svc.worktrees_root / "app" / "gone-already"
    await add_cleanup(svc, task, "worktree", {"path": str(path), "branch": None})
    clock(svc).t += 5
    await finalizer.retry_cleanups(svc)
    row = (await cleanups(svc, task))["worktree"]
    assert row["status"] == "done" and row["last_error"] is None
    ev = await audit(svc, task, "cleanup_done")
    assert ev["detail"] == {"step": "worktree", "note": None}


async def test_a_pull_request_cleanup_without_a_pull_request_is_settled(svc: Services) -> None:
    task = await make_task(svc, Stage.CANCELLED)
    await add_cleanup(svc, task, "pull_request", {"why": "STOP by alice"})
    clock(svc).t += 5
    await finalizer.retry_cleanups(svc)
    row = (await cleanups(svc, task))["pull_request"]
    assert (row["status"], row["last_error"]) == ("done", "no pull request")


@pytest.mark.parametrize("step", ["remote_branch", "worktree", "pull_request"])
async def test_a_cleanup_of_an_unknown_repo_backs_off(svc: Services, step: str) -> None:
    """The repo left the configuration: each step's retry fails the same way and waits."""
    task = await make_task(svc, Stage.CANCELLED, repo="gone")
    detail = {"branch": BRANCH, "sha": "0" * 40, "path": str(svc.worktrees_root / "x")}
    await add_cleanup(svc, task, step, detail)
    clock(svc).t += 5
    await finalizer.retry_cleanups(svc)
    row = (await cleanups(svc, task))[step]
    if step == "pull_request":  # no forge for the repo: nothing to close, settled
        assert row["status"] == "done"
        return
    assert (row["status"], row["attempts"]) == ("pending", 2)
    assert "not configured" in row["last_error"]
    assert row["next_attempt_at"] == NOW + 5 + 2 * INTERVAL


async def test_failed_retries_back_off_doubling_from_the_interval_up_to_the_cap(
    tmp_path: Path, svc: Services
) -> None:
    task = await make_task(svc, Stage.CANCELLED)
    await add_cleanup(svc, task, "remote_branch", {"branch": BRANCH, "sha": "0" * 40})
    (tmp_path / "app-remote.git").rename(tmp_path / "away.git")  # the remote is down
    delays = []
    for _ in range(8):
        row = (await cleanups(svc, task))["remote_branch"]
        clock(svc).t = row["next_attempt_at"]
        await finalizer.retry_cleanups(svc)
        after = (await cleanups(svc, task))["remote_branch"]
        assert after["status"] == "pending" and after["attempts"] == row["attempts"] + 1
        assert after["last_error"] != "earlier failure"
        delays.append(after["next_attempt_at"] - row["next_attempt_at"])
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]
    assert finalizer.MAX_CLEANUP_BACKOFF == 300
    assert "cleanup_done" not in await kinds(svc, task)


async def test_one_failing_cleanup_does_not_hold_up_the_others(svc: Services) -> None:
    failing = await make_task(svc, Stage.CANCELLED, key="APP-1", repo="gone")
    fine = await make_task(svc, Stage.CANCELLED, key="APP-2")
    await add_cleanup(svc, failing, "remote_branch", {"branch": BRANCH, "sha": "0" * 40}, 5.0)
    await add_cleanup(svc, fine, "remote_branch", {"branch": BRANCH, "sha": "0" * 40}, 6.0)
    clock(svc).t += 6  # both due; the failing one comes first
    await finalizer.retry_cleanups(svc)
    assert (await cleanups(svc, failing))["remote_branch"]["status"] == "pending"
    assert (await cleanups(svc, fine))["remote_branch"]["status"] == "done"
    assert await kinds(svc, failing) == []
    assert await kinds(svc, fine) == ["cleanup_done"]


async def test_a_tick_retries_due_cleanups(svc: Services) -> None:
    task = await make_task(svc, Stage.CANCELLED)
    await add_cleanup(svc, task, "remote_branch", {"branch": BRANCH, "sha": "0" * 40})
    clock(svc).t += 5
    await tick(svc)
    assert (await cleanups(svc, task))["remote_branch"]["status"] == "done"
