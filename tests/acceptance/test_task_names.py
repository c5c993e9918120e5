"""Two tickets never share a directory or a branch, even with the same key (two
trackers, or keys that differ only in case): the later task's names carry its id. The
names come from the real store, as the engine asks for them; the agent's docs and log
land inside their roots, under those names."""

from __future__ import annotations

import time
from pathlib import Path

from bot.engine.task_names import task_names
from integrations.names import is_safe_name
from state.models import NewTask, Task
from state.store import insert_task, tombstone_task_keys
from tests.harness import Harness, running, wait_until


async def add(h: Harness, tracker: str, issue_id: str, key: str) -> Task:
    new = NewTask(tracker=tracker, issue_id=issue_id, key=key, repo="app")
    task: Task = await h.store.run(insert_task, new, time.time())
    return task


async def test_two_tickets_with_one_key_get_different_names(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        plane = await add(h, "plane", "0b9f3d4e-8f1a-4c2e-9d3b-5a6c7e8f9a0b", "PROJ-42")
        jira = await add(h, "jira", "10042", "PROJ-42")
        linear = await add(h, "linear", "5a6c7e8f-0b9f-4c2e-9d3b-3d4e8f1a9a0b", "proj-42")
        github = await add(h, "github", "acme/proj#42", "proj#42")
        names = [await task_names(h.svc, t) for t in (plane, jira, linear, github)]
        assert names[0].directory == "proj-42" and names[0].branch == "conveyor/proj-42"
        assert len({n.directory for n in names}) == 4
        assert len({n.branch for n in names}) == 4
        assert all(is_safe_name(n.directory) for n in names)
        # The same ticket again, after its first task was cancelled: its names are its own
        # ticket's, and still never another ticket's.
        await h.store.run(tombstone_task_keys, plane, time.time())
        again = await add(h, "plane", plane.issue_id, "PROJ-42")
        mine = await task_names(h.svc, again)
        assert mine.directory not in {n.directory for n in names[1:]}


async def test_the_agent_writes_inside_the_docs_and_logs_roots(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        await h.send("To Analyse")
        task = await h.task()

        async def ran() -> list[Path]:
            jobs = await h.jobs(task.id)
            return [Path(j.log_path) for j in jobs if j.log_path and Path(j.log_path).exists()]

        logs = await wait_until(ran, 30, "the agent's log")
        docs_root, logs_root = h.svc.data_dir / "docs", h.svc.data_dir / "logs"
        assert all(p.resolve().parent.parent == logs_root for p in logs)
        assert [p.name for p in docs_root.iterdir()] == ["proj-42"]
