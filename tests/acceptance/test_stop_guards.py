"""Guards that only show when something else has already gone wrong: the worker's re-check
between claim and spawn, a protected pattern inside conveyor's own branch namespace, and
the cleanup backoff, driven by a manual clock so the schedule is checked, not waited for."""

from __future__ import annotations

import contextlib
from pathlib import Path

from bot.engine import dispatch
from bot.engine.workers import worker_prefix
from bot.stopplane import finalizer
from bot.stopplane.intent import decide_stop, launch_reset
from integrations.processes import processes_with_env
from state import jobs, stops
from state.models import Job, JobStatus, Stage
from state.schema import tasks as tasks_table
from state.store import events_for_task, find_task, get_task
from tests.acceptance.intake import deliver, make_settings, sample
from tests.acceptance.intake import running as intake_running
from tests.acceptance.test_stop import agents, cancelled, running_job
from tests.gitrepo import git
from tests.harness import (
    COMMITTING_AGENT,
    COOPERATIVE_AGENT,
    ManualClock,
    running,
    wait_until,
    write_agent,
)

# Leaves a mark if it ever runs: the re-check must keep it from being spawned at all.
MARKING_AGENT = 'touch "$CONVEYOR_DOCS_DIR/implementation-ran"\n'


async def _claim(svc, stage: str) -> Job:  # type: ignore[no-untyped-def]
    job = await svc.store.run(
        jobs.claim_next_job,
        f"{worker_prefix()}0",
        svc.clock.now(),
        svc.settings.workers.lease_seconds,
    )
    assert job is not None and job.stage == stage, job
    return job  # type: ignore[no-any-return]


async def test_a_stop_between_claim_and_spawn_of_an_implementation_job_spawns_nothing(
    tmp_path: Path,
) -> None:
    scripts = tmp_path / "scripts"
    settings = make_settings(
        tmp_path,
        agents={
            "analysis": write_agent(scripts, "analysis.sh", COMMITTING_AGENT),
            "implementation": write_agent(scripts, "impl.sh", MARKING_AGENT),
        },
    )
    # No worker pool runs here: the test claims each job as a worker would, and runs it
    # through the worker's own dispatcher, so the stop lands exactly between the two.
    async with intake_running(settings) as (client, svc):
        assert (await deliver(client, sample("v1_state_to_analyse"))).json()["outcome"] == "started"
        await dispatch.execute(svc, await _claim(svc, "analysis"))
        job = await _claim(svc, "implementation")
        task = await svc.store.run_read(find_task, "PROJ-42")
        assert task is not None and task.worktree_path and Path(task.worktree_path).is_dir()

        # The stop's intent commits after the claim and before the spawn.
        result = await svc.store.run(
            decide_stop, task.id, "plane:ada", "test", None, svc.clock.now()
        )
        assert result.outcome == "stop_requested"
        await dispatch.execute(svc, job)

        row = await svc.store.run_read(jobs.get_job, job.id)
        assert row is not None and row.pid is None and row.pgid is None and row.log_path is None
        assert not (svc.logs_dir(task.key) / f"{job.id}.log").exists()
        assert not (svc.docs_dir(task.key) / "implementation-ran").exists()
        assert processes_with_env("CONVEYOR_RUN_ID", job.run_id or "") == []

        # The reset then finishes as usual: the claimed job is cancelled, never run.
        launch_reset(svc, result.stop_id or "")

        async def cancelled():  # type: ignore[no-untyped-def]
            current = await svc.store.run_read(get_task, task.id)
            return current if current is not None and current.stage is Stage.CANCELLED else None

        await wait_until(cancelled, timeout=30, what="task cancelled")
        row = await svc.store.run_read(jobs.get_job, job.id)
        assert row is not None and row.status is JobStatus.CANCELLED and row.pid is None


async def test_a_protected_pattern_inside_conveyors_namespace_is_never_deleted(
    tmp_path: Path,
) -> None:
    # conveyor/keep-1 is inside conveyor's own namespace (the namespace rule allows it),
    # is the task's recorded branch at its recorded SHA (those rules allow it too): only
    # the repo's protected pattern stands between it and a deletion.
    repo = {"protected_branches": ["conveyor/keep-*"]}
    async with running(tmp_path, repo_settings=repo, **agents(tmp_path, COOPERATIVE_AGENT)) as h:
        await h.send("To Analyse")
        await running_job(h)
        git(h.repo.path, "push", "-q", "origin", "main:refs/heads/conveyor/keep-1")
        kept = h.remote_sha("conveyor/keep-1")
        task = await h.task()

        def record(conn) -> None:  # type: ignore[no-untyped-def]
            conn.execute(
                tasks_table.update()
                .where(tasks_table.c.id == task.id)
                .values(branch="conveyor/keep-1", branch_sha=kept)
            )

        await h.store.run(record)
        assert (await h.send("STOP")).json()["outcome"] == "stop_requested"
        done = await cancelled(h)
        assert h.remote_sha("conveyor/keep-1") == kept  # still there, untouched
        rec = (await h.store.run_read(stops.stops_for_task, done.id))[0]
        step = stops.stop_steps(rec)["remote_branch"]
        assert step["deleted"] is False and step["outcome"] == "refused", step
        assert "protected" in step["reason"]
        kinds = [e["kind"] for e in await h.store.run_read(events_for_task, done.id)]
        assert "branch_refused" in kinds
        # A refusal is final: no pending cleanup, and a finalizer pass leaves it alone.
        assert await h.store.run_read(stops.cleanups_for_task, done.id) == []
        await finalizer.finalizer_tick(h.svc)
        assert "conveyor/keep-1" in h.remote_branches()


@contextlib.asynccontextmanager
async def started_with_remote_down(tmp_path: Path):  # type: ignore[no-untyped-def]
    """PROJ-42 started on a manual clock (finalizer interval 5 s), then its bare remote
    moved to `tmp_path / "away.git"` so that every push to it fails: (svc, task, clock)."""
    clock = ManualClock()
    settings = make_settings(tmp_path, stop={"finalizer_interval_seconds": 5})

    def configure(svc) -> None:  # type: ignore[no-untyped-def]
        svc.clock = clock

    async with intake_running(settings, configure=configure) as (client, svc):
        assert (await deliver(client, sample("v1_state_to_analyse"))).json()["outcome"] == "started"
        task = await svc.store.run_read(find_task, "PROJ-42")
        assert task is not None
        (tmp_path / "app-remote.git").rename(tmp_path / "away.git")
        yield svc, task, clock


async def test_cleanup_retries_double_from_the_interval_and_stop_at_the_cap(
    tmp_path: Path,
) -> None:
    bare = tmp_path / "app-remote.git"
    async with started_with_remote_down(tmp_path) as (svc, task, clock):  # every retry fails
        await svc.store.run(
            stops.add_cleanup,
            task_id=task.id,
            stop_id=None,
            step="remote_branch",
            detail={"branch": "conveyor/PROJ-42", "sha": "0" * 40},
            error="remote down",
            now=clock.now(),
            retry_at=clock.now() + 5,
        )

        async def row():  # type: ignore[no-untyped-def]
            return (await svc.store.run_read(stops.cleanups_for_task, task.id))[0]

        delays = []
        for _ in range(8):
            due = (await row())["next_attempt_at"]
            clock.t = due - 0.001  # not due yet: nothing is tried
            attempts = (await row())["attempts"]
            await finalizer.retry_cleanups(svc)
            assert (await row())["attempts"] == attempts
            clock.t = due
            await finalizer.retry_cleanups(svc)
            current = await row()
            assert current["status"] == "pending" and current["attempts"] == attempts + 1
            assert current["last_error"]
            delays.append(current["next_attempt_at"] - due)
        assert delays == [10, 20, 40, 80, 160, 300, 300, 300]

        (tmp_path / "away.git").rename(bare)  # back: the next due retry settles it
        clock.t = (await row())["next_attempt_at"]
        await finalizer.retry_cleanups(svc)
        assert (await row())["status"] == "done"  # the branch was never pushed: missing


async def test_one_failing_cleanup_does_not_hold_up_the_others_in_a_tick(
    tmp_path: Path,
) -> None:
    """Two cleanups due in one finalizer tick, the first failing (its remote is down):
    the second is still retried and settled, and each outcome is in the audit."""
    async with started_with_remote_down(tmp_path) as (svc, task, clock):
        for retry_at, step, detail in (
            (5.0, "remote_branch", {"branch": "conveyor/PROJ-42", "sha": "0" * 40}),
            (6.0, "worktree", {"path": str(svc.worktrees_root / "app" / "gone-already")}),
        ):
            await svc.store.run(
                stops.add_cleanup,
                task_id=task.id,
                stop_id=None,
                step=step,
                detail=detail,
                error="earlier failure",
                now=clock.now(),
                retry_at=clock.now() + retry_at,
            )
        clock.t += 6.0  # both due; the failing one comes first
        await finalizer.retry_cleanups(svc)
        rows = {r["step"]: r for r in await svc.store.run_read(stops.cleanups_for_task, task.id)}
        assert rows["remote_branch"]["status"] == "pending"
        assert rows["remote_branch"]["attempts"] == 2  # its first failure, then this one
        assert rows["worktree"]["status"] == "done"
        kinds = [e["kind"] for e in await svc.store.run_read(events_for_task, task.id)]
        assert "cleanup_done" in kinds
