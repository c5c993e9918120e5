"""The execution engine through the real app: retries and blocking, the serial merge gate,
merge conflicts, a stop between claim and spawn, start-up reconciliation, the watchdog,
and self-hosting deploys. Real agent processes, real git with a bare remote."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import create_app
from bot.engine import dispatch
from bot.engine.workers import worker_prefix
from bot.services import Services
from bot.settings import settings_from_dict
from integrations.processes import processes_with_env
from integrations.trackers.fake import FakeTracker
from state import jobs
from state.db import make_engine, upgrade
from state.models import Job, JobStatus, NewTask, Stage, Task
from state.store import Store, events_for_task, insert_task
from tests.apptools import app_client
from tests.gitrepo import git, make_repo
from tests.harness import PROJECT, Harness, base_settings, running, wait_until, write_agent

ISSUE = "20617384-0d13-472c-a860-e7f89295b2f5"  # the harness's default ticket, PROJ-42
OTHER_ISSUE = "3f0c2a51-7d1e-4b8a-9c6d-5e4f3a2b1c0d"  # PROJ-43
ADMIN = {"X-Admin-Token": "admin-token-0123456789"}

FAILING_AGENT = """\
#!/bin/sh
echo "cannot do $CONVEYOR_STAGE of $CONVEYOR_TASK_KEY" >&2
exit 3
"""
# Each ticket writes its own files: two tickets never conflict.
PER_TICKET_AGENT = """\
#!/bin/sh
set -e
f="$CONVEYOR_TASK_KEY-$CONVEYOR_STAGE.txt"
echo "$CONVEYOR_STAGE of $CONVEYOR_TASK_KEY" > "$f"
git add "$f"
git commit -q -m "$CONVEYOR_STAGE of $CONVEYOR_TASK_KEY"
"""
# Every ticket writes the same file with its own content: the second merge conflicts.
SHARED_FILE_AGENT = """\
#!/bin/sh
set -e
echo "written by $CONVEYOR_TASK_KEY" > shared.txt
git add shared.txt
git commit -q -m "shared.txt by $CONVEYOR_TASK_KEY"
"""
# Works forever; default SIGTERM handling, so the watchdog's TERM ends it.
ENDLESS_AGENT = """\
import os, time
open(os.path.join(os.environ["CONVEYOR_DOCS_DIR"], "started-" + os.environ["CONVEYOR_RUN_ID"]), "w").close()
while True:
    time.sleep(0.05)
"""


# -- helpers ---------------------------------------------------------------------------------


def agent(tmp_path: Path, name: str, body: str) -> str:
    directory = tmp_path / "agents"
    directory.mkdir(exist_ok=True)
    return write_agent(directory, name, body)


def slow_default_branch_pushes(bare: Path, seconds: float) -> None:
    """Make every push to the remote's main take `seconds` (feature pushes pass at once)."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        f'  if [ "$ref" = "refs/heads/main" ]; then sleep {seconds}; fi\n'
        "done\n"
    )
    hook.chmod(0o755)


def gated_deploy(gate: Path, log: Path) -> str:
    """A deploy command that waits for `gate` (at most 60 s), then logs the task key."""
    return (
        f'i=0; while [ ! -e "{gate}" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; '
        f'echo "$CONVEYOR_TASK_KEY" >> "{log}"'
    )


async def settled(h: Harness, ref: str, *stages: Stage, timeout: float = 30) -> Task:
    """Wait until the task `ref` is in one of `stages`; return it."""

    async def check() -> Task | None:
        task = await h.task(ref)
        return task if task.stage in stages else None

    found: Task = await wait_until(check, timeout=timeout, what=f"{ref} in {stages}")
    return found


async def events(h: Harness, task_id: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await h.store.run_read(events_for_task, task_id)
    return found


def of_kind(trail: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in trail if e["kind"] == kind]


def stage_jobs(all_jobs: list[Job], stage: str) -> list[Job]:
    return [j for j in all_jobs if j.stage == stage]


def merge_commits(bare: Path) -> list[str]:
    return git(bare, "log", "--merges", "--format=%H %s", "main").splitlines()


@contextlib.asynccontextmanager
async def idle_app(tmp_path: Path, **overrides: Any) -> AsyncIterator[Harness]:
    """The real app with no workers and no scheduler: the test drives jobs by hand."""
    repo, bare = make_repo(tmp_path)
    settings = settings_from_dict(base_settings(tmp_path, repo, **overrides))
    tracker = FakeTracker(tracker_name="plane")
    holder: dict[str, Services] = {}

    def configure(svc: Services) -> None:
        tracker.webhooks = svc.trackers["plane"]
        svc.trackers["plane"] = tracker
        holder["svc"] = svc

    app = create_app(settings, configure=configure, start_background=False)
    async with app_client(app) as client:
        yield Harness(tmp_path, repo, bare, settings, client, holder["svc"], tracker)


def dead_pid() -> int:
    """A pid with no process behind it."""
    for pid in (999_999, 4_194_303, 3_999_999):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid found")


# -- 1. retries with backoff, then blocked; a stop still works ----------------------------------


async def test_failing_agent_is_retried_with_backoff_then_blocked_and_can_still_be_stopped(
    tmp_path: Path,
) -> None:
    failing = agent(tmp_path, "fail.sh", FAILING_AGENT)
    async with running(tmp_path, **{"agents.implementation": failing}) as h:
        assert (await h.send("To Analyse")).json()["outcome"] == "started"
        task = await settled(h, "PROJ-42", Stage.BLOCKED, Stage.DONE, Stage.CANCELLED)
        assert task.stage is Stage.BLOCKED, task
        assert task.blocked_reason == "exit status 3"

        all_jobs = await h.jobs(task.id)
        assert [j.stage for j in all_jobs] == ["analysis"] + ["implementation"] * 3
        impl = stage_jobs(all_jobs, "implementation")
        retries = h.settings.workers.retries
        assert len(impl) == retries + 1 == 3
        assert [j.attempt for j in impl] == [1, 2, 3]
        assert all(j.status is JobStatus.FAILED and j.exit_code == 3 for j in impl)
        backoff = h.settings.workers.retry_backoff_seconds
        for before, after in zip(impl, impl[1:], strict=False):
            # Exponential backoff from the failure, and never started before it was due.
            assert before.finished_at is not None and after.started_at is not None
            delay = after.run_after - before.finished_at
            assert delay == pytest.approx(backoff * 2 ** (before.attempt - 1), abs=1e-4)
            assert after.started_at >= after.run_after
        assert "cannot do implementation of PROJ-42" in Path(impl[-1].log_path or "").read_text()

        trail = await events(h, task.id)
        assert [e["detail"]["attempt"] for e in of_kind(trail, "retry_scheduled")] == [2, 3]
        blocked = of_kind(trail, "blocked")
        assert len(blocked) == 1
        assert blocked[0]["detail"] == {"stage": "implementation", "reason": "exit status 3"}
        assert await h.store.run_read(jobs.lease_holder, "app") is None
        assert Path(task.worktree_path or "").is_dir()  # a blocked task keeps its worktree
        assert "conveyor/proj-42" in h.remote_branches()  # pushed after analysis

        # Blocked is not terminal: a STOP still resets the task.
        answer = await h.send("STOP")
        assert answer.json()["outcome"] == "stop_requested", answer.json()
        done = await settled(h, "PROJ-42", Stage.CANCELLED)
        assert done.id == task.id and done.outcome == "cancelled_graceful"
        assert not Path(task.worktree_path or "").exists()
        assert "conveyor/proj-42" not in h.remote_branches()
        assert [j.status for j in await h.jobs(task.id)] == [JobStatus.SUCCEEDED] + [
            JobStatus.FAILED
        ] * 3


# -- 2. two tasks on one repo merge one after the other -----------------------------------------


async def test_two_tasks_on_one_repo_merge_one_after_the_other(tmp_path: Path) -> None:
    writer = agent(tmp_path, "per_ticket.sh", PER_TICKET_AGENT)
    stages = {f"agents.{s}": writer for s in ("analysis", "implementation", "review")}
    # The merge lease is held from the merge through the deploy to done. The first task's
    # deploy waits at a gate until the second task's merge job has been claimed and sent
    # back to wait for the lease: the overlap is certain, not a matter of timing.
    gate, deployed = tmp_path / "deploy-gate", tmp_path / "deployed.txt"
    repo = {"deploy_command": gated_deploy(gate, deployed)}
    async with running(tmp_path, repo_settings=repo, **stages) as h:
        main_before = h.remote_sha()
        slow_default_branch_pushes(h.bare, 1.0)
        assert (await h.send("To Analyse")).json()["outcome"] == "started"
        second = await h.send("To Analyse", issue=OTHER_ISSUE, seq=43, title="Other ticket")
        assert second.json() == {"outcome": "started", "task": "PROJ-43"}

        async def contending() -> tuple[Task, Task] | None:
            tasks = [await h.task(k) for k in ("PROJ-42", "PROJ-43")]
            holder = await h.store.run_read(jobs.lease_holder, "app")
            first = next((t for t in tasks if t.id == holder and t.merged_at), None)
            other = next((t for t in tasks if t.id != holder), None)
            if first is None or other is None or other.merge_initiated_at is not None:
                return None
            merge = stage_jobs(await h.jobs(other.id), "merge")
            # Claimed, refused the lease, handed back with a later run_after.
            waited = any(j.status is JobStatus.QUEUED and j.run_after > j.created_at for j in merge)
            return (first, other) if waited else None

        first, then = await wait_until(contending, timeout=40, what="a merge waiting its turn")
        assert (await h.task(first.key)).stage is Stage.DEPLOY  # holding the lease, deploying
        gate.touch()
        a = await settled(h, first.key, Stage.DONE, Stage.BLOCKED, timeout=40)
        b = await settled(h, then.key, Stage.DONE, Stage.BLOCKED, timeout=40)
        assert (a.stage, b.stage) == (Stage.DONE, Stage.DONE), (a, b)
        assert deployed.read_text().split() == [a.key, b.key]

        trail_a, trail_b = await events(h, a.id), await events(h, b.id)
        (a_started,), (a_merged,) = of_kind(trail_a, "merge_started"), of_kind(trail_a, "merged")
        (b_started,), (b_merged,) = of_kind(trail_b, "merge_started"), of_kind(trail_b, "merged")
        assert a_started["at"] < a_merged["at"] <= (a.done_at or 0) <= b_started["at"]
        assert b_started["at"] < b_merged["at"]
        assert a_merged["at"] - a_started["at"] >= 1.0  # the slow remote took its second
        b_merge = stage_jobs(await h.jobs(b.id), "merge")
        assert len(b_merge) == 1
        assert b_merge[0].created_at < (a.done_at or 0)  # it was queued while a held the lease

        merges = merge_commits(h.bare)
        assert len(merges) == 2, merges
        assert b.merge_sha == h.remote_sha()
        assert a.merge_sha == git(h.bare, "rev-parse", "main^1")
        assert git(h.bare, "rev-parse", "main^1^1") == main_before
        files = set(git(h.bare, "ls-tree", "--name-only", "main").splitlines())
        for key in ("PROJ-42", "PROJ-43"):
            for stage in ("analysis", "implementation", "review"):
                assert f"{key}-{stage}.txt" in files
        assert await h.store.run_read(jobs.lease_holder, "app") is None
        for t in (a, b):
            assert [j.status for j in stage_jobs(await h.jobs(t.id), "merge")] == [
                JobStatus.SUCCEEDED
            ]


async def test_a_merge_that_outlasts_its_job_lease_runs_once(tmp_path: Path) -> None:
    repo = {"self_hosting": True, "deploy_command": "true"}
    async with running(tmp_path, repo_settings=repo, **{"workers.lease_seconds": 2}) as h:
        slow_default_branch_pushes(h.bare, 4.0)  # twice the lease, and then some
        await h.send("To Analyse")

        async def merged() -> Task | None:
            task = await h.task()
            return task if task.merged_at is not None or task.terminal else None

        await wait_until(merged, timeout=40, what="merged")
        await asyncio.sleep(1.5)  # a second run, if any, finishes too (the reaper ticks 1/s)
        task = await h.task()
        trail = await events(h, task.id)
        kinds = [e["kind"] for e in trail]
        assert (kinds.count("merge_started"), kinds.count("merged")) == (1, 1), kinds
        assert "advance_refused" not in kinds
        merge = stage_jobs(await h.jobs(task.id), "merge")
        assert [(j.attempt, j.status) for j in merge] == [(1, JobStatus.SUCCEEDED)]
        assert (merge[0].started_at or 0) <= of_kind(trail, "merge_started")[0]["at"]
        # Parked on deploy until a person confirms, holding the lease.
        assert (task.stage, task.awaiting_confirm) == (Stage.DEPLOY, True), task
        assert await h.store.run_read(jobs.lease_holder, "app") == task.id


# -- 3. a merge conflict blocks the second task, main untouched ---------------------------------


async def test_merge_conflict_blocks_the_second_task_and_leaves_main_alone(
    tmp_path: Path,
) -> None:
    writer = agent(tmp_path, "per_ticket.sh", PER_TICKET_AGENT)
    clash = agent(tmp_path, "shared.sh", SHARED_FILE_AGENT)
    overrides = {
        "agents.analysis": writer,
        "agents.implementation": clash,
        "agents.review": writer,
    }
    async with running(tmp_path, **overrides) as h:
        await h.send("To Analyse")
        await h.send("To Analyse", issue=OTHER_ISSUE, seq=43, title="Other ticket")
        a = await settled(h, "PROJ-42", Stage.DONE, Stage.BLOCKED, timeout=40)
        b = await settled(h, "PROJ-43", Stage.DONE, Stage.BLOCKED, timeout=40)
        outcome = {t.stage: t for t in (a, b)}
        assert set(outcome) == {Stage.DONE, Stage.BLOCKED}, (a, b)
        winner, loser = outcome[Stage.DONE], outcome[Stage.BLOCKED]

        conflicts = of_kind(await events(h, loser.id), "merge_conflict")
        assert len(conflicts) == 1
        assert "shared.txt" in conflicts[0]["detail"]["reason"]
        assert "shared.txt" in (loser.blocked_reason or "")
        assert loser.merge_initiated_at is None and loser.merged_at is None  # window closed
        merge_job = stage_jobs(await h.jobs(loser.id), "merge")
        assert [j.status for j in merge_job] == [JobStatus.FAILED]
        assert "conflict in shared.txt" in (merge_job[0].error or "")

        # The default branch stays at the first merge, with the winner's content.
        assert h.remote_sha() == winner.merge_sha
        assert len(merge_commits(h.bare)) == 1
        assert git(h.bare, "show", "main:shared.txt") == f"written by {winner.key}"
        # No scratch worktree left behind, on disk or in git's worktree list.
        scratch = h.svc.data_dir / "scratch"
        assert list(scratch.rglob(".merge-*")) == []
        assert str(scratch) not in git(h.repo.path, "worktree", "list", "--porcelain")
        assert await h.store.run_read(jobs.lease_holder, "app") is None
        assert Path(loser.worktree_path or "").is_dir()  # kept for a person to look at


# -- 5. a stop between claim and spawn: the agent never starts ----------------------------------


@pytest.mark.parametrize("entry", ["admin", "webhook"])
async def test_stop_between_claim_and_spawn_never_starts_the_agent(
    tmp_path: Path, entry: str
) -> None:
    async with idle_app(tmp_path) as h:
        assert (await h.send("To Analyse")).json()["outcome"] == "started"
        await h.send("To Analyse", issue=OTHER_ISSUE, seq=43, title="Control ticket")
        now = h.svc.clock.now()
        claimed = await h.store.run(jobs.claim_next_job, "test-worker:0", now, 30)
        control = await h.store.run(jobs.claim_next_job, "test-worker:1", now, 30)
        assert claimed is not None and control is not None
        target = await h.task("PROJ-42")
        assert (claimed.task_id, control.task_id) == (target.id, (await h.task("PROJ-43")).id)

        if entry == "admin":
            answer = await h.client.post("/tasks/PROJ-42/stop", headers=ADMIN)
            assert answer.status_code == 202 and answer.json()["status"] == "STOP_REQUESTED"
        else:
            answer = await h.send("STOP")
            assert answer.json()["outcome"] == "stop_requested"

        await dispatch.execute(h.svc, claimed)
        await dispatch.execute(h.svc, control)  # same path, no stop: it does run

        assert h.svc.agents.running == {}
        logs = h.svc.data_dir / "logs"
        assert sorted(p.name for p in logs.iterdir()) == ["proj-43"]  # the control's only
        assert processes_with_env("CONVEYOR_RUN_ID", claimed.run_id or "") == []
        assert (h.svc.logs_dir("PROJ-43") / f"{control.id}.log").is_file()
        control_job = (await h.jobs(control.task_id))[0]
        assert control_job.status is JobStatus.SUCCEEDED and control_job.pid

        done = await settled(h, str(target.id), Stage.CANCELLED)
        assert done.worktree_path is None  # no worktree was ever made for it
        stopped = await h.jobs(target.id)
        assert [(j.id, j.status) for j in stopped] == [(claimed.id, JobStatus.CANCELLED)]
        assert stopped[0].pid is None and stopped[0].log_path is None
        # Nothing was made for it: no worktree, no docs dir (the control has both).
        assert [p.name for p in (h.svc.worktrees_root / "app").iterdir()] == ["proj-43"]
        assert [p.name for p in (h.svc.data_dir / "docs").iterdir()] == ["proj-43"]


async def test_stop_while_the_worktree_is_made_never_starts_the_agent(tmp_path: Path) -> None:
    async with idle_app(tmp_path) as h:
        # A slow checkout holds the worker inside ensure_worktree, past the first re-check.
        checking_out = tmp_path / "checking-out"
        hook = h.repo.path / ".git" / "hooks" / "post-checkout"
        hook.write_text(f"#!/bin/sh\ntouch {checking_out}\nsleep 1\n")
        hook.chmod(0o755)
        await h.send("To Analyse")
        claimed = await h.store.run(jobs.claim_next_job, "test-worker:0", h.svc.clock.now(), 30)
        assert claimed is not None
        worker = asyncio.create_task(dispatch.execute(h.svc, claimed))

        async def in_checkout() -> bool:
            return checking_out.exists()

        await wait_until(in_checkout, timeout=10, what="worktree checkout under way")
        answer = await h.client.post("/tasks/PROJ-42/stop", headers=ADMIN)
        assert answer.json()["status"] == "STOP_REQUESTED"
        await worker
        done = await settled(h, str(claimed.task_id), Stage.CANCELLED)

        assert [j.status for j in await h.jobs(done.id)] == [JobStatus.CANCELLED]
        assert processes_with_env("CONVEYOR_RUN_ID", claimed.run_id or "") == []
        logs = h.svc.data_dir / "logs"
        assert not logs.exists() or list(logs.iterdir()) == [], "agent spawned after the stop"
        assert not (h.svc.worktrees_root / "app" / "proj-42").exists(), "worktree left behind"
        assert "conveyor/proj-42" not in git(h.repo.path, "branch", "--format=%(refname:short)")


# -- 6. start-up reconciliation --------------------------------------------------------------


def seed_running_job(store: Store, issue: str, key: str, worker_id: str, now: float) -> Job:
    """A task whose analysis job a server left `running` (long lease: the reaper waits)."""
    new = NewTask(
        tracker="plane", issue_id=issue, key=key, repo="app", title=key, project_id=PROJECT
    )
    task = store.write(insert_task, new, now)
    store.write(jobs.enqueue_job, task.id, "analysis", now)
    job = store.write(jobs.claim_next_job, worker_id, now, 3600)
    assert job is not None and job.task_id == task.id
    return job


async def test_start_up_requeues_a_dead_servers_running_job_and_runs_it(tmp_path: Path) -> None:
    host = socket.gethostname()
    store = Store(make_engine(f"sqlite:///{tmp_path / 'conveyor.db'}"))
    upgrade(store.engine)
    now = time.time() - 5
    orphan = seed_running_job(store, ISSUE, "PROJ-42", f"{host}:{dead_pid()}:0", now)
    live_server = subprocess.Popen(["sleep", "60"])  # another conveyor on this host, alive
    try:
        other = seed_running_job(store, OTHER_ISSUE, "PROJ-43", f"{host}:{live_server.pid}:0", now)
        store.dispose()
        async with running(tmp_path) as h:
            done = await settled(h, "PROJ-42", Stage.DONE, Stage.BLOCKED, timeout=40)
            assert done.stage is Stage.DONE, done
            first = (await h.jobs(done.id))[0]
            assert first.id == orphan.id and first.status is JobStatus.SUCCEEDED
            assert first.run_id != orphan.run_id  # re-queued, then claimed afresh
            assert (first.worker_id or "").startswith(worker_prefix())
            assert [j.stage for j in await h.jobs(done.id)][:3] == [
                "analysis",
                "implementation",
                "review",
            ]
            # The job of a live process on this host is not ours to settle.
            kept = (await h.jobs(other.task_id))[0]
            assert (kept.status, kept.run_id, kept.worker_id) == (
                JobStatus.RUNNING,
                other.run_id,
                other.worker_id,
            )
    finally:
        live_server.kill()
        live_server.wait()


# -- 7. the watchdog ----------------------------------------------------------------------------


async def test_watchdog_stops_an_overdue_agent_which_is_retried_then_blocked(
    tmp_path: Path,
) -> None:
    endless = agent(tmp_path, "endless.py", ENDLESS_AGENT)
    overrides = {
        "agents.implementation": endless,
        "workers.max_runtime_seconds": 1,
        "workers.retries": 1,  # two attempts: each waits for a watchdog tick (every 5 s)
    }
    async with running(tmp_path, **overrides) as h:
        await h.send("To Analyse")
        task = await settled(h, "PROJ-42", Stage.BLOCKED, Stage.DONE, timeout=30)
        assert task.stage is Stage.BLOCKED, task
        impl = stage_jobs(await h.jobs(task.id), "implementation")
        assert [(j.attempt, j.status) for j in impl] == [
            (1, JobStatus.FAILED),
            (2, JobStatus.FAILED),
        ]
        for job in impl:
            assert job.exit_code is not None and job.exit_code != 0  # ended by a signal
            runtime = (job.finished_at or 0) - (job.started_at or 0)
            assert 1.0 <= runtime <= 1.0 + 5.0 + 2.0, runtime  # max runtime + one tick
            assert (h.svc.docs_dir("PROJ-42") / f"started-{job.run_id}").exists()
            assert processes_with_env("CONVEYOR_RUN_ID", job.run_id or "") == []
        trail = await events(h, task.id)
        stopped = {e["detail"]["job"] for e in of_kind(trail, "watchdog_stopped")}
        assert stopped == {j.id for j in impl}
        assert [e["detail"]["attempt"] for e in of_kind(trail, "retry_scheduled")] == [2]
        assert len(of_kind(trail, "blocked")) == 1


# -- 8. self-hosting: park on deploy, holding the lease, until Confirm Deploy -------------------


async def test_self_hosting_parks_on_deploy_until_confirmed(tmp_path: Path) -> None:
    marker = tmp_path / "deployed.txt"
    repo = {
        "self_hosting": True,
        "deploy_command": f'echo "$CONVEYOR_STAGE $CONVEYOR_TASK_KEY" >> {marker}',
    }
    async with running(tmp_path, repo_settings=repo) as h:
        main_before = h.remote_sha()
        early = await h.send("Confirm Deploy")  # nothing to confirm yet: no task
        assert early.json()["outcome"] == "ignored"
        await h.send("To Analyse")

        async def parked() -> Task | None:
            task = await h.task()
            return task if task.awaiting_confirm else None

        task = await wait_until(parked, timeout=30, what="parked on deploy")
        assert task.stage is Stage.DEPLOY and task.merged_at is not None
        assert h.remote_sha() == task.merge_sha != main_before
        assert await h.store.run_read(jobs.lease_holder, "app") == task.id
        await asyncio.sleep(0.5)  # it stays parked: no deploy runs by itself
        assert [j.stage for j in await h.jobs(task.id)] == [
            "analysis",
            "implementation",
            "review",
            "merge",
        ]
        assert not marker.exists()
        assert (await h.task()).awaiting_confirm

        answer = await h.send("Confirm Deploy")
        assert answer.status_code == 202
        assert answer.json() == {"outcome": "deploy_confirmed", "task": "PROJ-42"}
        again = await h.send("Confirm Deploy")  # a second confirm deploys nothing more
        assert again.json()["outcome"] == "ignored"

        done = await settled(h, "PROJ-42", Stage.DONE, Stage.BLOCKED, timeout=30)
        assert done.stage is Stage.DONE and not done.awaiting_confirm
        assert marker.read_text() == "deploy PROJ-42\n"
        deploy = stage_jobs(await h.jobs(done.id), "deploy")
        assert [(j.status, j.exit_code) for j in deploy] == [(JobStatus.SUCCEEDED, 0)]
        assert await h.store.run_read(jobs.lease_holder, "app") is None
        trail = await events(h, done.id)
        kinds = [e["kind"] for e in trail]
        assert kinds.index("awaiting_confirm_deploy") < kinds.index("deploy_confirmed")
        assert len(of_kind(trail, "deploy_confirmed")) == 1
