"""Promises of the stop plane that had no test: what GET /queue, the stop record and the
audit event say about a stop field by field; a tracker that fails during a stop; a
critical window that cannot be determined."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from bot.stopplane.intent import deferred_ready
from integrations.processes import processes_with_env
from integrations.trackers.fake import Failure
from state import stops
from state.models import JobStatus, Stage
from state.queue import iso
from state.store import events_for_task
from tests.acceptance.test_queue import assert_valid
from tests.acceptance.test_stop import agents, cancelled, running_job
from tests.acceptance.test_stop_deferred import parked_on_deploy
from tests.harness import COOPERATIVE_AGENT, STUBBORN_AGENT, Harness, running, wait_until


async def test_queue_stop_record_and_audit_say_what_the_stop_did(tmp_path: Path) -> None:
    async with running(tmp_path, **agents(tmp_path, STUBBORN_AGENT)) as h:
        await h.send("To Analyse")
        job = await running_job(h)
        doc = (await h.client.get("/queue")).json()
        assert_valid(doc)
        assert doc["running"] == [
            {
                "task": "PROJ-42",
                "job": job.id,
                "stage": "implementation",
                "pid": job.pid,
                "started_at": iso(job.started_at),
                "host": h.svc.server.host,
                "server": h.svc.server.id,
            }
        ]
        assert doc["jobs"]["running"] == 1

        answer = (await h.send("STOP")).json()
        assert answer["outcome"] == "stop_requested"
        # The agent ignores SIGTERM: the stop stays in progress for the whole grace.
        doc = (await h.client.get("/queue")).json()
        assert_valid(doc)
        task = await h.task()
        rec = (await h.store.run_read(stops.stops_for_task, task.id))[0]
        assert doc["stop"]["in_progress"] == [
            {
                "task": "PROJ-42",
                "stop_id": answer["stop_id"],
                "requested_at": iso(rec.requested_at),
                "steps": [],
                "by": "plane:ada",
            }
        ]
        assert doc["stop"]["deferred"] == [] and doc["stop"]["recent"] == []
        # The stop record names the job and the run it stopped.
        assert (rec.id, rec.job_id, rec.run_id) == (answer["stop_id"], job.id, job.run_id)

        done = await cancelled(h)
        assert done.outcome == "cancelled_forced"
        events = await h.store.run_read(events_for_task, done.id)
        audit = [e for e in events if e["kind"] == "cancelled"]
        assert len(audit) == 1
        detail = audit[0]["detail"]
        # An agent and its two grandchildren; the one implementation job; both outside steps.
        assert (
            detail["processes_stopped"],
            detail["jobs_cancelled"],
            detail["worktree_removed"],
            detail["branch_deleted"],
        ) == (3, 1, True, True), detail
        assert (audit[0]["stop_id"], detail["outcome"]) == (answer["stop_id"], "cancelled_forced")
        assert audit[0]["actor"] == "plane:ada"
        doc = (await h.client.get("/queue")).json()
        assert doc["running"] == [] and doc["stop"]["in_progress"] == []
        assert [(r["task"], r["stop_id"], r["outcome"]) for r in doc["stop"]["recent"]] == [
            ("PROJ-42", answer["stop_id"], "cancelled_forced")
        ]


async def test_a_tracker_failing_throughout_a_stop_never_breaks_it(tmp_path: Path) -> None:
    async with running(tmp_path, **agents(tmp_path, COOPERATIVE_AGENT)) as h:
        await h.send("To Analyse")
        job = await running_job(h)
        task = await h.task()
        h.tracker.fail_always = Failure(status=503, message="Service Unavailable")
        before = len(h.tracker.requests)
        assert (await h.send("STOP")).json()["outcome"] == "stop_requested"
        done = await cancelled(h)

        async def closed():  # type: ignore[no-untyped-def]
            rec = (await h.store.run_read(stops.stops_for_task, done.id))[0]
            return rec if rec.status is stops.StopStatus.DONE else None

        rec = await wait_until(closed, timeout=20, what="stop closed")
        steps = stops.stop_steps(rec)
        assert steps["notify"]["posted"] is False
        assert len(h.tracker.requests) > before  # it was asked, and failed
        assert h.tracker.comments == []
        # Everything else of the reset happened.
        assert done.outcome == "cancelled_graceful"
        assert not Path(task.worktree_path or "").exists()
        assert "conveyor/PROJ-42" not in h.remote_branches()
        assert processes_with_env("CONVEYOR_RUN_ID", job.run_id or "") == []
        assert all(j.status is not JobStatus.RUNNING for j in await h.jobs(done.id))
        # The next ticket still starts: the failing tracker broke nothing for later.
        h.tracker.fail_always = None
        assert (await h.send("To Analyse")).json()["outcome"] == "started"


async def test_a_tracker_that_cannot_list_comments_still_gets_the_one_comment(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, **agents(tmp_path, COOPERATIVE_AGENT)) as h:
        await h.send("To Analyse")
        await running_job(h)
        h.tracker.fail_next(1, status=502)  # the look before posting fails; the post works
        assert (await h.send("STOP")).json()["outcome"] == "stop_requested"
        done = await cancelled(h)
        await wait_until(lambda: _closed(h, done.id), timeout=20, what="stop closed")
        assert len(h.tracker.comments) == 1
        assert "PROJ-42" in h.tracker.comments[0][1]


async def _closed(h: Harness, task_id: int) -> bool:
    recs = await h.store.run_read(stops.stops_for_task, task_id)
    return bool(recs) and recs[0].status is stops.StopStatus.DONE


async def test_an_undeterminable_critical_window_defers_the_stop(tmp_path: Path) -> None:
    repo = {"self_hosting": True, "deploy_command": "true"}
    async with running(tmp_path, repo_settings=repo) as h:
        await h.send("To Analyse")
        task = await parked_on_deploy(h)
        assert task.stage is Stage.DEPLOY
        # The store cannot answer whether the task holds its repo's merge lease (the
        # table is gone for now): the window is treated as open (fail-closed).
        await _rename(h, "merge_leases", "merge_leases_away")
        answer = (await h.send("STOP")).json()
        assert answer["outcome"] == "stop_deferred", answer
        queue = (await h.client.get("/queue")).json()
        assert [(d["task"], d["window"]) for d in queue["stop"]["deferred"]] == [
            ("PROJ-42", "unknown")
        ]
        # The finalizer's own question gets the same fail-closed answer: not yet.
        rec = (await h.store.run_read(stops.stops_for_task, task.id))[0]
        assert not await h.store.run(deferred_ready, rec, h.svc.clock.now())
        assert (await h.task()).stage is Stage.DEPLOY
        assert Path(task.worktree_path or "").is_dir()

        await _rename(h, "merge_leases_away", "merge_leases")  # readable again: not critical
        done = await cancelled(h)
        assert done.merged_at is not None  # the merged code stays
        assert not Path(task.worktree_path or "").exists()


async def _rename(h: Harness, old: str, new: str) -> None:
    def write(conn) -> None:  # type: ignore[no-untyped-def]
        conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))

    await h.store.run(write)
