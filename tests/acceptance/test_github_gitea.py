"""GitHub and Gitea/Forgejo through the real app, with real agents, real git and a bare
remote, respx standing in for their APIs: labels start and stop the work, closing as
not planned stops it on GitHub, Gitea's full label lists are diffed with the last seen,
and Plane and GitHub run side by side without crosstalk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bot.services import Services
from integrations.processes import group_alive
from integrations.trackers.gitea import payloads as gitea_payloads
from integrations.trackers.github import payloads as github_payloads
from state.models import Stage, Task
from tests.acceptance.test_linear_jira import (
    Kind,
    agent_running,
    post,
    served,
    task_of,
    until_stage,
)
from tests.gitrepo import git
from tests.harness import wait_until

GITHUB_API = "https://api.github.test"
GITEA_URL = "https://gitea.test"
GITHUB_SECRET = "github-webhook-secret-0123456789"
GITEA_SECRET = "gitea-webhook-secret-0123456789"


def _github(label: str | None, action: str = "labeled", delivery: str | None = None):  # type: ignore[no-untyped-def]
    return github_payloads.build_delivery(
        secret=GITHUB_SECRET,
        full_name="acme/widgets",
        number=12,
        label=label,
        action=action,
        delivery=delivery,
        api_url=GITHUB_API,
    )


def _gitea(labels: list[str], delivery: str | None = None):  # type: ignore[no-untyped-def]
    return gitea_payloads.build_delivery(
        secret=GITEA_SECRET,
        full_name="acme/gadgets",
        number=5,
        label=labels[-1],
        labels=labels[:-1],
        delivery=delivery,
        base_url=GITEA_URL,
    )


GITHUB = Kind(
    "github",
    "github-app#12",
    "acme/widgets",
    {"webhook_secret": GITHUB_SECRET, "token": "ghp_test_token_0123456789", "api_url": GITHUB_API},
    lambda key, state, delivery: _github(state, delivery=delivery),
    lambda key: _github(None, action="closed"),
)
GITEA = Kind(
    "gitea",
    "gitea-app#5",
    "acme/gadgets",
    {"webhook_secret": GITEA_SECRET, "token": "gitea_test_token_0123456789", "base_url": GITEA_URL},
    lambda key, state, delivery: _gitea([state], delivery),
    lambda key: _gitea(["conveyor:stop"]),
)


UNREADABLE = "tracker comments not readable"  # notify's warning when a lookup fails
PERSON = {"id": 1, "body": "a person's comment", "user": {"login": "ada"}}


class Thread:
    """An issue's comments as GitHub and Gitea keep them: a POST adds one, a GET lists
    them all as a JSON list (Gitea with ``X-Total-Count``), so notify's marker lookup
    reads what was posted. ``log`` is the order of lookups and posts."""

    def __init__(self, router: respx.MockRouter, url: str) -> None:
        self.items: list[dict[str, Any]] = [PERSON]
        self.log: list[str] = []
        self.posts = router.post(url).mock(side_effect=self._post)
        self.lookups = router.get(url).mock(side_effect=self._list)

    def _post(self, request: httpx.Request) -> httpx.Response:
        self.log.append("post")
        body = json.loads(request.content)["body"]
        item = {"id": len(self.items) + 1, "body": body, "user": {"login": "conveyor-bot"}}
        self.items.append(item)
        return httpx.Response(201, json=item)

    def _list(self, request: httpx.Request) -> httpx.Response:
        self.log.append("lookup")
        total = {"X-Total-Count": str(len(self.items))}
        return httpx.Response(200, json=self.items, headers=total)

    def bodies(self) -> list[str]:
        return [json.loads(c.request.content)["body"] for c in self.posts.calls]


async def test_github_labels_start_and_stop_and_closing_as_not_planned_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as router:
        thread = Thread(router, f"{GITHUB_API}/repos/acme/widgets/issues/12/comments")
        async with served(tmp_path, [GITHUB]) as (client, svc):
            first = _github("conveyor:analyse", delivery="gh-1")
            assert await post(client, GITHUB, first) == {
                "outcome": "started",
                "task": "github-app#12",
            }
            assert (await post(client, GITHUB, first))["outcome"] == "duplicate"
            task = await agent_running(svc, GITHUB.key)
            worktree = Path(task.worktree_path or "")
            other = await post(client, GITHUB, _github("bug"))
            assert other == {
                "outcome": "ignored",
                "task": "github-app#12",
                "reason": "label_not_handled",
            }
            assert (await post(client, GITHUB, _github("conveyor:stop")))[
                "outcome"
            ] == "stop_requested"
            done = await until_stage(svc, GITHUB.key, Stage.CANCELLED)
            assert done.outcome == "cancelled_graceful" and not worktree.exists()
            bare = tmp_path / "github-app-remote.git"
            assert git(bare, "branch", "--list", "conveyor/*") == ""
            await wait_until(_count(thread.posts, 1), 10, "one comment")
            # The marker was looked for first, in the list GitHub answers (100 a page).
            assert thread.log == ["lookup", "post"]
            lookup = thread.lookups.calls[0].request
            assert lookup.url.params["per_page"] == "100"
            body = thread.bodies()[0]
            assert "conveyor stopped github-app#12" in body
            assert await _marker(svc, done) in body
            auth = thread.posts.calls[0].request.headers["Authorization"]
            assert auth == lookup.headers["Authorization"] == "Bearer ghp_test_token_0123456789"

            assert (await post(client, GITHUB, _github("conveyor:analyse")))["outcome"] == "started"
            await agent_running(svc, GITHUB.key)
            closed = await post(client, GITHUB, _github(None, action="closed"))
            assert closed["outcome"] == "stop_requested"
            fresh = await until_stage(svc, GITHUB.key, Stage.CANCELLED)
            assert fresh.id != done.id
            # The new stop's marker is not among the listed comments (the first stop's
            # is): a second comment, looked for first as well.
            await wait_until(_count(thread.posts, 2), 10, "the second stop's comment")
            assert thread.log == ["lookup", "post", "lookup", "post"]
            assert await _marker(svc, fresh) in thread.bodies()[1]
            assert UNREADABLE not in caplog.messages  # the lists were read, not given up on


async def test_gitea_full_label_lists_are_diffed_with_the_last_seen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as router:
        thread = Thread(router, f"{GITEA_URL}/api/v1/repos/acme/gadgets/issues/5/comments")
        async with served(tmp_path, [GITEA]) as (client, svc):
            start = _gitea(["conveyor:analyse"], delivery="gt-1")
            assert (await post(client, GITEA, start))["outcome"] == "started"
            task = await agent_running(svc, GITEA.key)
            pgid = [j for j in await svc.store.run_read(_jobs, task.id) if j.pgid][0].pgid
            # A label that means nothing, sent with the full list: nothing new to act on.
            again = await post(client, GITEA, _gitea(["conveyor:analyse", "bug"]))
            assert again["outcome"] != "started"
            stop = await post(client, GITEA, _gitea(["conveyor:analyse", "bug", "conveyor:stop"]))
            assert stop["outcome"] == "stop_requested"
            done = await until_stage(svc, GITEA.key, Stage.CANCELLED)
            assert not group_alive(pgid)
            await wait_until(_count(thread.posts, 1), 10, "one comment")
            # One lookup (Gitea lists every comment at once), then the post.
            assert thread.log == ["lookup", "post"]
            assert await _marker(svc, done) in thread.bodies()[0]
            for call in (thread.lookups.calls[0], thread.posts.calls[0]):
                assert call.request.headers["Authorization"] == "token gitea_test_token_0123456789"
            assert UNREADABLE not in caplog.messages  # the list was read, not given up on


async def test_plane_and_github_side_by_side_without_crosstalk(tmp_path: Path) -> None:
    from tests.acceptance.test_linear_jira import plane_start

    with respx.mock(assert_all_called=False, assert_all_mocked=False) as router:
        thread = Thread(router, f"{GITHUB_API}/repos/acme/widgets/issues/12/comments")
        async with served(tmp_path, [GITHUB], plane=True) as (client, svc):
            assert (await post(client, GITHUB, _github("conveyor:analyse")))["outcome"] == "started"
            assert (await plane_start(client))["outcome"] == "started"
            gh = await agent_running(svc, GITHUB.key)
            pl = await agent_running(svc, "PROJ-7")
            assert (gh.repo, pl.repo) == ("github-app", "plane-app")
            await post(client, GITHUB, _github("conveyor:stop"))
            await until_stage(svc, GITHUB.key, Stage.CANCELLED)
            still = await task_of(svc, "PROJ-7")
            assert still.stage is Stage.ANALYSIS and Path(still.worktree_path or "").is_dir()
            # GitHub's issue got its one comment.
            await wait_until(_count(thread.posts, 1), 10, "the GitHub comment")
            assert thread.log == ["lookup", "post"]


def _jobs(conn, task_id):  # type: ignore[no-untyped-def]
    from state.jobs import jobs_for_task

    return jobs_for_task(conn, task_id)


async def _marker(svc: Services, task: Task) -> str:
    """The hidden marker of the one stop of ``task``, as its comment carries it."""
    from state.stops import stops_for_task

    stops = await svc.store.run_read(stops_for_task, task.id)
    assert len(stops) == 1, stops
    return f"<!-- conveyor:stop:{stops[0].id} -->"


def _count(route: respx.Route, times: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return route.call_count == times

    return check


# A pre-receive hook that holds every push to main for two seconds: a slow merge.
SLOW_MAIN_HOOK = """#!/bin/sh
while read old new ref; do
  [ "$ref" = refs/heads/main ] && sleep 2
done
exit 0
"""


async def test_github_stop_during_a_push_merge_is_deferred_then_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The deferred stop of a GitHub-tracked task: the agents commit and exit, the merge
    pushes to main (held 2 s by the remote), the stop label arrives inside that window."""
    from bot.app import create_app
    from bot.settings import settings_from_dict
    from state.store import events_for_task
    from tests.apptools import app_client
    from tests.gitrepo import make_repo
    from tests.harness import base_settings

    spec, bare = make_repo(tmp_path, "github-app")
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(SLOW_MAIN_HOOK)
    hook.chmod(0o755)
    doc = base_settings(tmp_path, spec)  # every agent commits once and exits 0
    doc["repos"][0].update(tracker="github", tracker_project="acme/widgets")  # push-mode merge
    doc["trackers"]["github"] = GITHUB.section
    main_before = git(bare, "rev-parse", "refs/heads/main")
    holder: dict[str, Services] = {}
    app = create_app(settings_from_dict(doc), configure=lambda svc: holder.setdefault("svc", svc))
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as router:
        thread = Thread(router, f"{GITHUB_API}/repos/acme/widgets/issues/12/comments")
        async with app_client(app) as client:
            svc = holder["svc"]
            assert (await post(client, GITHUB, _github("conveyor:analyse")))["outcome"] == "started"

            async def merging() -> bool:
                task = await task_of(svc, GITHUB.key)
                return task.merge_initiated_at is not None and task.merged_at is None

            await wait_until(merging, 60, "the merge to start")
            first = await post(client, GITHUB, _github("conveyor:stop", delivery="gh-stop-1"))
            assert first["outcome"] == "stop_deferred", first
            # Another STOP (a new delivery: the label removed and added again) joins it.
            again = await post(client, GITHUB, _github("conveyor:stop", delivery="gh-stop-2"))
            assert again["outcome"] == "stop_deferred"
            assert again["stop_id"] == first["stop_id"]
            queue = (await client.get("/queue")).json()
            assert [(d["task"], d["window"]) for d in queue["stop"]["deferred"]] == [
                (GITHUB.key, "merge")
            ]

            done = await until_stage(svc, GITHUB.key, Stage.CANCELLED)
            assert done.merged_at is not None  # the merge finished honestly first
            merges = git(bare, "log", "--merges", "--format=%s", "main").splitlines()
            assert len(merges) == 1 and git(bare, "rev-parse", "refs/heads/main") != main_before
            assert git(bare, "branch", "--list", "conveyor/*") == ""
            events = await svc.store.run_read(events_for_task, done.id)
            assert [e["kind"] for e in events].count("deferred_stop_applied") == 1
            final = [e for e in events if e["kind"] == "cancelled"][0]
            assert final["detail"]["effects_committed"] is True
            # The deferral notice, then the stop's own: the repeated STOP sent nothing.
            await wait_until(_count(thread.posts, 2), 10, "the two notices")
            bodies = thread.bodies()
            stop_id = first["stop_id"]
            assert f"STOP received for {GITHUB.key} during its merge step" in bodies[0]
            assert f"<!-- conveyor:stop-deferred:{stop_id} -->" in bodies[0]
            assert f"conveyor stopped {GITHUB.key}" in bodies[1]
            assert f"<!-- conveyor:stop:{stop_id} -->" in bodies[1]
            # Each notice looked for its own marker in the listed comments first.
            assert thread.log == ["lookup", "post", "lookup", "post"]
            assert UNREADABLE not in caplog.messages
