"""STOP inside the critical window (merge/deploy) is deferred and applied by the
finalizer; a STOP while parked on deploy resets at once; pending cleanups recover."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from state import jobs, stops
from state.models import Stage, Task
from state.store import events_for_task, get_task
from tests.acceptance.test_stop import COOPERATIVE_AGENT, agents, cancelled, running_job
from tests.gitrepo import git
from tests.harness import Harness, running, wait_until


def slow_remote(bare: Path, seconds: float) -> None:
    """Make every push to the bare remote take `seconds` (a slow merge)."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ncat > /dev/null\nsleep {seconds}\n")
    hook.chmod(0o755)


async def merging(h: Harness):  # type: ignore[no-untyped-def]
    async def check():  # type: ignore[no-untyped-def]
        task = await h.task()
        return task if task.merge_initiated_at is not None and task.merged_at is None else None

    return await wait_until(check, timeout=90, what="merge started")


async def test_stop_during_merge_is_deferred_then_applied(
    tmp_path: Path, app_db: dict[str, str]
) -> None:
    async with running(tmp_path, **app_db) as h:
        main_before = h.remote_sha()
        # Every push is slow from the start: a hook installed once review is done can
        # come too late on a loaded machine (the merge's push already under way).
        slow_remote(h.bare, 2.0)
        await h.send("To Analyse")
        task = await merging(h)
        watching = asyncio.create_task(_reset_while_merging(h, Path(task.worktree_path or "")))
        answer = await h.send("STOP")
        assert answer.json()["outcome"] == "stop_deferred", answer.json()
        again = await h.send("STOP")
        assert again.json()["outcome"] == "stop_deferred"
        assert again.json()["stop_id"] == answer.json()["stop_id"]
        queue = (await h.client.get("/queue")).json()
        assert [d["task"] for d in queue["stop"]["deferred"]] == ["PROJ-42"]
        assert queue["stop"]["deferred"][0]["window"] == "merge"
        await wait_until(lambda: _ready(len(h.tracker.comments) >= 1), what="deferral notice")
        assert len(h.tracker.comments) == 1  # the repeated STOP sent nothing new

        done = await cancelled(h)
        assert done.merged_at is not None
        # Order, not speed: nothing of the reset happened while the merge was running.
        assert await watching == [], "the reset touched the task while its merge ran"
        events = await h.store.run_read(events_for_task, done.id)
        applied = [e["at"] for e in events if e["kind"] == "deferred_stop_applied"]
        assert len(applied) == 1
        assert applied[0] >= done.merged_at
        cancelled_at = [e["at"] for e in events if e["kind"] == "cancelled"]
        assert cancelled_at == [done.cancelled_at] and cancelled_at[0] >= applied[0]
        # Applied by a finalizer tick soon after (generous: a loaded machine skips ticks).
        assert applied[0] - done.merged_at <= 10.0
        merges = git(h.bare, "log", "--merges", "--format=%s", "main").splitlines()
        assert len(merges) == 1 and h.remote_sha() != main_before  # merged code stays
        all_jobs = await h.jobs(done.id)
        assert [j.stage for j in all_jobs if j.stage in ("merge", "deploy")] == ["merge"]
        final = [e for e in events if e["kind"] == "cancelled"][0]
        assert final["detail"]["effects_committed"] is True
        assert await h.store.run_read(jobs.lease_holder, "app") is None


async def _ready(value: bool) -> bool:
    return value


async def _reset_while_merging(h: Harness, worktree: Path) -> list[str]:
    """Whether the task's worktree went missing while its merge still ran.

    Each look is bracketed by two reads of the task, both before `merged_at`: a step seen
    done inside that bracket ran inside the critical window."""
    seen: list[str] = []
    while True:
        before = await h.task()
        if before.merged_at is not None or before.merge_initiated_at is None:
            return seen
        # Only the worktree: the merge deletes the merged branch itself, before merged_at.
        missing = [] if worktree.is_dir() else ["worktree"]
        after = await h.task()
        if after.merged_at is None and after.merge_initiated_at is not None:
            seen += [m for m in missing if m not in seen]
        await asyncio.sleep(0.02)


async def parked_on_deploy(h: Harness) -> Task:
    """The task once a self-hosting repo's merge has parked it, awaiting the deploy
    confirmation (the merge lease still held)."""

    async def parked() -> Task | None:
        task = await h.task()
        return task if task.awaiting_confirm else None

    found: Task = await wait_until(parked, timeout=60, what="parked on deploy")
    return found


async def test_stop_while_parked_on_deploy_resets_at_once(tmp_path: Path) -> None:
    repo = {"self_hosting": True, "deploy_command": "true"}
    async with running(tmp_path, repo_settings=repo) as h:
        await h.send("To Analyse")
        task = await parked_on_deploy(h)
        assert task.stage is Stage.DEPLOY
        assert await h.store.run_read(jobs.lease_holder, "app") == task.id
        answer = await h.send("STOP")
        assert answer.json()["outcome"] == "stop_requested"
        done = await cancelled(h)
        assert done.outcome == "cancelled_graceful"
        assert await h.store.run_read(jobs.lease_holder, "app") is None


async def test_unreachable_remote_leaves_cleanup_pending_until_it_is_back(tmp_path: Path) -> None:
    async with running(tmp_path, **agents(tmp_path, COOPERATIVE_AGENT)) as h:
        await h.send("To Analyse")
        await running_job(h)
        assert "conveyor/proj-42" in h.remote_branches()
        away = h.bare.with_name("away.git")
        h.bare.rename(away)
        try:
            await h.send("STOP")
            done = await cancelled(h)
            queue = (await h.client.get("/queue")).json()
            pending = queue["stop"]["cleanup_pending"]
            assert [(p["task"], p["step"]) for p in pending] == [("PROJ-42", "remote_branch")]
            assert pending[0]["last_error"]
            await asyncio.sleep(0.6)  # the finalizer retries and backs off while it is down
            rows = await h.store.run_read(stops.cleanups_for_task, done.id)
            assert rows[0]["status"] == "pending" and rows[0]["attempts"] >= 2
        finally:
            away.rename(h.bare)

        async def cleared():  # type: ignore[no-untyped-def]
            q = (await h.client.get("/queue")).json()
            return not q["stop"]["cleanup_pending"]

        await wait_until(cleared, timeout=20, what="cleanup cleared")
        assert "conveyor/proj-42" not in h.remote_branches()
        rows = await h.store.run_read(stops.cleanups_for_task, done.id)
        assert rows[0]["status"] == "done"


async def test_someone_elses_push_is_never_deleted(tmp_path: Path) -> None:
    async with running(tmp_path, **agents(tmp_path, COOPERATIVE_AGENT)) as h:
        await h.send("To Analyse")
        await running_job(h)
        other = tmp_path / "someone"
        git(tmp_path, "clone", "-q", str(h.bare), str(other))
        git(other, "config", "user.name", "Someone"), git(other, "config", "user.email", "s@x")
        git(other, "checkout", "-q", "conveyor/proj-42")
        (other / "theirs.txt").write_text("mine\n")
        git(other, "add", "theirs.txt"), git(other, "commit", "-q", "-m", "their work")
        git(other, "push", "-q", "origin", "conveyor/proj-42")
        theirs = h.remote_sha("conveyor/proj-42")
        await h.send("STOP")
        done = await cancelled(h)
        assert h.remote_sha("conveyor/proj-42") == theirs  # left alone
        events = await h.store.run_read(events_for_task, done.id)
        assert any(e["kind"] == "branch_conflict" for e in events), json.dumps(events)


async def test_stop_while_the_deploy_runs_waits_for_it(tmp_path: Path) -> None:
    marker = tmp_path / "deployed"
    repo = {"deploy_command": f"sleep 1.5; touch {marker}"}
    async with running(tmp_path, repo_settings=repo) as h:
        await h.send("To Analyse")

        async def deploying():  # type: ignore[no-untyped-def]
            task = await h.task()
            running_deploy = [j for j in await h.jobs(task.id) if j.stage == "deploy" and j.pid]
            return task if running_deploy and not marker.exists() else None

        await wait_until(deploying, timeout=30, what="deploy running")
        answer = await h.send("STOP")
        assert answer.json()["outcome"] == "stop_deferred"
        queue = (await h.client.get("/queue")).json()
        assert queue["stop"]["deferred"][0]["window"] == "deploy"
        done = await cancelled(h)
        assert marker.exists()  # the deploy was allowed to finish
        assert done.stage is Stage.CANCELLED and done.done_at is None
        deploy_jobs = [j for j in await h.jobs(done.id) if j.stage == "deploy"]
        assert [j.status.value for j in deploy_jobs] == ["succeeded"]
        assert await h.store.run_read(jobs.lease_holder, "app") is None


async def test_a_task_stopped_while_queued_is_reset_in_one_transaction(tmp_path: Path) -> None:
    from tests.acceptance.intake import deliver, make_settings, sample
    from tests.acceptance.intake import running as intake_running

    async with intake_running(make_settings(tmp_path)) as (client, svc):  # no workers run
        assert (await deliver(client, sample("v1_state_to_analyse"))).json()["outcome"] == "started"
        stop = (await deliver(client, sample("v1_state_stop"))).json()
        assert stop["outcome"] == "stop_requested"

        async def closed():  # type: ignore[no-untyped-def]
            rec = await svc.store.run_read(stops.get_stop, stop["stop_id"])
            return rec if rec.status is stops.StopStatus.DONE else None

        rec = await wait_until(closed, timeout=10, what="stop closed")
        steps = stops.stop_steps(rec)
        assert set(steps) == {
            "processes",
            "jobs",
            "lease",
            "pull_request",
            "worktree",
            "remote_branch",
            "tombstone",
            "terminal",
            "notify",
        }
        assert steps["jobs"]["cancelled"] == 1 and steps["processes"]["groups"] == 0
        task = await svc.store.run_read(get_task, rec.task_id)
        assert task.stage is Stage.CANCELLED and task.outcome == "cancelled_graceful"
        events = [e["kind"] for e in await svc.store.run_read(events_for_task, task.id)]
        assert events.count("cancelled") == 1
