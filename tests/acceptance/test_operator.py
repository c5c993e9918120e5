"""Seeing and acting on what happens, through the real app with real agents and git: the
server log lines and the job's error for a failing agent, GET /tasks/{ref}/logs, and
POST /tasks/{ref}/retry bringing a blocked task back to its blocked stage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from state.models import JobStatus, Stage
from tests.acceptance.test_engine import events, idle_app, of_kind, settled, stage_jobs
from tests.harness import Harness, running, write_agent

ADMIN = {"X-Admin-Token": "admin-token-0123456789"}  # what base_settings gives the server


def flaky_agent(tmp_path: Path) -> tuple[str, Path]:
    """Prints to stdout and stderr, then fails with 3 until `fixed` exists; then commits."""
    fixed = tmp_path / "fixed"
    body = f"""\
#!/bin/sh
echo "step one of $CONVEYOR_STAGE"
echo "cannot do $CONVEYOR_STAGE of $CONVEYOR_TASK_KEY" >&2
if [ -f {fixed} ]; then
  echo fixed > fixed.txt && git add fixed.txt && git commit -q -m "fixed by agent"
  exit 0
fi
exit 3
"""
    return write_agent(tmp_path / "agents", "flaky.sh", body), fixed


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


async def blocked_task(h: Harness) -> int:
    assert (await h.send("To Analyse")).json()["outcome"] == "started"
    task = await settled(h, "PROJ-42", Stage.BLOCKED, Stage.DONE, Stage.CANCELLED)
    assert task.stage is Stage.BLOCKED, task
    return task.id


@pytest.mark.timeout(120)
async def test_a_failing_agent_is_logged_and_its_error_has_its_last_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    flaky, _ = flaky_agent(tmp_path)
    async with running(tmp_path, **{"agents.implementation": flaky}) as h:
        task_id = await blocked_task(h)
        impl = stage_jobs(await h.jobs(task_id), "implementation")
        assert [j.status for j in impl] == [JobStatus.FAILED] * 3
        for job in impl:
            assert job.error == (
                "exit status 3\nlast output:\nstep one of implementation\n"
                "cannot do implementation of PROJ-42"
            )
        assert (await h.task()).blocked_reason == "exit status 3"  # the first line only

        failed = records(caplog, "stage failed")
        assert [(r.task, r.stage, r.job, r.attempt, r.exit_code) for r in failed] == [  # type: ignore[attr-defined]
            ("PROJ-42", "implementation", j.id, j.attempt, 3) for j in impl
        ]
        assert all(r.reason == "exit status 3" for r in failed)  # type: ignore[attr-defined]
        retried = records(caplog, "retry scheduled")
        assert [r.next_attempt for r in retried] == [2, 3]  # type: ignore[attr-defined]
        blocked = records(caplog, "task blocked")
        assert [(r.task, r.job, r.attempt) for r in blocked] == [("PROJ-42", impl[-1].id, 3)]  # type: ignore[attr-defined]
        passed = records(caplog, "stage passed")
        assert [(r.stage, r.next_stage) for r in passed] == [("analysis", "implementation")]  # type: ignore[attr-defined]
        started = records(caplog, "agent started")
        assert len(started) == 4 and all(r.pid > 0 for r in started)  # type: ignore[attr-defined]

        detail = (await h.client.get("/tasks/PROJ-42")).json()
        assert [j["error"] for j in detail["jobs"][1:]] == [j.error for j in impl]


@pytest.mark.timeout(120)
async def test_logs_of_a_task_by_job_tail_and_offset(tmp_path: Path) -> None:
    flaky, _ = flaky_agent(tmp_path)
    async with running(tmp_path, **{"agents.implementation": flaky}) as h:
        task_id = await blocked_task(h)
        all_jobs = await h.jobs(task_id)
        last = all_jobs[-1]
        full = "step one of implementation\ncannot do implementation of PROJ-42\n"

        answer = await h.client.get("/tasks/PROJ-42/logs")
        assert answer.status_code == 200 and answer.text == full
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.headers["x-conveyor-job"] == str(last.id)
        assert answer.headers["x-conveyor-job-status"] == "failed"
        assert answer.headers["x-conveyor-log-path"] == last.log_path
        assert answer.headers["x-conveyor-log-size"] == str(len(full))

        tail = await h.client.get("/tasks/PROJ-42/logs", params={"tail": 1})
        assert tail.text == "cannot do implementation of PROJ-42\n"
        offset = await h.client.get("/tasks/PROJ-42/logs", params={"offset": 5})
        assert offset.text == full[5:]
        analysis = await h.client.get("/tasks/PROJ-42/logs", params={"job": all_jobs[0].id})
        assert (
            analysis.status_code == 200 and analysis.headers["x-conveyor-job-status"] == "succeeded"
        )

        missing = await h.client.get("/tasks/PROJ-42/logs", params={"job": 99999})
        ids = ", ".join(str(j.id) for j in all_jobs)
        assert missing.status_code == 404
        assert missing.json() == {"error": f"task PROJ-42 has no job 99999 (its jobs: {ids})"}
        for params, message in (
            ({"tail": 0}, "tail must be an integer from 1 to 10000, got '0'"),
            ({"job": "x"}, "job must be an integer from 1 to 4611686018427387904, got 'x'"),
            ({"tail": 1, "offset": 0}, "give tail or offset, not both"),
        ):
            bad = await h.client.get("/tasks/PROJ-42/logs", params=params)
            assert (bad.status_code, bad.json()) == (400, {"error": message})
        unknown = await h.client.get("/tasks/NOPE-1/logs")
        assert unknown.status_code == 404 and "no task matches 'NOPE-1'" in unknown.json()["error"]


@pytest.mark.timeout(180)
async def test_retry_runs_the_blocked_stage_again_with_fresh_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    flaky, fixed = flaky_agent(tmp_path)
    async with running(tmp_path, **{"agents.implementation": flaky}) as h:
        task_id = await blocked_task(h)
        assert (await h.client.post("/tasks/PROJ-42/retry")).status_code == 401
        wrong = await h.client.post("/tasks/PROJ-42/retry", headers={"X-Admin-Token": "no"})
        assert wrong.status_code == 401
        unknown = await h.client.post("/tasks/NOPE-1/retry", headers=ADMIN)
        assert unknown.status_code == 404

        fixed.write_text("yes")
        answer = await h.client.post("/tasks/PROJ-42/retry", headers=ADMIN)
        assert answer.status_code == 202
        doc = answer.json()
        assert doc == {
            "status": "RETRY_QUEUED",
            "task": "PROJ-42",
            "stage": "implementation",
            "job": doc["job"],
        }
        done = await settled(h, "PROJ-42", Stage.DONE, Stage.BLOCKED, Stage.CANCELLED, timeout=60)
        assert done.stage is Stage.DONE and done.blocked_reason is None

        impl = stage_jobs(await h.jobs(task_id), "implementation")
        assert [(j.attempt, j.status) for j in impl] == [
            (1, JobStatus.FAILED),
            (2, JobStatus.FAILED),
            (3, JobStatus.FAILED),
            (1, JobStatus.SUCCEEDED),  # fresh attempts
        ]
        assert impl[-1].id == doc["job"]
        trail = await events(h, task_id)
        asked = of_kind(trail, "retry_requested")
        assert [(e["detail"], e["actor"]) for e in asked] == [
            ({"stage": "implementation", "job": doc["job"]}, "admin")
        ]
        assert records(caplog, "retry queued") and records(caplog, "merged")

        again = await h.client.post("/tasks/PROJ-42/retry", headers=ADMIN)
        assert again.status_code == 409
        assert again.json() == {
            "error": "task PROJ-42 is done, not blocked: only a blocked task can be retried "
            "(a finished or cancelled one starts afresh from its tracker)",
            "task": "PROJ-42",
        }


async def test_a_job_waiting_to_start_has_an_empty_log(tmp_path: Path) -> None:
    async with idle_app(tmp_path) as h:  # no workers: the analysis job stays queued
        assert (await h.send("To Analyse")).json()["outcome"] == "started"
        answer = await h.client.get("/tasks/PROJ-42/logs")
        assert (answer.status_code, answer.text) == (200, "")
        assert answer.headers["x-conveyor-job-status"] == "queued"
        assert answer.headers["x-conveyor-log-size"] == "0"
