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
