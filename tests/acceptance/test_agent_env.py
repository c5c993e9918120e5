"""An agent gets the allowlisted environment, never a copy of conveyor's own: a secret
in conveyor's environment does not reach it, PATH and HOME do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import running, wait_until, write_agent

PRINTING_AGENT = """\
import json, os, pathlib
docs = pathlib.Path(os.environ["CONVEYOR_DOCS_DIR"])
(docs / "env.json").write_text(json.dumps(dict(os.environ)))
"""


async def test_the_agent_sees_no_conveyor_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_PLANE_API_KEY", "plane-api-key-that-must-not-leak")
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://u:db-password@h/db")
    monkeypatch.setenv("SOME_UNRELATED_TOKEN", "unrelated-token-value")
    agent = write_agent(tmp_path / "agents", "print.py", PRINTING_AGENT)
    async with running(tmp_path, **{"agents.analysis": agent}) as h:
        await h.send("To Analyse")
        task = await h.task()
        env_file = h.svc.docs_dir(task.key) / "env.json"

        async def written() -> bool:
            return env_file.exists() and env_file.stat().st_size > 0

        await wait_until(written, 30, "the agent's environment")
    env = json.loads(env_file.read_text())
    text = json.dumps(env)
    assert "plane-api-key-that-must-not-leak" not in text
    assert "db-password" not in text and "unrelated-token-value" not in text
    assert "PATH" in env and env["CONVEYOR_TASK_KEY"] == task.key
    assert Path(env["CONVEYOR_TICKET_FILE"]).is_file()
    assert not [k for k in env if k.startswith("CONVEYOR_PLANE") or k == "CONVEYOR_DATABASE_URL"]


async def test_pass_env_and_agents_env_reach_the_agent_but_never_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "agent-key-it-needs")
    monkeypatch.setenv("AGENT_OPT_MODEL", "small")
    monkeypatch.setenv("AGENT_OPT_DEPTH", "2")
    monkeypatch.setenv("NOT_NAMED", "stays-home")
    # Named by pass_env, yet conveyor's own: the admin token, under its name and another.
    admin = "admin-token-0123456789"
    monkeypatch.setenv("CONVEYOR_ADMIN_TOKEN", admin)
    monkeypatch.setenv("COPY_OF_ADMIN", f"Bearer {admin}")
    agent = write_agent(tmp_path / "agents", "print.py", PRINTING_AGENT)
    settings = {
        "agents.analysis": agent,
        "agents.pass_env": ["ANTHROPIC_API_KEY", "AGENT_OPT_*", "CONVEYOR_*", "COPY_OF_ADMIN"],
        "agents.env": {"AGENT_MODE": "ci", "LEAKY": f"x{admin}"},
    }
    async with running(tmp_path, **settings) as h:
        await h.send("To Analyse")
        task = await h.task()
        env_file = h.svc.docs_dir(task.key) / "env.json"

        async def written() -> bool:
            return env_file.exists() and env_file.stat().st_size > 0

        await wait_until(written, 30, "the agent's environment")
    env = json.loads(env_file.read_text())
    assert env["ANTHROPIC_API_KEY"] == "agent-key-it-needs"
    assert (env["AGENT_OPT_MODEL"], env["AGENT_OPT_DEPTH"]) == ("small", "2")
    assert env["AGENT_MODE"] == "ci" and "NOT_NAMED" not in env
    assert admin not in json.dumps(env)
    assert {"LEAKY", "COPY_OF_ADMIN", "CONVEYOR_ADMIN_TOKEN"}.isdisjoint(env)
    conveyor = {k for k in env if k.startswith("CONVEYOR_")}
    assert conveyor <= {
        "CONVEYOR_TASK_ID",
        "CONVEYOR_TASK_KEY",
        "CONVEYOR_STAGE",
        "CONVEYOR_BRANCH",
        "CONVEYOR_WORKTREE",
        "CONVEYOR_DOCS_DIR",
        "CONVEYOR_ISSUE_TITLE",
        "CONVEYOR_ISSUE_URL",
        "CONVEYOR_TICKET_FILE",
        "CONVEYOR_RUN_ID",
        "CONVEYOR_PR_URL",
    }
