"""The operator verbs as a user runs them: `bot.cli.main([...])` against the real app
served by uvicorn on a free loopback port, with a real repo, real agents and real git."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli.main import main
from bot.serve import serving_in_thread
from bot.settings import settings_from_dict
from tests.gitrepo import make_repo
from tests.harness import COOPERATIVE_AGENT, PROJECT, SECRET, base_settings, write_agent

TOKEN = "admin-token-0123456789"  # what base_settings gives the server


@dataclass
class Server:
    url: str
    tmp_path: Path

    def get(self, path: str) -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(self.url + path, timeout=10).json()
        return doc


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """main() may configure logging; give the next test the root logger it had."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The real app on a free port: a cooperative implementation agent that works until
    stopped, commit-and-exit agents for the rest."""
    repo, _ = make_repo(tmp_path)
    agents = tmp_path / "agents"
    agents.mkdir()
    impl = write_agent(agents, "impl.py", COOPERATIVE_AGENT)
    settings = settings_from_dict(base_settings(tmp_path, repo, **{"agents.implementation": impl}))
    cwd = tmp_path / "cwd"  # no conveyor.toml there: the CLI reads env only
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for var in ("CONVEYOR_CONFIG", "CONVEYOR_URL", "CONVEYOR_PLANE_WEBHOOK_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CONVEYOR_ADMIN_TOKEN", TOKEN)
    with serving_in_thread(settings) as url:
        yield Server(url, tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def start_task(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_PLANE_WEBHOOK_SECRET", SECRET)
    code, out, err = run(
        capsys,
        "send",
        "plane",
        "--issue",
        "PROJ-42",
        "--state",
        "To Analyse",
        "--project",
        PROJECT,
        "--url",
        server.url,
    )
    assert (code, out, err) == (0, "202 started PROJ-42\n", "")


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- queue, tasks, show ------------------------------------------------------------------


def test_queue_as_tables_and_as_json(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "queue", "--url", server.url)
    assert code == 0 and err == ""
    for title in (
        "Tasks by stage",
        "Jobs by status",
        "Running",
        "Stop plane: enabled; all repos",
        "Deferred",
        "In progress",
        "Cleanup pending",
        "Recent stops",
    ):
        assert title in out

    code, out, err = run(capsys, "queue", "--json", "--url", server.url)
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc == server.get("/queue")
    assert set(doc["stop"]) >= {"enabled", "repos", "deferred", "in_progress", "cleanup_pending"}


def test_send_plane_starts_a_task_that_tasks_and_show_list(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    start_task(server, capsys, monkeypatch)

    code, out, err = run(capsys, "tasks", "--url", server.url)
    assert code == 0 and err == ""
    assert re.search(r"PROJ-42\W+(analysis|implementation)", out)
    code, out, _ = run(capsys, "tasks", "--limit", "1", "--json", "--url", server.url)
    assert [t["key"] for t in json.loads(out)["tasks"]] == ["PROJ-42"]

    code, out, err = run(capsys, "show", "PROJ-42", "--url", server.url)
    assert code == 0 and err == ""
    for title in ("Task PROJ-42", "Jobs", "No stop records.", "Audit trail", "started"):
        assert title in out
    code, out, _ = run(capsys, "show", "PROJ-42", "--json", "--url", server.url)
    doc = json.loads(out)
    assert doc["task"]["key"] == "PROJ-42"
    assert set(doc) >= {"task", "jobs", "stops", "audit"}

    # The same ticket again is the same issue (a stable id): no second task.
    code, out, _ = run(
        capsys,
        "send",
        "plane",
        "--issue",
        "PROJ-42",
        "--state",
        "In Progress",
        "--project",
        PROJECT,
        "--url",
        server.url,
    )
    assert code == 0 and out.startswith("202 ignored PROJ-42")
    assert len(server.get("/tasks")["tasks"]) == 1


def test_send_plane_takes_the_project_of_the_first_repo(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "conveyor.toml"
    config.write_text(
        f'[trackers.plane]\nwebhook_secret = "{SECRET}"\n\n'
        f'[[repos]]\nname = "app"\npath = "{tmp_path / "app"}"\ntracker_project = "{PROJECT}"\n'
    )
    code, out, err = run(
        capsys,
        "--config",
        str(config),
        "send",
        "plane",
        "--issue",
        "PROJ-7",
        "--state",
        "To Analyse",
        "--title",
        "Made by the CLI test",
        "--url",
        server.url,
    )
    assert (code, out, err) == (0, "202 started PROJ-7\n", "")
    assert server.get("/tasks/PROJ-7")["task"]["title"] == "Made by the CLI test"


# -- stop --------------------------------------------------------------------------------


def test_stop_with_the_admin_token_cancels_the_task(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    start_task(server, capsys, monkeypatch)
    wait_for(
        lambda: any(
            j["status"] == "running" and j["stage"] == "implementation"
            for j in server.get("/tasks/PROJ-42")["jobs"]
        ),
        "the implementation agent",
    )

    code, out, err = run(capsys, "stop", "PROJ-42", "--reason", "wrong ticket", "--url", server.url)
    assert code == 0 and err == ""
    assert re.fullmatch(r"STOP_REQUESTED PROJ-42 stop_id=[0-9a-f]+ \(202\)\n", out)

    detail = wait_for(
        lambda: (d := server.get("/tasks/PROJ-42"))["task"]["stage"] == "cancelled" and d,
        "the task to be cancelled",
    )
    stop = detail["stops"][0]
    assert stop["reason"] == "wrong ticket" and stop["requested_by"] == "admin"
    assert re.fullmatch(r"[0-9a-f]{32}", stop["correlation_id"])  # our X-Request-Id

    code, out, err = run(capsys, "show", "PROJ-42", "--url", server.url)
    assert code == 0 and err == ""
    for shown in (f"Stop {stop['id']}", "wrong ticket", "step processes", "step tombstone"):
        assert shown in out

    code, out, err = run(capsys, "stop", "PROJ-42", "--url", server.url)
    assert code == 0 and err == ""
    assert re.fullmatch(r"ALREADY_TERMINAL PROJ-42( stop_id=[0-9a-f]+)? \(200\)\n", out)


def test_stop_with_a_wrong_token_is_one_line(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    start_task(server, capsys, monkeypatch)
    monkeypatch.setenv("CONVEYOR_ADMIN_TOKEN", "not-the-token-0123456789")
    code, out, err = run(capsys, "stop", "PROJ-42", "--url", server.url)
    assert code == 1 and out == ""
    assert (
        err == "conveyor: missing or wrong admin token (X-Admin-Token or Authorization: Bearer)\n"
    )
    monkeypatch.delenv("CONVEYOR_ADMIN_TOKEN")
    code, _, err = run(capsys, "stop", "PROJ-42", "--url", server.url)
    assert code == 1 and err.startswith("conveyor: missing or wrong admin token")
    assert server.get("/tasks/PROJ-42")["stops"] == []
    assert TOKEN not in err


# -- errors ------------------------------------------------------------------------------


def test_show_unknown_task_is_the_servers_one_line(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "show", "NOPE-1", "--url", server.url)
    assert code == 1 and out == ""
    assert err == (
        "conveyor: no task matches 'NOPE-1' (try a task id, an issue id or a key like PROJ-42)\n"
    )


def test_other_refusals_give_status_and_message(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "tasks", "--limit", "0", "--url", server.url)
    assert code == 1
    assert (
        err == "conveyor: conveyor answered 400: limit must be an integer from 1 to 500, got '0'\n"
    )


def test_send_plane_without_a_secret_is_a_setting_error(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "send",
        "plane",
        "--issue",
        "PROJ-42",
        "--state",
        "STOP",
        "--project",
        PROJECT,
        "--url",
        server.url,
    )
    assert code == 2 and out == ""
    assert (
        err.startswith("conveyor: no Plane webhook secret is configured") and err.count("\n") == 1
    )


def test_send_plane_with_a_key_that_has_no_number(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_PLANE_WEBHOOK_SECRET", SECRET)
    code, _, err = run(
        capsys, "send", "plane", "--issue", "PROJ", "--state", "STOP", "--project", PROJECT
    )
    assert code == 2
    assert (
        err
        == "conveyor: issue key must look like PROJ-42 (a name, a dash and the ticket number), got 'PROJ'\n"
    )


@pytest.mark.parametrize("verb", [["queue"], ["tasks"], ["show", "PROJ-1"], ["stop", "PROJ-1"]])
def test_no_server_is_one_line(capsys: pytest.CaptureFixture[str], verb: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, out, err = run(capsys, *verb, "--url", url)
    assert (code, out) == (1, "")
    assert err == f"conveyor: cannot reach conveyor at {url} (is `conveyor serve` running?)\n"


def test_the_script_prints_no_traceback(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli.main", "queue", "--url", url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert (
        done.stderr == f"conveyor: cannot reach conveyor at {url} (is `conveyor serve` running?)\n"
    )
