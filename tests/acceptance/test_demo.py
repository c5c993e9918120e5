"""`conveyor demo` as a newcomer runs it: a subprocess, no configuration, no network; it
must say what the reset did, hold every claim, and leave nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from integrations.processes import processes_with_env

BASIC_CLAIMS = [
    r'start webhook \(signed, "To Analyse"\): 202 started DEMO-1',
    r"implementation agent at work: job \d+, pid \d+",
    r'STOP webhook \(signed, "STOP"\): 202 stop_requested DEMO-1 stop_id=\w+',
    r"stop record \w+ \(done, by plane:demo\): every step recorded",
    r"process group \(pid = pgid\) \d+ stopped gracefully \(SIGTERM\)",
    r"no agent process is left",
    r"jobs: 1 cancelled, none running",
    r"worktree removed: \S+/worktrees/app/demo-1 is gone",
    r"remote branch conveyor/demo-1 deleted: git ls-remote finds no such branch",
    r"default branch main untouched: (\w{7}) before and \1 after",
    r"keys tombstoned: issue id [0-9a-f-]{36}#cancelled-1, key DEMO-1#cancelled-1",
    r"task DEMO-1 is cancelled \(cancelled_graceful\)",
]
DEFERRED_CLAIMS = [
    r"202 stop_deferred DEMO-1",
    r"GET /queue lists the deferred stop \(window merge\)",
    r"the finalizer cancelled the task [\d.]+ s after the merge ended",
    r"the merge finished honestly: exactly 1 merge commit on main",
    r"effects_committed=true",
    r"worktree removed: \S+ is gone",
    r"remote branch conveyor/demo-1 deleted",
    r"keys tombstoned: issue id \S+#cancelled-1",
]


def run_demo(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    temp = tmp_path / "tmp"  # the demo's temporary directory goes here, and must go away
    temp.mkdir()
    (tmp_path / "conveyor.toml").write_text("this is not TOML, and the demo must not care\n")
    env = {**os.environ, "TMPDIR": str(temp), "CONVEYOR_ADMIN_TOKEN": "from-the-env"}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli.main", "demo", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, temp


def assert_claims(out: str, patterns: list[str]) -> None:
    claimed = [line for line in out.splitlines() if "✔" in line]
    for pattern in patterns:
        assert any(re.search(pattern, line) for line in claimed), f"no ✔ line for {pattern!r}"
    assert "✘" not in out
    assert "Every claim holds." in out


def assert_nothing_left(out: str, temp: Path) -> None:
    root = re.search(r"in (\S+conveyor-demo-\w+)", out)
    assert root and not Path(root.group(1)).exists()
    assert list(temp.iterdir()) == []
    run_ids = re.findall(r"run_id=([0-9a-f]{32})", out)
    assert run_ids
    for run_id in run_ids:
        assert processes_with_env("CONVEYOR_RUN_ID", run_id) == []


def test_demo_basic_resets_a_running_agent(tmp_path: Path) -> None:
    done, temp = run_demo(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_claims(done.stdout, BASIC_CLAIMS)
    assert_nothing_left(done.stdout, temp)
    assert "Traceback" not in done.stderr
    assert "from-the-env" not in done.stdout + done.stderr


def test_demo_deferred_lets_the_merge_finish(tmp_path: Path) -> None:
    done, temp = run_demo(tmp_path, "--scenario", "deferred")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_claims(done.stdout, DEFERRED_CLAIMS)
    assert_nothing_left(done.stdout, temp)


def test_demo_keep_says_where_to_look(tmp_path: Path) -> None:
    done, temp = run_demo(tmp_path, "--keep")
    assert done.returncode == 0, done.stdout + done.stderr
    kept = [p for p in temp.iterdir() if p.name.startswith("conveyor-demo-")]
    assert len(kept) == 1
    for what in ("conveyor.db", "logs/server.log", "data/logs/demo-1"):
        assert f"{kept[0]}/{what}" in done.stdout
        assert (kept[0] / what).exists()
    log = (kept[0] / "logs" / "server.log").read_text()
    assert "reset step done" in log
    run_ids = re.findall(r"run_id=([0-9a-f]{32})", done.stdout)
    assert all(processes_with_env("CONVEYOR_RUN_ID", r) == [] for r in run_ids)


def test_demo_json_prints_one_document(tmp_path: Path) -> None:
    import json

    done, temp = run_demo(tmp_path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)  # nothing else on stdout
    assert doc["scenario"] == "basic" and doc["ok"] is True and doc["error"] is None
    assert doc["kept"] is None and list(temp.iterdir()) == []
    claims = [c["claim"] for c in doc["claims"]]
    assert all(c["holds"] for c in doc["claims"])
    assert any(re.search(r"task DEMO-1 is cancelled \(cancelled_graceful\)", c) for c in claims)
