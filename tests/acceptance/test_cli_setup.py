"""Setting up, as a new operator meets it: `conveyor` run as a process (exit status and the
exact line it prints), the example config, `conveyor check`, and `conveyor serve`
refusing to start, in one line, on what would otherwise fail later."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.cli.main import build_parser
from state.db import head_revision
from tests.gitrepo import git, make_repo

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "conveyor.example.toml"
PROJECT = "00000000-0000-4000-8000-000000000000"  # the example's placeholder project


def conveyor(
    cwd: Path, *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a clean environment: no CONVEYOR_* variable but those given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    clean.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli.main", *argv],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def example_config(tmp_path: Path, repo: Path, **replace: str) -> Path:
    """The shipped example with its FILL IN paths filled in."""
    text = EXAMPLE.read_text().replace('"/srv/app"', f'"{repo}"')
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "conveyor.toml"
    path.write_text(text)
    return path


# -- --version, --help, --config -------------------------------------------------------------


def test_version_is_the_installed_package(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = conveyor(tmp_path, "--version")
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"conveyor {version('conveyor')}\n",
        "",
    )


def verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every verb (and sub-verb) of the parser, as its words."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from verbs(sub, (*path, name))


def test_every_option_of_every_verb_has_help() -> None:
    parser = build_parser()
    found = list(verbs(parser))
    assert {("serve",), ("check",), ("logs",), ("retry",), ("db", "upgrade")} <= set(found)
    for words in [(), *found]:
        verb = parser
        for word in words:
            verb = next(
                a.choices[word] for a in verb._actions if isinstance(a, argparse._SubParsersAction)
            )
        for action in verb._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                assert action.help, f"conveyor {' '.join(words)} {action.option_strings[0]}"


def test_help_answers_from_the_real_script(tmp_path: Path) -> None:
    done = conveyor(tmp_path, "serve", "--help")
    assert (
        done.returncode == 0 and "--port PORT" in done.stdout and "port to listen on" in done.stdout
    )


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_named_config_that_does_not_exist_is_one_line_exit_2(tmp_path: Path, where: str) -> None:
    argv = (
        ["--config", "./nope.toml", "serve"]
        if where == "before"
        else ["serve", "--config", "./nope.toml"]
    )
    done = conveyor(tmp_path, *argv)
    assert (done.returncode, done.stdout) == (2, "")
    assert (
        done.stderr == "conveyor: ./nope.toml does not exist (named by --config); check the path\n"
    )
    assert not (tmp_path / ".conveyor").exists()  # nothing served, nothing made


def test_config_after_the_verb_is_the_one_used(tmp_path: Path) -> None:
    config = tmp_path / "other.toml"
    config.write_text('[server]\nport = 1\nurl = "http://127.0.0.1:1"\n')
    done = conveyor(tmp_path, "queue", "--config", str(config))
    assert done.returncode == 1
    assert done.stderr == (
        "conveyor: cannot reach conveyor at http://127.0.0.1:1 (is `conveyor serve` running?)\n"
    )


# -- conveyor check ----------------------------------------------------------------------------


def test_the_example_config_passes_check_once_filled_in(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path)
    example_config(tmp_path, repo.path)
    done = conveyor(tmp_path, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        "ok: configuration, data directory, database and 1 repo checked"
    )
    assert "problem:" not in done.stdout
    # The secrets it leaves empty are named as warnings, with what they turn off.
    assert "warning: server.admin_token: is empty" in done.stdout
    assert "warning: trackers.plane.webhook_secret: is empty" in done.stdout

    done = conveyor(tmp_path, "check", "--json")
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and doc["ok"] is True
    assert {"level": "warning", "where": "server.admin_token"}.items() <= doc["findings"][0].items()


def test_check_names_each_repo_problem_in_one_line(tmp_path: Path) -> None:
    good, _ = make_repo(tmp_path, "good")
    plain = tmp_path / "plain"
    plain.mkdir()
    no_remote = tmp_path / "lonely"
    git(tmp_path, "init", "-q", "-b", "main", str(no_remote))
    config = tmp_path / "conveyor.toml"
    config.write_text(
        f'[[repos]]\nname = "gone"\npath = "{tmp_path / "gone"}"\n'
        f'[[repos]]\nname = "plain"\npath = "{plain}"\n'
        f'[[repos]]\nname = "lonely"\npath = "{no_remote}"\n'
        f'[[repos]]\nname = "good"\npath = "{good.path}"\ndefault_branch = "trunk"\n'
        f'[[repos]]\nname = "good"\npath = "{good.path}"\n'
    )
    done = conveyor(tmp_path, "check")
    assert done.returncode == 2 and done.stderr == ""
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [
        "problem: repos.good: 2 repos are named 'good'; give each its own name",
        f"problem: repos.gone.path: {tmp_path / 'gone'} does not exist (clone the repo there, "
        "or fix the path)",
        f"problem: repos.plain.path: {plain} is not a git clone (git clone <url> {plain})",
        f"problem: repos.lonely.path: has no remote 'origin' (its remotes: none); git -C "
        f"{no_remote} remote add origin <url>, or set remote",
        "problem: repos.lonely.path: has no branch 'main' (neither refs/heads/main nor "
        "refs/remotes/origin/main); fetch it, or set default_branch",
        "problem: repos.good.path: has no branch 'trunk' (neither refs/heads/trunk nor "
        "refs/remotes/origin/trunk); fetch it, or set default_branch",
    ]


def test_check_online_asks_each_remote(tmp_path: Path) -> None:
    repo, bare = make_repo(tmp_path)
    example_config(tmp_path, repo.path)
    assert conveyor(tmp_path, "check", "--online").returncode == 0
    bare.rename(tmp_path / "moved.git")  # the remote is gone
    done = conveyor(tmp_path, "check", "--online")
    assert done.returncode == 2
    assert "problem: repos.app.remote: remote 'origin' does not answer:" in done.stdout


# -- conveyor serve refuses to start -----------------------------------------------------------


def test_serve_refuses_a_broken_repo_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "conveyor.toml"
    config.write_text(f'[[repos]]\nname = "app"\npath = "{tmp_path / "nowhere"}"\n')
    port = free_port()
    done = conveyor(tmp_path, "serve", "--port", str(port))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        f"conveyor: problem: repos.app.path: {tmp_path / 'nowhere'} does not exist "
        "(clone the repo there, or fix the path)"
    )
    assert "Traceback" not in done.stderr and not (tmp_path / ".conveyor").exists()


def test_serve_with_an_unusable_data_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = conveyor(tmp_path, "serve", env={"CONVEYOR_DATA_DIR": str(blocker / "data")})
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"conveyor: problem: server.data_dir: {blocker / 'data'} cannot be made: "
        f"{blocker} is not a directory"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("verb", [["serve"], ["db", "upgrade"]])
def test_an_unreachable_postgres_is_one_line_exit_3(tmp_path: Path, verb: list[str]) -> None:
    url = f"postgresql://conveyor:pw-do-not-print@127.0.0.1:{free_port()}/conveyor"
    done = conveyor(tmp_path, *verb, env={"CONVEYOR_DATABASE_URL": url})
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.splitlines()[-1].startswith(
        "conveyor: cannot reach the database PostgreSQL conveyor@127.0.0.1:"
    )
    assert done.stderr.splitlines()[-1].endswith(
        "start it, or fix server.database_url (CONVEYOR_DATABASE_URL)"
    )
    assert "pw-do-not-print" not in done.stderr and "Traceback" not in done.stderr


def test_a_port_in_use_is_one_line_exit_3_and_starts_no_work(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = conveyor(tmp_path, "serve", "--port", str(port))
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        f"conveyor: cannot listen on 127.0.0.1:{port}: the port is in use (another "
        "conveyor?); stop that process, or choose another port with --port or server.port"
    )
    assert "startup complete" not in done.stderr and "conveyor starting" not in done.stderr
    assert not (tmp_path / ".conveyor" / "conveyor.db").exists()  # no schema, no workers


@pytest.mark.timeout(120)
def test_the_start_up_line_says_what_is_in_use_and_no_secret(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path)
    example_config(
        tmp_path,
        repo.path,
        **{'admin_token = ""': 'admin_token = "tok-do-not-print-0123456789"'},
    )
    port = free_port()
    env = {
        "CONVEYOR_PORT": str(port),
        "CONVEYOR_PLANE_WEBHOOK_SECRET": "wh-do-not-print-0123456789",
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli.main", "serve"],
        cwd=tmp_path,
        env={**clean, **env, "CONVEYOR_RECONCILE_ENABLED": "false"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    start = next(line for line in out.splitlines() if "conveyor starting" in line)
    assert f"url=http://127.0.0.1:{port}" in start
    assert f"config={tmp_path / 'conveyor.toml'}" in start
    # Values with spaces are quoted in the text format (no value can forge a field).
    assert 'database="SQLite .conveyor/conveyor.db"' in start
    assert f'repos="app={repo.path} (plane)"' in start
    assert 'trackers="plane (webhooks)"' in start
    assert 'agents="analysis=claude implementation=claude review=claude"' in start
    assert "do-not-print" not in out


def test_check_says_when_the_database_does_not_answer(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path)
    example_config(tmp_path, repo.path)
    url = f"postgresql://conveyor:pw-do-not-print@127.0.0.1:{free_port()}/conveyor"
    done = conveyor(tmp_path, "check", env={"CONVEYOR_DATABASE_URL": url})
    assert done.returncode == 2 and "pw-do-not-print" not in done.stdout
    problem = next(line for line in done.stdout.splitlines() if line.startswith("problem:"))
    assert problem.startswith(
        "problem: server.database_url: cannot reach the database PostgreSQL conveyor@127.0.0.1:"
    )


def test_check_accepts_a_postgres_that_answers(tmp_path: Path, postgres_url: str) -> None:
    repo, _ = make_repo(tmp_path)
    example_config(tmp_path, repo.path)
    done = conveyor(tmp_path, "check", env={"CONVEYOR_DATABASE_URL": postgres_url})
    assert done.returncode == 0, done.stdout
    assert "problem:" not in done.stdout


def test_check_names_a_shared_database_not_yet_upgraded(
    tmp_path: Path, empty_postgres_url: str
) -> None:
    repo, _ = make_repo(tmp_path)
    example_config(tmp_path, repo.path)
    env = {"CONVEYOR_DATABASE_URL": empty_postgres_url}
    done = conveyor(tmp_path, "check", env=env)
    assert done.returncode == 2, done.stdout
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [
        "problem: server.database_url: the database schema is at revision none, this "
        f"conveyor needs {head_revision()}: run `conveyor db upgrade` against "
        "server.database_url once, then start"
    ]


def test_serve_on_a_shared_database_not_yet_upgraded_is_one_line_exit_2(
    tmp_path: Path, postgres_url: str
) -> None:
    from alembic import command

    from state.db import alembic_config, make_engine

    engine = make_engine(postgres_url)
    command.downgrade(alembic_config(engine), "0003")
    engine.dispose()
    repo, _ = make_repo(tmp_path)
    example_config(tmp_path, repo.path)
    port = free_port()
    env = {"CONVEYOR_DATABASE_URL": postgres_url, "CONVEYOR_PORT": str(port)}
    done = conveyor(tmp_path, "serve", env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("conveyor: ")]
    assert len(errors) == 1 and "run `conveyor db upgrade`" in errors[0], done.stderr
    with socket.socket() as s:  # nothing was bound
        s.bind(("127.0.0.1", port))
