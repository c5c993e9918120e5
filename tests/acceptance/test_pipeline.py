"""A ticket runs end to end through the real app: agents commit, merge, deploy, done."""

from __future__ import annotations

from pathlib import Path

from state.models import JobStatus, Stage
from tests.gitrepo import git
from tests.harness import running, wait_until


async def test_start_to_done_with_merge_and_deploy(tmp_path: Path) -> None:
    marker = tmp_path / "deployed.txt"
    deploy = f"echo deployed-$CONVEYOR_TASK_KEY > {marker}"
    async with running(tmp_path, repo_settings={"deploy_command": deploy}) as h:
        main_before = h.remote_sha()
        answer = await h.send("To Analyse")
        assert answer.status_code == 202, answer.text
        assert answer.json()["outcome"] == "started"
        assert answer.json()["task"] == "PROJ-42"

        async def done():  # type: ignore[no-untyped-def]
            t = await h.task()
            return t if t.stage in (Stage.DONE, Stage.BLOCKED) else None

        task = await wait_until(done, timeout=60, what="task done")
        assert task.stage is Stage.DONE, task
        jobs = await h.jobs(task.id)
        assert [j.stage for j in jobs] == [
            "analysis",
            "implementation",
            "review",
            "merge",
            "deploy",
        ]
        assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
        main_after = h.remote_sha()
        assert main_after != main_before
        log = git(h.bare, "log", "--format=%s", "main")
        assert log.count("Merge conveyor/proj-42") == 1
        for stage in ("analysis", "implementation", "review"):
            assert f"{stage} by agent" in log
        assert marker.read_text().strip() == "deployed-PROJ-42"
        docs = h.svc.docs_dir("PROJ-42")
        assert sorted(p.name for p in docs.iterdir()) == [
            "analysis.md",
            "implementation.md",
            "review.md",
            "ticket.md",  # the ticket as the agents read it (CONVEYOR_TICKET_FILE)
        ]
        assert not Path(task.worktree_path or "").exists()  # removed when done (default)
        from state.jobs import lease_holder

        assert await h.store.run_read(lease_holder, "app") is None
