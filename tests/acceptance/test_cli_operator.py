"""The operator verbs as a process against the real server (uvicorn on a free loopback
port, real agents and git): logs (also followed live), retry, stop --json, show's log
paths and errors within 80 columns, and send's honest answers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.serve import serving_in_thread
from bot.settings import settings_from_dict
from tests.acceptance.test_operator import flaky_agent
from tests.gitrepo import make_repo
from tests.harness import PROJECT, SECRET, base_settings, write_agent

TOKEN = "admin-token-0123456789"  # what base_settings gives the server
TICKING_AGENT = """\
#!/bin/sh
for n in 1 2 3 4 5 6; do echo "tick $n"; sleep 0.3; done
echo done > ticked.txt && git add ticked.txt && git commit -q -m "ticked"
"""


@dataclass
class Server:
    url: str
    cwd: Path
    fixed: Path

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, timeout=10).json()

    def cli(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        clean.pop("COLUMNS", None)  # tables at their default width, as in a pipe
        env = {
            **clean,
            "CONVEYOR_URL": self.url,
            "CONVEYOR_ADMIN_TOKEN": TOKEN,
            "CONVEYOR_PLANE_WEBHOOK_SECRET": SECRET,
        }
        return subprocess.run(
            [sys.executable, "-m", "bot.cli.main", *argv],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, key: str = "PROJ-42") -> None:
        done = self.cli(
            "send", "plane", "--issue", key, "--state", "To Analyse", "--project", PROJECT
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, f"202 started {key}\n", "")

    def wait(self, check: Any, what: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)
        return found

    def stage(self, key: str = "PROJ-42") -> str:
        return str(self.get(f"/tasks/{key}")["task"]["stage"])


@contextlib.contextmanager
def serve(tmp_path: Path, implementation: str | None = None) -> Iterator[Server]:
    repo, _ = make_repo(tmp_path)
    command, fixed = flaky_agent(tmp_path)
    overrides = {"agents.implementation": implementation or command}
    settings = settings_from_dict(base_settings(tmp_path, repo, **overrides))
    cwd = tmp_path / "cwd"  # no conveyor.toml there: the CLI reads env only
    cwd.mkdir()
    with serving_in_thread(settings) as url:
        yield Server(url, cwd, fixed)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path) as running:
        yield running


def blocked(server: Server) -> dict[str, Any]:
    server.start()
    server.wait(lambda: server.stage() in ("blocked", "done"), "the task to block")
    detail: dict[str, Any] = server.get("/tasks/PROJ-42")
    assert detail["task"]["stage"] == "blocked"
    return detail


@pytest.mark.timeout(180)
def test_show_logs_and_retry_of_a_blocked_task(server: Server) -> None:
    detail = blocked(server)
    last = detail["jobs"][-1]

    shown = server.cli("show", "PROJ-42")
    assert shown.returncode == 0 and shown.stderr == ""
    lines = shown.stdout.splitlines()
    assert f"job {last['id']} log: {last['log_path']}" in lines  # whole, to copy
    tables = [line for line in lines if " log: " not in line]
    assert max(len(line) for line in tables) <= 80, shown.stdout
    assert "started (UTC)" in shown.stdout and "Task PROJ-42 (times in UTC)" in shown.stdout
    assert "exit status 3" in shown.stdout and "cannot do implementation of PROJ-42" in shown.stdout

    full = "step one of implementation\ncannot do implementation of PROJ-42\n"
    logs = server.cli("logs", "PROJ-42")
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, full, "")
    tail = server.cli("logs", "PROJ-42", "--tail", "1")
    assert tail.stdout == "cannot do implementation of PROJ-42\n"
    as_json = json.loads(server.cli("logs", "PROJ-42", "--json").stdout)
    assert as_json == {
        "task": "PROJ-42",
        "job": last["id"],
        "status": "failed",
        "path": last["log_path"],
        "log": full,
    }
    missing = server.cli("logs", "PROJ-42", "--job", "99999")
    ids = ", ".join(str(j["id"]) for j in detail["jobs"])
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == f"conveyor: task PROJ-42 has no job 99999 (its jobs: {ids})\n"

    server.fixed.write_text("yes")
    retried = server.cli("retry", "PROJ-42")
    assert retried.returncode == 0 and retried.stderr == ""
    # The retried job may have run already and queued the next stage: found by its stage.
    jobs = server.get("/tasks/PROJ-42")["jobs"]
    job = [j["id"] for j in jobs if j["stage"] == "implementation"][-1]
    assert retried.stdout == f"RETRY_QUEUED PROJ-42 stage=implementation job={job} (202)\n"
    server.wait(lambda: server.stage() == "done", "the retried task to finish")

    again = server.cli("retry", "PROJ-42", "--json")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == (
        "conveyor: task PROJ-42 is done, not blocked: only a blocked task can be retried "
        "(a finished or cancelled one starts afresh from its tracker)\n"
    )


def test_retry_and_stop_without_the_token_are_one_line(server: Server) -> None:
    blocked(server)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    for verb in ("retry", "stop"):
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli.main", verb, "PROJ-42", "--url", server.url],
            cwd=server.cwd,
            env={**clean, "CONVEYOR_ADMIN_TOKEN": "wrong"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == (
            "conveyor: missing or wrong admin token (X-Admin-Token or Authorization: Bearer)\n"
        )


def test_stop_prints_json_when_asked(server: Server) -> None:
    blocked(server)
    done = server.cli("stop", "PROJ-42", "--reason", "enough", "--json")
    assert done.returncode == 0 and done.stderr == ""
    doc = json.loads(done.stdout)
    assert doc["status"] == "STOP_REQUESTED"  # the server's answer as it came
    assert doc["task"] == "PROJ-42" and doc["stop_id"]


@pytest.mark.timeout(120)
def test_logs_follow_prints_the_log_as_it_grows_until_the_job_ends(tmp_path: Path) -> None:
    ticking = write_agent(tmp_path / "agents", "tick.sh", TICKING_AGENT)
    with serve(tmp_path, implementation=ticking) as server:
        server.start()
        job = server.wait(
            lambda: next(
                (
                    j["id"]
                    for j in server.get("/tasks/PROJ-42")["jobs"]
                    if j["stage"] == "implementation" and j["status"] == "running"
                ),
                None,
            ),
            "the implementation agent",
        )
        # By job id: on a busy machine the agent may be done (and review running) before
        # this process starts; then the whole log comes at once, as it should.
        followed = server.cli("logs", "PROJ-42", "--job", str(job), "--follow")
        assert followed.returncode == 0 and followed.stderr == ""
        assert followed.stdout == "".join(f"tick {n}\n" for n in range(1, 7))
        impl = [j for j in server.get("/tasks/PROJ-42")["jobs"] if j["stage"] == "implementation"]
        assert impl[0]["status"] == "succeeded"  # it ended before the follow did


def test_send_says_when_the_server_names_the_ticket_otherwise(server: Server) -> None:
    done = server.cli(
        "send", "plane", "--issue", "P-1", "--state", "To Analyse", "--project", PROJECT
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == (
        "202 started PROJ-1 (sent as P-1; the server calls it PROJ-1: give its project an "
        "identifier in trackers.plane.project_identifiers, or use PROJ-1 with show, logs "
        "and stop)\n"
    )
    assert server.get("/tasks/PROJ-1")["task"]["key"] == "PROJ-1"


def test_a_stop_for_a_ticket_with_no_task_says_unknown_ticket(server: Server) -> None:
    done = server.cli("send", "plane", "--issue", "PROJ-9", "--state", "STOP", "--project", PROJECT)
    assert (done.returncode, done.stdout) == (0, "202 ignored PROJ-9 reason=unknown_ticket\n")
    as_json = server.cli(
        "send", "plane", "--issue", "PROJ-9", "--state", "STOP", "--project", PROJECT, "--json"
    )
    doc = json.loads(as_json.stdout)
    assert doc == {"outcome": "ignored", "task": "PROJ-9", "reason": "unknown_ticket"}


def test_queue_and_tasks_fit_80_columns(server: Server) -> None:
    blocked(server)
    for verb in ("queue", "tasks"):
        done = server.cli(verb)
        assert done.returncode == 0 and done.stderr == ""
        assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout
    assert "updated (UTC)" in server.cli("tasks").stdout
