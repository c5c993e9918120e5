"""kill -9 of the server at several points of a reset, then a restart: the reset
finishes within 5 s (+ what is left of the grace), nothing is done twice, no orphans."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.common import to_toml
from integrations.processes import processes_with_env
from integrations.trackers.plane.webhook import sign
from tests.acceptance.test_serve import free_port, wait_for
from tests.gitrepo import make_repo
from tests.harness import (
    COOPERATIVE_AGENT,
    SECRET,
    STUBBORN_AGENT,
    Harness,
    base_settings,
    write_agent,
)

ROOT = Path(__file__).resolve().parents[2]
GRACE = 3.0


class FakePlane:
    """A loopback Plane API that counts comments (the server under test is a subprocess)."""

    def __init__(self) -> None:
        self.comments: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/comments/"):
                    outer.comments.append(body.decode())
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": "c1"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Server:
    def __init__(self, tmp_path: Path, config: Path, port: int) -> None:
        self.tmp_path, self.config, self.port = tmp_path, config, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, failpoint: str | None = None) -> None:
        env = {
            **os.environ,
            "CONVEYOR_CONFIG": str(self.config),
            "CONVEYOR_PORT": str(self.port),
            "PYTHONPATH": str(ROOT),
        }
        env.pop("CONVEYOR_FAILPOINT", None)
        if failpoint:
            env["CONVEYOR_FAILPOINT"] = failpoint
        log = open(self.tmp_path / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli.main", "serve"],
            cwd=self.tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(f"{self.url}/healthz")

    def send(self, body: bytes) -> httpx.Response:
        headers = {
            "X-Plane-Signature": sign(SECRET, body),
            "X-Plane-Delivery": f"d{time.time_ns()}",
            "Content-Type": "application/json",
        }
        return httpx.post(f"{self.url}/webhooks/plane", content=body, headers=headers, timeout=10)

    def get(self, path: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}{path}", timeout=10).json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def running_job(server: Server) -> dict[str, Any] | None:
    doc = server.get("/tasks/PROJ-42")
    jobs = [j for j in doc.get("jobs", []) if j["stage"] == "implementation" and j.get("pid")]
    docs = Path(server.tmp_path / "data" / "docs" / "proj-42" / "started")
    return jobs[0] if jobs and docs.exists() else None


POINTS = [
    ("before:processes", COOPERATIVE_AGENT),  # right after the intent is recorded
    ("mid-grace", STUBBORN_AGENT),  # killed by the test while the grace runs
    ("after:jobs", COOPERATIVE_AGENT),
    ("after:worktree", COOPERATIVE_AGENT),
    ("after:tombstone", COOPERATIVE_AGENT),  # the last step before terminal
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "agent"), POINTS, ids=[p for p, _ in POINTS])
def test_reset_resumes_after_kill_9(tmp_path: Path, point: str, agent: str) -> None:
    plane = FakePlane()
    repo, bare = make_repo(tmp_path)
    doc = base_settings(
        tmp_path,
        repo,
        **{
            "stop.grace_seconds": GRACE,
            "agents.implementation": write_agent(tmp_path / "agents", "impl.py", agent),
            "trackers.plane.base_url": plane.url,
            "trackers.plane.api_key": "k",
            "trackers.plane.workspace": "acme",
        },
    )
    config = tmp_path / "conveyor.toml"
    config.write_text(to_toml(doc))
    server = Server(tmp_path, config, free_port())
    h = Harness.__new__(Harness)  # only for its payload builder
    h.sent = 0
    try:
        server.start(None if point == "mid-grace" else point)
        assert server.send(h.payload("To Analyse")).json()["outcome"] == "started"
        job = until(lambda: running_job(server), 30, "agent running")
        stop_sent = time.monotonic()
        with contextlib.suppress(httpx.TransportError):  # the failpoint may kill it first
            server.send(h.payload("STOP"))
        if point == "mid-grace":
            time.sleep(1.0)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)
        assert server.proc is not None
        server.proc.wait(20)
        assert server.proc.returncode == -signal.SIGKILL
        died = time.monotonic()
        remaining = max(0.0, GRACE - (died - stop_sent))
        server.start()
        restarted = time.monotonic()
        task = until(lambda: _cancelled(server), 5 + remaining + 5, "reset completed")
        assert time.monotonic() - restarted < 5 + remaining + 2.0  # + the server's own start
        _assert_done_once(server, task, bare, job, plane)
    finally:
        server.stop()
        plane.close()


def _cancelled(server: Server) -> dict[str, Any] | None:
    doc = server.get("/tasks/PROJ-42")
    stops = doc.get("stops", [])
    if doc.get("task", {}).get("stage") == "cancelled" and stops and stops[0]["status"] == "done":
        return doc
    return None


def _assert_done_once(
    server: Server, doc: dict[str, Any], bare: Path, job: dict[str, Any], plane: FakePlane
) -> None:
    from tests.gitrepo import git

    assert len(doc["stops"]) == 1
    kinds = [e["kind"] for e in doc["audit"]]
    assert kinds.count("cancelled") == 1 and kinds.count("stop_requested") == 1
    assert not Path(doc["task"]["worktree_path"]).exists()
    assert "conveyor/proj-42" not in git(bare, "for-each-ref", "--format=%(refname:short)")
    assert processes_with_env("CONVEYOR_RUN_ID", job["run_id"]) == []
    until(lambda: len(plane.comments) >= 1, 5, "comment")
    time.sleep(0.3)
    assert len(plane.comments) == 1


def _slow_main_pushes(bare: Path, seconds: float) -> None:
    """Pushes of the default branch take `seconds` on the remote (a slow merge); the
    feature branch pushes stay fast."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        f'  if [ "$ref" = refs/heads/main ]; then sleep {seconds}; fi\n'
        "done\n"
    )
    hook.chmod(0o755)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_deferred_stop_survives_a_crash_during_the_merge(tmp_path: Path) -> None:
    """kill -9 while the merge is in its critical window with a STOP deferred: after the
    restart the merge's outcome is settled (never a second merge) and the deferred stop
    is applied, instead of the task waiting in `merge` for ever."""
    from tests.gitrepo import git

    repo, bare = make_repo(tmp_path)
    _slow_main_pushes(bare, 4.0)
    doc = base_settings(tmp_path, repo, **{"workers.lease_seconds": 2})
    config = tmp_path / "conveyor.toml"
    config.write_text(to_toml(doc))
    server = Server(tmp_path, config, free_port())
    h = Harness.__new__(Harness)  # only for its payload builder
    h.sent = 0
    try:
        server.start()
        assert server.send(h.payload("To Analyse")).json()["outcome"] == "started"

        def merging() -> bool:
            task = server.get("/tasks/PROJ-42").get("task", {})
            return task.get("merge_initiated_at") is not None and task.get("merged_at") is None

        until(merging, 90, "merge started")
        answer = server.send(h.payload("STOP")).json()
        assert answer["outcome"] == "stop_deferred", answer
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(20)
        server.start()
        done = until(lambda: _cancelled(server), 60, "deferred stop applied after restart")
        assert done["task"]["merged_at"] is not None  # the push had begun: it stays merged
        kinds = [e["kind"] for e in done["audit"]]
        assert kinds.count("deferred_stop_applied") == 1 and kinds.count("cancelled") == 1
        merges = git(bare, "log", "--merges", "--format=%s", "main").splitlines()
        assert len(merges) == 1, merges  # merged once, never twice
        assert "conveyor/proj-42" not in git(bare, "for-each-ref", "--format=%(refname:short)")
        assert not Path(done["task"]["worktree_path"]).exists()
    finally:
        server.stop()
