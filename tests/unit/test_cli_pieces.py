"""The CLI's pure pieces: how a quick verb finds the server, agent log tails, the
start-up line's summaries and the tables' summaries of objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.reach import load_reach
from bot.cli.tables import summary, took
from bot.engine.agent_logs import failure, read_from, tail
from bot.errors import ConfigError
from bot.startup import _program, describe_database


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conveyor.toml"
    path.write_text(text)
    return path


def test_reach_reads_server_section_and_env_wins(tmp_path: Path) -> None:
    config = write(tmp_path, '[server]\nhost = "0.0.0.0"\nport = 9000\nadmin_token = "t1"\n')
    reach = load_reach(config, env={})
    assert (reach.url, reach.admin_token) == ("http://127.0.0.1:9000", "t1")
    env = {"CONVEYOR_PORT": "9001", "CONVEYOR_ADMIN_TOKEN": "t2", "CONVEYOR_READ_TOKEN": "r"}
    reach = load_reach(config, env=env)
    assert (reach.url, reach.admin_token, reach.read_token) == ("http://127.0.0.1:9001", "t2", "r")
    assert load_reach(config, env={"CONVEYOR_URL": "http://h:1"}).url == "http://h:1"
    assert load_reach(config, env={}, url="http://given:2").url == "http://given:2"
    assert "t1" not in repr(load_reach(config, env={}))


def test_reach_ignores_the_rest_of_the_settings(tmp_path: Path) -> None:
    # A quick verb does not validate what only the server needs (check does).
    config = write(tmp_path, "[server]\nport = 8081\n[stop]\ngrace = 1\n[[repos]]\nname = 1\n")
    assert load_reach(config, env={}).url == "http://127.0.0.1:8081"


@pytest.mark.parametrize("port", ['"x"', "0", "70000", "true"])
def test_reach_refuses_a_bad_port_in_one_line(tmp_path: Path, port: str) -> None:
    config = write(tmp_path, f"[server]\nport = {port}\n")
    with pytest.raises(ConfigError, match=r"^server.port must be an integer from 1 to 65535"):
        load_reach(config, env={})


def test_tail_and_read_from(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    lines = [f"line {n}\n" for n in range(1, 5001)]
    log.write_text("".join(lines))
    assert tail(log, 3) == b"".join(line.encode() for line in lines[-3:])
    assert tail(log, 1, end=len(lines[0])) == lines[0].encode()
    assert tail(tmp_path / "missing.log", 3) == b""
    data, end = read_from(log, 7, max_bytes=7)
    assert (data, end) == (b"line 2\n", 14)


def test_failure_names_the_exit_and_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_text("".join(f"out {n}\n" for n in range(20)))
    text = failure(3, log)
    assert text.splitlines()[:2] == ["exit status 3", "last output:"]
    assert text.splitlines()[2:] == [f"out {n}" for n in range(10, 20)]
    empty = tmp_path / "2.log"
    empty.write_text("")
    assert failure(-9, empty) == f"killed by signal 9\nthe agent printed nothing (log {empty})"


def test_describe_database_never_shows_a_password() -> None:
    url = "postgresql://ada:s3cret@db.example:5433/conveyor"
    assert describe_database(url) == "PostgreSQL ada@db.example:5433/conveyor"
    assert describe_database("sqlite:///.conveyor/conveyor.db") == "SQLite .conveyor/conveyor.db"
    assert describe_database("not a url") == "(not a database URL)"


@pytest.mark.parametrize(
    ("command", "program"),
    [
        ('claude -p "do it" --permission-mode acceptEdits', "claude"),
        ("exec python3 /srv/agents/impl.py --flag", "python3 impl.py"),
        ("API_KEY=abc123 /usr/local/bin/codex exec go", "codex"),
        ("exec sh /x/commit.sh", "sh commit.sh"),
    ],
)
def test_the_start_up_line_names_only_the_program(command: str, program: str) -> None:
    assert _program(command) == program


def test_objects_are_summarised_not_dumped() -> None:
    assert summary({"stage": "review", "attempts": [1, 2]}) == "stage=review attempts=1,2"
    assert summary(["a", "2026-11-21T10:00:01.5Z"]) == "a, 2026-11-21 10:00:01"
    assert len(summary({"x": "y" * 1000})) == 300


def test_took() -> None:
    job = {"started_at": "2026-11-21T10:00:00Z", "finished_at": "2026-11-21T10:02:05Z"}
    assert took(job) == "2m05s"
    assert took({"started_at": "2026-11-21T10:00:00Z", "status": "running"}) == "…"
    assert took({}) is None
