"""Pull-request mode through the real app: real agents, real git with a bare remote, and
GitHub's API in respx over that remote (tests/forge_sim.py). Ticket → PR opened →
checks pending → green → merged → branch deleted; a failing check blocks; STOP before
the merge closes the PR; STOP during the merge call is deferred; a branch the forge
protects is never deleted; push mode deletes the merged branch too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import respx

from state import jobs, stops
from state.models import JobStatus, Stage, Task
from state.store import events_for_task
from tests.forge_sim import FORGE_REPO, GITEA_URL, GITHUB_API, GITHUB_WEB, GiteaSim, GitHubSim
from tests.gitrepo import git
from tests.harness import Harness, restarted, running, wait_until, write_agent

pytestmark = pytest.mark.timeout(180)

TOKEN = "ghp_pull_request_token_0123456789"
ADMIN = {"X-Admin-Token": "admin-token-0123456789"}  # what base_settings gives the server
# Commits a file of its own per task and stage (three tasks merge without conflicts) and
# says which pull request it saw.
AGENT = """\
#!/bin/sh
set -e
name="$(echo "$CONVEYOR_TASK_KEY" | tr -c 'A-Za-z0-9\\n' '_')-$CONVEYOR_STAGE.txt"
echo "$CONVEYOR_STAGE of $CONVEYOR_TASK_KEY" > "$name"
git add "$name"
git commit -q -m "$CONVEYOR_STAGE by agent"
echo "${CONVEYOR_PR_URL:-none}" > "$CONVEYOR_DOCS_DIR/$CONVEYOR_STAGE.pr"
"""


def _settings(tmp_path: Path, **repo: Any) -> dict[str, Any]:
    command = write_agent(tmp_path / "agents", "pr-agent.sh", AGENT)
    return {
        "repo_settings": {
            "merge": "pull_request",
            "forge": "github",
            "forge_repo": FORGE_REPO,
            **repo,
        },
        "trackers.github.token": TOKEN,
        "trackers.github.api_url": GITHUB_API,
        "agents.analysis": command,
        "agents.implementation": command,
        "agents.review": command,
    }


@contextlib.asynccontextmanager
async def pr_mode(tmp_path: Path, **repo: Any) -> AsyncIterator[tuple[Harness, GitHubSim]]:
    with respx.mock(assert_all_called=False) as router:
        kw = _settings(tmp_path, **repo)
        async with running(tmp_path, **kw) as h:
            sim = GitHubSim(h.bare, checks={"ci/build": "pending"})
            sim.install(router, GITHUB_API)
            yield h, sim


async def _stage(h: Harness, stage: Stage, ref: str = "PROJ-42") -> Task:
    async def check() -> Task | None:
        task = await h.task(ref)
        return task if task.stage is stage else None

    return await wait_until(check, timeout=90, what=f"{ref} in {stage.value}")


async def _merged_branch_settled(h: Harness, ref: str = "PROJ-42") -> Task:
    """Done, and the merged branch's deletion recorded (it follows the merge)."""

    async def check() -> Task | None:
        task = await h.task(ref)
        kinds = [e["kind"] for e in await _events(h, task)]
        settled = any(kind.startswith("merged_branch_") for kind in kinds)
        return task if task.stage is Stage.DONE and settled else None

    return await wait_until(check, timeout=90, what=f"{ref} done, its branch settled")


async def _reads(sim: GitHubSim, at_least: int) -> bool:
    return sum("/repos/acme/app/commits/" in c for c in sim.calls) >= at_least


async def _handed_back(h: Harness, ref: str = "PROJ-42") -> bool:
    """The merge job is back in the queue between two polls of the checks."""
    task = await h.task(ref)
    merge = [j for j in await h.jobs(task.id) if j.stage == "merge"]
    return bool(merge) and merge[-1].status is JobStatus.QUEUED


async def _events(h: Harness, task: Task) -> list[dict[str, Any]]:
    return await h.store.run_read(events_for_task, task.id)


async def test_ticket_to_merged_pull_request_then_the_branch_is_deleted(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        waiting = await _stage(h, Stage.MERGE)
        assert len(sim.created) == 1
        assert sim.created[0] == {
            "title": "PROJ-42: Fix login redirect loop",
            "head": waiting.branch,
            "base": "main",
            "body": sim.created[0]["body"],
        }
        assert "PROJ-42: Fix login redirect loop" in sim.created[0]["body"]
        assert "conveyor opened this pull request" in sim.created[0]["body"]
        # Checks pending: the merge stage waits outside the critical window.
        await wait_until(lambda: _reads(sim, 2), timeout=30, what="checks read twice")
        waiting = await h.task()
        assert waiting.stage is Stage.MERGE and waiting.merge_initiated_at is None
        assert (waiting.pr_number, waiting.pr_url) == (42, f"{GITHUB_WEB}/acme/app/pull/42")
        assert await h.store.run_read(jobs.lease_holder, "app") == waiting.id
        shown = (await h.client.get("/tasks/PROJ-42")).json()["task"]
        assert shown["pr_number"] == 42 and shown["pr_url"] == waiting.pr_url
        docs = h.svc.docs_dir(waiting.key)
        assert (docs / "implementation.pr").read_text().strip() == "none"
        assert (docs / "review.pr").read_text().strip() == waiting.pr_url  # CONVEYOR_PR_URL
        assert sim.merges == []

        sim.checks["ci/build"] = "success"
        done = await _merged_branch_settled(h)
        assert sim.merges == [{"merge_method": "merge", "sha": done.branch_sha}]
        assert done.merge_sha == h.remote_sha("main")
        subject = git(h.bare, "log", "-1", "--format=%s", "main")
        assert subject == f"Merge pull request #42 from acme/{done.branch}"
        assert h.remote_branches() == ["main"]  # the merged branch is gone
        kinds = [e["kind"] for e in await _events(h, done)]
        assert kinds.count("pull_request_opened") == 1 and "merged_branch_deleted" in kinds
        assert await h.store.run_read(jobs.lease_holder, "app") is None
        assert sim.auth == {f"Bearer {TOKEN}"}


async def test_a_failing_required_check_blocks_with_its_name(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        sim.checks["ci/build"] = "failure"
        await h.send("To Analyse")
        blocked = await _stage(h, Stage.BLOCKED)
        assert blocked.blocked_reason == "failing check: ci/build"
        assert blocked.merge_initiated_at is None and blocked.merged_at is None
        assert sim.merges == [] and sim.pulls[42].state == "open"
        assert await h.store.run_read(jobs.lease_holder, "app") is None
        assert blocked.branch in h.remote_branches()  # kept for a person to fix


async def test_stop_while_waiting_for_checks_closes_the_pull_request(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        await _stage(h, Stage.MERGE)
        await wait_until(lambda: _reads(sim, 1), timeout=30, what="checks read")
        await wait_until(lambda: _handed_back(h), timeout=30, what="merge job back in the queue")
        answer = (await h.send("STOP")).json()
        # Between two polls (the job queued, the lease kept) a STOP resets at once. The
        # polls come every 0.5 s at first: on a loaded machine the next one may already be
        # running when the STOP lands, which defers it until that poll hands back.
        assert answer["outcome"] in ("stop_requested", "stop_deferred"), answer
        if answer["outcome"] == "stop_deferred":
            rec = await h.store.run_read(stops.get_stop, answer["stop_id"])
            assert rec is not None and rec.window == "merge"
        done = await _stage(h, Stage.CANCELLED)
        assert sim.pulls[42].state == "closed" and not sim.pulls[42].merged
        assert len(sim.comments) == 1 and sim.comments[0][0] == 42
        assert "conveyor stopped PROJ-42" in sim.comments[0][1]
        assert "closed without merging" in sim.comments[0][1]
        assert sim.merges == []
        assert h.remote_branches() == ["main"]
        rec = await _closed_stop(h, done.id)
        closed = stops.stop_steps(rec)["pull_request"]
        assert isinstance(closed.pop("at"), float)  # when the step was done
        assert closed == {"closed": True, "number": 42}
        assert done.merged_at is None


async def test_stop_during_the_merge_call_is_deferred_then_applied(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        sim.checks["ci/build"] = "success"
        sim.merge_hold = asyncio.Event()
        await h.send("To Analyse")
        await asyncio.wait_for(sim.merge_entered.wait(), timeout=90)
        answer = await h.send("STOP")
        assert answer.json()["outcome"] == "stop_deferred"
        queue = (await h.client.get("/queue")).json()
        assert queue["stop"]["deferred"][0]["window"] == "merge"
        merging = [row for row in queue["running"] if row["stage"] == "merge"]
        assert [(r["task"], r["pr_number"], r["pr_url"]) for r in merging] == [
            ("PROJ-42", 42, f"{GITHUB_WEB}/acme/app/pull/42")
        ]
        sim.merge_hold.set()
        done = await _stage(h, Stage.CANCELLED)
        assert len(sim.merges) == 1 and sim.pulls[42].merged  # merged once, stays merged
        assert done.merged_at is not None and done.merge_sha == h.remote_sha("main")
        assert sim.comments == []  # a merged pull request is never closed or commented
        rec = await _closed_stop(h, done.id)
        steps = stops.stop_steps(rec)
        assert steps["pull_request"]["closed"] is False
        assert steps["terminal"]["effects_committed"] is True
        assert h.remote_branches() == ["main"]
        merge_jobs = [j for j in await h.jobs(done.id) if j.stage == "merge"]
        assert [j.status.value for j in merge_jobs] == ["succeeded"]


async def test_a_branch_the_forge_protects_is_never_deleted(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        await _stage(h, Stage.MERGE)
        # No protected_branches pattern names it: only the forge knows.
        sim.protected.append("conveyor/*")
        sim.checks["ci/build"] = "success"
        done = await _merged_branch_settled(h)
        assert done.branch in h.remote_branches()
        cleanups = (await h.client.get("/tasks/PROJ-42")).json()["cleanups"]
        assert [(c["step"], c["status"]) for c in cleanups] == [("remote_branch", "refused")]
        assert cleanups[0]["last_error"].startswith("protected")
        kinds = [e["kind"] for e in await _events(h, done)]
        assert "merged_branch_refused" in kinds


async def test_a_forge_that_cannot_be_asked_keeps_the_deletion_pending(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        await _stage(h, Stage.MERGE)
        sim.checks["ci/build"] = "success"
        sim.merge_hold = asyncio.Event()
        await asyncio.wait_for(sim.merge_entered.wait(), timeout=90)
        sim.down = True  # the merge answers; every later call fails
        sim.merge_hold.set()
        await wait_until(_pending_cleanup(h), timeout=30, what="cleanup pending")
        assert (await h.task()).branch in h.remote_branches()  # unknown protection: kept
        sim.down = False
        await wait_until(_no_pending_cleanup(h), timeout=30, what="cleanup cleared")
        assert h.remote_branches() == ["main"]


def _pending_cleanup(h: Harness):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        queue = (await h.client.get("/queue")).json()
        return any(c["step"] == "remote_branch" for c in queue["stop"]["cleanup_pending"])

    return check


def _no_pending_cleanup(h: Harness):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return not (await h.client.get("/queue")).json()["stop"]["cleanup_pending"]

    return check


async def test_push_mode_deletes_each_merged_branch(tmp_path: Path) -> None:
    command = write_agent(tmp_path / "agents", "pr-agent.sh", AGENT)
    kw = {f"agents.{stage}": command for stage in ("analysis", "implementation", "review")}
    async with running(tmp_path, **kw) as h:
        tickets = [
            ("1c9c7a36-6f53-4a4c-9f55-3b0b9b1f7a01", 1),
            ("2c9c7a36-6f53-4a4c-9f55-3b0b9b1f7a02", 2),
            ("3c9c7a36-6f53-4a4c-9f55-3b0b9b1f7a03", 3),
        ]
        for issue, seq in tickets:
            await h.send("To Analyse", issue=issue, seq=seq, title=f"Ticket {seq}")
        for _, seq in tickets:
            await _merged_branch_settled(h, ref=f"PROJ-{seq}")
        assert h.remote_branches() == ["main"]  # three merged tasks, no branch left behind
        merges = git(h.bare, "log", "--merges", "--format=%s", "main").splitlines()
        assert len(merges) == 3


async def test_gitea_pull_request_merged_with_squash_then_the_branch_is_deleted(
    tmp_path: Path,
) -> None:
    command = write_agent(tmp_path / "agents", "pr-agent.sh", AGENT)
    repo = {"merge": "pull_request", "forge": "gitea", "forge_repo": FORGE_REPO}
    kw = {f"agents.{stage}": command for stage in ("analysis", "implementation", "review")}
    kw |= {
        "trackers.gitea.token": "gitea_pr_token_0123456789",
        "trackers.gitea.base_url": GITEA_URL,
    }
    with respx.mock(assert_all_called=False) as router:
        async with running(tmp_path, repo_settings={**repo, "merge_method": "squash"}, **kw) as h:
            sim = GiteaSim(h.bare, checks={"ci / build (push)": "pending"})
            sim.install(router, GITEA_URL)
            await h.send("To Analyse")
            waiting = await _stage(h, Stage.MERGE)
            await wait_until(lambda: _reads(sim, 1), timeout=30, what="status read")
            assert (await h.task()).pr_url == f"{GITEA_URL}/acme/app/pulls/7"
            assert sim.created[0]["head"] == waiting.branch and sim.created[0]["base"] == "main"
            sim.checks["ci / build (push)"] = "success"
            done = await _merged_branch_settled(h)
            assert sim.merges == [
                {
                    "Do": "squash",
                    "head_commit_id": done.branch_sha,
                    "delete_branch_after_merge": False,
                }
            ]
            subject = git(h.bare, "log", "-1", "--format=%s", "main")
            assert subject == "PROJ-42: Fix login redirect loop (#7)"
            assert done.merge_sha == h.remote_sha("main")
            assert h.remote_branches() == ["main"]
            assert sim.auth == {"token gitea_pr_token_0123456789"}


async def test_checks_pending_past_the_timeout_block_with_the_reason(tmp_path: Path) -> None:
    async with pr_mode(tmp_path, merge_timeout_seconds=1) as (h, sim):
        await h.send("To Analyse")
        blocked = await _stage(h, Stage.BLOCKED)
        assert blocked.blocked_reason == ("not mergeable after 1 s: waiting for checks: ci/build")
        assert sim.merges == [] and await h.store.run_read(jobs.lease_holder, "app") is None


async def test_a_pull_request_closed_by_hand_blocks_and_a_retry_opens_a_new_one(
    tmp_path: Path,
) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        await _stage(h, Stage.MERGE)
        await wait_until(lambda: _reads(sim, 1), timeout=30, what="checks read")
        sim.pulls[42].state = "closed"  # a person closes it on the forge, unmerged
        blocked = await _stage(h, Stage.BLOCKED)
        assert blocked.blocked_reason == "the pull request is closed"
        assert await h.store.run_read(jobs.lease_holder, "app") is None

        sim.checks["ci/build"] = "success"
        answer = await h.client.post("/tasks/PROJ-42/retry", headers=ADMIN)
        assert answer.status_code == 202, answer.text
        done = await _merged_branch_settled(h)
        assert sorted(sim.pulls) == [42, 43]
        assert sim.pulls[42].state == "closed" and not sim.pulls[42].merged  # left as closed
        assert sim.pulls[43].merged and done.pr_number == 43
        assert sim.merges == [{"merge_method": "merge", "sha": done.branch_sha}]
        kinds = [e["kind"] for e in await _events(h, done)]
        assert kinds.count("pull_request_closed_outside") == 1
        assert kinds.count("pull_request_opened") == 2


@pytest.mark.parametrize("forge_merged", [True, False], ids=["merged", "not-merged"])
async def test_a_server_stopped_during_the_merge_call_settles_the_merge_after_restart(
    tmp_path: Path, forge_merged: bool
) -> None:
    with respx.mock(assert_all_called=False) as router:
        async with running(tmp_path, **_settings(tmp_path)) as h:
            sim = GitHubSim(h.bare, checks={"ci/build": "success"})
            sim.merge_hold = asyncio.Event()  # the merge call hangs: the server goes down
            sim.install(router, GITHUB_API)
            await h.send("To Analyse")
            await asyncio.wait_for(sim.merge_entered.wait(), timeout=90)
            inside = await h.task()
            assert inside.merge_initiated_at is not None and inside.merged_at is None
        sim.merge_hold.set()
        if forge_merged:  # the forge merged before the answer could reach conveyor
            await sim.merge_for_real(sim.pulls[42], "merge")
        sim.merges.clear()
        async with restarted(h) as again:
            done = await _merged_branch_settled(again)
            assert done.merge_sha == again.remote_sha("main")
            # Read back first: merged by the lost call, or merged now, never twice.
            assert len(sim.merges) == (0 if forge_merged else 1)
            merges = git(h.bare, "log", "--merges", "--format=%s", "main").splitlines()
            assert merges == [f"Merge pull request #42 from acme/{done.branch}"]
            assert again.remote_branches() == ["main"]
            assert await again.store.run_read(jobs.lease_holder, "app") is None


async def test_someone_elses_push_to_the_branch_is_never_merged(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        task = await _stage(h, Stage.MERGE)
        other = tmp_path / "someone"
        git(tmp_path, "clone", "-q", str(h.bare), str(other))
        git(other, "config", "user.name", "Someone"), git(other, "config", "user.email", "s@x")
        git(other, "checkout", "-q", task.branch or "")
        (other / "theirs.txt").write_text("not reviewed\n")
        git(other, "add", "theirs.txt"), git(other, "commit", "-q", "-m", "their work")
        git(other, "push", "-q", "origin", task.branch or "")
        main_before = h.remote_sha("main")
        sim.checks["ci/build"] = "success"
        blocked = await _stage(h, Stage.BLOCKED)
        assert blocked.blocked_reason == "the branch moved since conveyor pushed it"
        assert sim.merges == [{"merge_method": "merge", "sha": task.branch_sha}]
        assert h.remote_sha("main") == main_before and not sim.pulls[42].merged
        assert blocked.merge_initiated_at is None


async def test_a_lost_merge_answer_is_read_back_from_the_pull_request(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        sim.checks["ci/build"] = "success"
        sim.lose_merge_answers = 4  # every attempt of the first merge call answers 502
        await h.send("To Analyse")
        done = await _merged_branch_settled(h)
        merges = git(h.bare, "log", "--merges", "--format=%H", "main").splitlines()
        assert merges == [done.merge_sha]  # merged once
        kinds = [e["kind"] for e in await _events(h, done)]
        assert kinds.count("merge_call_failed") == 1 and kinds.count("merged") == 1
        assert kinds.index("merge_call_failed") < kinds.index("merged")


async def test_stop_while_the_forge_is_down_closes_the_pull_request_once_it_is_back(
    tmp_path: Path,
) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        await _stage(h, Stage.MERGE)
        await wait_until(lambda: _reads(sim, 1), timeout=30, what="checks read")
        sim.down = True
        assert (await h.send("STOP")).json()["outcome"] == "stop_requested"
        done = await _stage(h, Stage.CANCELLED)
        await wait_until(_pending_steps(h, {"pull_request", "remote_branch"}), 30, "both pending")
        assert sim.pulls[42].state == "open" and done.branch in h.remote_branches()
        sim.down = False
        await wait_until(_no_pending_cleanup(h), timeout=60, what="cleanups cleared")
        assert sim.pulls[42].state == "closed" and not sim.pulls[42].merged
        assert [number for number, _ in sim.comments] == [42]
        assert h.remote_branches() == ["main"]


def _pending_steps(h: Harness, wanted: set[str]):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        queue = (await h.client.get("/queue")).json()
        return {c["step"] for c in queue["stop"]["cleanup_pending"]} == wanted

    return check


async def test_a_merge_refused_for_now_is_tried_again(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        sim.checks["ci/build"] = "success"
        sim.refuse_merges = 1
        await h.send("To Analyse")
        done = await _merged_branch_settled(h)
        assert len(sim.merges) == 2 and sim.pulls[42].merged
        refused = [e for e in await _events(h, done) if e["kind"] == "merge_refused"]
        assert len(refused) == 1 and "Base branch was modified" in refused[0]["detail"]["reason"]
        assert git(h.bare, "log", "--merges", "--format=%H", "main").splitlines() == [
            done.merge_sha
        ]


async def test_a_branch_the_forge_protects_is_never_pushed_to(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        sim.protected.append("conveyor/*")  # the forge protects every task branch
        await h.send("To Analyse")
        blocked = await _stage(h, Stage.BLOCKED)
        first = (await h.jobs(blocked.id))[0]
        assert first.stage == "analysis" and first.error is not None
        assert first.error.startswith(f"push: refusing to push {blocked.branch}: protected")
        assert "protected on github (acme/app)" in first.error
        assert h.remote_branches() == ["main"] and sim.created == []


async def test_stop_after_someone_merged_the_pull_request_by_hand(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        await _stage(h, Stage.MERGE)
        await wait_until(lambda: _reads(sim, 1), timeout=30, what="checks read")
        sim.read_hold = asyncio.Event()  # conveyor does not see the merge before the STOP
        by_hand = await sim.merge_for_real(sim.pulls[42], "merge")
        answer = await h.send("STOP")
        assert answer.json()["outcome"] in ("stop_requested", "stop_deferred")
        sim.read_hold.set()
        done = await _stage(h, Stage.CANCELLED)
        assert sim.merges == [] and sim.comments == []  # never merged again, never closed
        assert (done.merge_sha, done.merged_at is not None) == (by_hand, True)
        rec = await _closed_stop(h, done.id)
        assert stops.stop_steps(rec)["terminal"]["effects_committed"] is True
        kinds = [e["kind"] for e in await _events(h, done)]
        assert "merged_outside_conveyor" in kinds
        assert h.remote_branches() == ["main"]


async def test_stop_during_a_merge_call_that_failed_applies_once_nothing_merged(
    tmp_path: Path,
) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        sim.checks["ci/build"] = "success"
        sim.merge_hold = asyncio.Event()
        sim.break_merges = 4  # the call and its retries fail before the forge merges
        await h.send("To Analyse")
        await asyncio.wait_for(sim.merge_entered.wait(), timeout=90)
        main_before = h.remote_sha("main")
        assert (await h.send("STOP")).json()["outcome"] == "stop_deferred"
        sim.merge_hold.set()
        done = await _stage(h, Stage.CANCELLED)
        assert done.merged_at is None and h.remote_sha("main") == main_before
        assert len(sim.merges) == 4  # one call, retried by the client; never called again
        assert sim.pulls[42].state == "closed" and [n for n, _ in sim.comments] == [42]
        rec = await _closed_stop(h, done.id)
        assert stops.stop_steps(rec)["terminal"]["effects_committed"] is False
        assert h.remote_branches() == ["main"]


@contextlib.asynccontextmanager
async def gitea_mode(tmp_path: Path) -> AsyncIterator[tuple[Harness, GiteaSim]]:
    command = write_agent(tmp_path / "agents", "pr-agent.sh", AGENT)
    repo = {"merge": "pull_request", "forge": "gitea", "forge_repo": FORGE_REPO}
    kw = {f"agents.{stage}": command for stage in ("analysis", "implementation", "review")}
    kw |= {
        "trackers.gitea.token": "gitea_pr_token_0123456789",
        "trackers.gitea.base_url": GITEA_URL,
    }
    with respx.mock(assert_all_called=False) as router:
        async with running(tmp_path, repo_settings=repo, **kw) as h:
            sim = GiteaSim(h.bare, checks={"ci / build (push)": "pending"})
            sim.install(router, GITEA_URL)
            yield h, sim


async def test_gitea_branch_protection_rules_keep_the_merged_branch(tmp_path: Path) -> None:
    async with gitea_mode(tmp_path) as (h, sim):
        await h.send("To Analyse")
        await _stage(h, Stage.MERGE)
        sim.protected.append("conveyor/*")  # a Gitea rule (glob), no pattern in conveyor.toml
        sim.checks["ci / build (push)"] = "success"
        done = await _merged_branch_settled(h)
        assert done.branch in h.remote_branches()
        cleanups = (await h.client.get("/tasks/PROJ-42")).json()["cleanups"]
        assert [(c["step"], c["status"]) for c in cleanups] == [("remote_branch", "refused")]
        assert "protected on gitea (acme/app)" in cleanups[0]["last_error"]


async def test_three_tasks_merged_through_pull_requests_leave_no_branch(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        sim.checks["ci/build"] = "success"
        for seq in (1, 2, 3):
            issue = f"{seq}d9c7a36-6f53-4a4c-9f55-3b0b9b1f7a0{seq}"
            await h.send("To Analyse", issue=issue, seq=seq, title=f"Ticket {seq}")
        done = [await _merged_branch_settled(h, ref=f"PROJ-{seq}") for seq in (1, 2, 3)]
        assert h.remote_branches() == ["main"]  # three merged tasks, no branch left behind
        assert sorted(t.pr_number or 0 for t in done) == [42, 43, 44]
        assert all(p.merged for p in sim.pulls.values()) and len(sim.merges) == 3
        merges = git(h.bare, "log", "--merges", "--format=%H", "main").splitlines()
        assert sorted(merges) == sorted(t.merge_sha or "" for t in done)


async def test_a_pull_request_repo_without_its_forge_never_pushes_to_main(tmp_path: Path) -> None:
    async with pr_mode(tmp_path) as (h, sim):
        h.svc.forges.clear()  # start-up refuses this; a port swapped out by hand must not push
        main_before = h.remote_sha("main")
        await h.send("To Analyse")
        blocked = await _stage(h, Stage.BLOCKED)
        assert blocked.blocked_reason == "no forge 'github' to merge the pull request through"
        assert h.remote_sha("main") == main_before and sim.calls == []


async def _closed_stop(h: Harness, task_id: int) -> stops.StopRecord:
    """The task's last stop record once it is closed: the task turns `cancelled` at the
    reset's terminal step, a moment before that step (and notify) are recorded."""

    async def closed() -> stops.StopRecord | None:
        records = await h.store.run_read(stops.stops_for_task, task_id)
        done = records and records[-1].status is stops.StopStatus.DONE
        return records[-1] if done else None

    found: stops.StopRecord = await wait_until(closed, timeout=30, what="stop record closed")
    return found
