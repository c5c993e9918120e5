"""GiteaForge against Gitea's HTTP shapes (respx), with a real httpx.AsyncClient."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.forges.base import (
    BranchDeletion,
    BranchRefused,
    Forge,
    ForgeError,
    MergeMethod,
    MergeRefused,
    MergeState,
    PullRequest,
    PullRequestMerged,
    PullRequestState,
)
from integrations.forges.gitea import GiteaForge

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "forges" / "gitea"
BASE_URL = "https://gitea.example.test/git"  # served under a sub-path
TOKEN = "5f0c3e9a7d2b4c18a6e1f0b9d8c7a6e5d4c3b2a1"
REPO = "acme/app"
BRANCH = "conveyor/proj-42"
HEAD_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
MERGE_SHA = "9f3a1c2e4b5d6a7f8e9d0c1b2a3f4e5d6c7b8a90"
PREFIX = "/git/api/v1/repos/acme/app"
PULL = f"{PREFIX}/pulls/7"
STATUS = f"{PREFIX}/commits/{HEAD_SHA}/status"
TITLE = "PROJ-42: Fix login redirect loop"
BODY = json.loads((SAMPLES / "pull_created.json").read_text())["body"]
PROTECTIONS = f"{PREFIX}/branch_protections"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


class Sleeps:
    """The sleep port: records how long the client asked to wait, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def gitea() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url="https://gitea.example.test", assert_all_called=False) as router:
        yield router


@pytest.fixture
async def forge(sleeps: Sleeps) -> AsyncIterator[GiteaForge]:
    async with httpx.AsyncClient() as http:
        yield GiteaForge(http, token=TOKEN, base_url=BASE_URL + "/", sleep=sleeps)


def body_of(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


def next_page(page: int) -> dict[str, str]:
    url = f"{BASE_URL}/api/v1/repos/acme/app/pulls?limit=50&page={page}&state=open"
    return {"Link": f'<{url}>; rel="next"', "X-Total-Count": "3"}


# -- opening -----------------------------------------------------------------------------


async def test_open_creates_a_pull_request_with_gitea_auth(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    listed = gitea.get(f"{PREFIX}/pulls").respond(200, json=[], headers={"X-Total-Count": "0"})
    created = gitea.post(f"{PREFIX}/pulls").respond(201, json=sample("pull_created"))

    pr = await forge.open_pull_request(REPO, head=BRANCH, base="main", title=TITLE, body=BODY)

    assert pr == PullRequest(
        7, "https://gitea.example.test/acme/app/pulls/7", HEAD_SHA, PullRequestState.OPEN
    )
    query = listed.calls.last.request.url.params
    assert (query["state"], query["limit"], query["page"]) == ("open", "50", "1")
    assert body_of(created) == {"head": BRANCH, "base": "main", "title": TITLE, "body": BODY}
    assert created.calls.last.request.headers["Authorization"] == f"token {TOKEN}"


async def test_open_pages_through_open_pull_requests_and_skips_a_forks(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    listed = gitea.get(f"{PREFIX}/pulls").mock(
        side_effect=[
            httpx.Response(200, json=sample("pulls_open_page1"), headers=next_page(2)),
            httpx.Response(200, json=sample("pulls_open_page2"), headers={"X-Total-Count": "3"}),
        ]
    )
    created = gitea.post(f"{PREFIX}/pulls").respond(201, json=sample("pull_created"))
    updated = gitea.patch(PULL).respond(201, json={**sample("pull_mergeable"), "title": "New"})

    pr = await forge.open_pull_request(REPO, head=BRANCH, base="main", title="New", body="B")

    assert pr.number == 7  # not #5, the fork's branch of the same name
    assert [call.request.url.params["page"] for call in listed.calls] == ["1", "2"]
    assert not created.called
    assert body_of(updated) == {"title": "New", "body": "B"}


async def test_open_that_races_another_finds_it(gitea: respx.MockRouter, forge: GiteaForge) -> None:
    gitea.get(f"{PREFIX}/pulls").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=sample("pulls_open_page2")),
        ]
    )
    gitea.post(f"{PREFIX}/pulls").respond(409, json=sample("pull_exists_409"))
    updated = gitea.patch(PULL).respond(201, json=sample("pull_mergeable"))
    pr = await forge.open_pull_request(REPO, head=BRANCH, base="main", title=TITLE, body=BODY)
    assert pr.number == 7
    assert not updated.called  # same title and body


# -- mergeability ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("status_success", MergeState.MERGEABLE),
        ("status_none", MergeState.MERGEABLE),
        ("status_pending", MergeState.PENDING),
        ("status_failure", MergeState.BLOCKED),
    ],
)
async def test_mergeable_plus_the_commit_status(
    gitea: respx.MockRouter, forge: GiteaForge, status: str, state: MergeState
) -> None:
    gitea.get(PULL).respond(200, json=sample("pull_mergeable"))
    statuses = gitea.get(STATUS).respond(200, json=sample(status))
    verdict = await forge.mergeability(REPO, 7)
    assert verdict.state is state
    assert statuses.calls.last.request.url.params["limit"] == "50"
    if state is MergeState.BLOCKED:
        assert verdict.failing_checks == ("ci / test (push)",)


async def test_statuses_are_read_page_by_page(gitea: respx.MockRouter, forge: GiteaForge) -> None:
    gitea.get(PULL).respond(200, json=sample("pull_mergeable"))
    success, failure = sample("status_success"), sample("status_failure")
    # Two statuses, one a page because the server caps limit at 1: total_count says more.
    pages = gitea.get(STATUS).mock(
        side_effect=[
            httpx.Response(200, json={**success, "statuses": success["statuses"][:1]}),
            httpx.Response(200, json={**success, "statuses": failure["statuses"][1:]}),
        ]
    )
    verdict = await forge.mergeability(REPO, 7)
    assert verdict.failing_checks == ("ci / test (push)",)
    assert pages.call_count == 2


async def test_not_mergeable_yet_is_unknown(gitea: respx.MockRouter, forge: GiteaForge) -> None:
    gitea.get(PULL).respond(200, json=sample("pull_created"))
    gitea.get(STATUS).respond(200, json=sample("status_success"))
    assert (await forge.mergeability(REPO, 7)).state is MergeState.UNKNOWN


async def test_a_merged_pull_request_needs_no_status(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    gitea.get(PULL).respond(200, json=sample("pull_merged"))
    assert (await forge.mergeability(REPO, 7)).state is MergeState.MERGEABLE
    assert len(gitea.calls) == 1


# -- merging -----------------------------------------------------------------------------


async def test_merge_posts_do_and_the_head_then_reads_the_merge_commit(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    merged = gitea.post(f"{PULL}/merge").respond(200)
    gitea.get(PULL).respond(200, json=sample("pull_merged"))
    assert await forge.merge(REPO, 7, method=MergeMethod.REBASE, sha=HEAD_SHA) == MERGE_SHA
    assert body_of(merged) == {
        "Do": "rebase",
        "head_commit_id": HEAD_SHA,
        "delete_branch_after_merge": False,
    }


@pytest.mark.parametrize(
    ("status", "answer", "words", "head_changed"),
    [
        (405, "merge_405_try_later", "Please try again later", False),
        (405, "merge_405_not_ready", "required status checks", False),
        (409, "merge_409_conflict", "conflicts with the base branch", False),
        (409, "merge_409_head", "head out of date", True),
    ],
)
async def test_merge_refusals(
    gitea: respx.MockRouter,
    forge: GiteaForge,
    status: int,
    answer: str,
    words: str,
    head_changed: bool,
) -> None:
    gitea.post(f"{PULL}/merge").respond(status, json=sample(answer))
    gitea.get(PULL).respond(200, json=sample("pull_mergeable"))
    with pytest.raises(MergeRefused, match=words) as refused:
        await forge.merge(REPO, 7, method=MergeMethod.MERGE, sha=HEAD_SHA)
    assert (refused.value.status, refused.value.head_changed) == (status, head_changed)


async def test_merging_a_closed_pull_request_is_refused(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    gitea.post(f"{PULL}/merge").respond(404, json=sample("not_found"))
    gitea.get(PULL).respond(200, json=sample("pull_closed"))
    with pytest.raises(MergeRefused, match="closed"):
        await forge.merge(REPO, 7, method=MergeMethod.MERGE, sha=HEAD_SHA)


async def test_a_merge_that_already_happened_answers_its_merge_commit(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    gitea.post(f"{PULL}/merge").respond(405, json=sample("merge_405_empty"))
    gitea.get(PULL).respond(200, json=sample("pull_merged"))
    assert await forge.merge(REPO, 7, method=MergeMethod.MERGE, sha=HEAD_SHA) == MERGE_SHA


# -- closing -----------------------------------------------------------------------------


async def test_close_comments_then_closes(gitea: respx.MockRouter, forge: GiteaForge) -> None:
    gitea.get(PULL).respond(200, json=sample("pull_mergeable"))
    comment = gitea.post(f"{PREFIX}/issues/7/comments").respond(
        201, json=sample("issue_comment_created")
    )
    close = gitea.patch(PULL).respond(201, json=sample("pull_closed"))
    await forge.close(REPO, 7, comment="conveyor stopped this task.")
    assert body_of(comment) == {"body": "conveyor stopped this task."}
    assert body_of(close) == {"state": "closed"}
    assert comment.calls.last.request.headers["Authorization"] == f"token {TOKEN}"


async def test_a_pull_request_merged_before_the_close_lands_stays_merged(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    gitea.get(PULL).respond(200, json=sample("pull_mergeable"))
    gitea.post(f"{PREFIX}/issues/7/comments").respond(201, json=sample("issue_comment_created"))
    gitea.patch(PULL).respond(412, json=sample("edit_412_merged"))
    with pytest.raises(PullRequestMerged, match="stays merged"):
        await forge.close(REPO, 7, comment="c")


async def test_closed_and_merged_pull_requests(gitea: respx.MockRouter, forge: GiteaForge) -> None:
    gitea.get(PULL).mock(
        side_effect=[
            httpx.Response(200, json=sample("pull_closed")),
            httpx.Response(200, json=sample("pull_merged")),
        ]
    )
    await forge.close(REPO, 7, comment="c")
    with pytest.raises(PullRequestMerged):
        await forge.close(REPO, 7, comment="c")
    assert {call.request.method for call in gitea.calls} == {"GET"}


# -- protection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "protected"),
    [
        ("main", True),
        ("release/1.0/rc", True),
        ("hotfix/login", True),
        ("hotfix/login/more", False),
        ("legacy", True),  # a rule of a Gitea before 1.19: branch_name only
        (BRANCH, False),
    ],
)
async def test_branch_protections_are_matched_as_gitea_matches_them(
    gitea: respx.MockRouter, forge: GiteaForge, branch: str, protected: bool
) -> None:
    gitea.get(PROTECTIONS).respond(200, json=sample("branch_protections"))
    assert await forge.branch_protected(REPO, branch) is protected


async def test_without_admin_rights_the_branch_flag_answers(
    gitea: respx.MockRouter, forge: GiteaForge, sleeps: Sleeps
) -> None:
    gitea.get(PROTECTIONS).respond(403, json=sample("forbidden_admin"))
    branch = gitea.get(f"{PREFIX}/branches/conveyor%2Fproj-42").respond(
        200, json=sample("branch_task")
    )
    assert await forge.branch_protected(REPO, BRANCH) is False
    assert branch.calls.last.request.url.raw_path.endswith(b"/branches/conveyor%2Fproj-42")
    assert sleeps.calls == []


async def test_without_admin_rights_a_missing_branch_cannot_say(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    gitea.get(PROTECTIONS).respond(403, json=sample("forbidden_admin"))
    gitea.get(f"{PREFIX}/branches/conveyor%2Fproj-42").respond(404, json=sample("not_found"))
    with pytest.raises(ForgeError, match="repository admin"):
        await forge.branch_protected(REPO, BRANCH)


async def test_a_gitea_that_does_not_answer_cannot_say(
    gitea: respx.MockRouter, forge: GiteaForge, sleeps: Sleeps
) -> None:
    gitea.get(PROTECTIONS).mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(ForgeError, match="ConnectError"):
        await forge.branch_protected(REPO, BRANCH)
    assert sleeps.calls == [0.5, 1.0, 2.0]


# -- deleting branches -------------------------------------------------------------------


async def test_delete_branch(gitea: respx.MockRouter, forge: GiteaForge) -> None:
    route = gitea.delete(f"{PREFIX}/branches/conveyor%2Fproj-42").mock(
        side_effect=[httpx.Response(204), httpx.Response(404, json=sample("not_found"))]
    )
    assert await forge.delete_branch(REPO, BRANCH) is BranchDeletion.DELETED
    assert await forge.delete_branch(REPO, BRANCH) is BranchDeletion.ALREADY_GONE
    assert route.calls.last.request.url.raw_path.endswith(b"/branches/conveyor%2Fproj-42")


@pytest.mark.parametrize(
    ("answer", "reason"), [("delete_403_protected", "protected"), ("delete_403_default", "default")]
)
async def test_a_refused_deletion_names_why(
    gitea: respx.MockRouter, forge: GiteaForge, answer: str, reason: str
) -> None:
    gitea.delete(f"{PREFIX}/branches/main").respond(403, json=sample(answer))
    with pytest.raises(BranchRefused) as refused:
        await forge.delete_branch(REPO, "main")
    assert (refused.value.reason, refused.value.status) == (reason, 403)


async def test_a_403_for_the_tokens_rights_is_not_a_protection(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    gitea.delete(f"{PREFIX}/branches/conveyor%2Fproj-42").respond(
        403, json=sample("delete_403_writer")
    )
    with pytest.raises(ForgeError, match="permission to write") as caught:
        await forge.delete_branch(REPO, BRANCH)
    assert not isinstance(caught.value, BranchRefused)


async def test_a_rate_limited_403_is_waited_out_not_read_as_refused(
    gitea: respx.MockRouter, forge: GiteaForge, sleeps: Sleeps
) -> None:
    gitea.delete(f"{PREFIX}/branches/conveyor%2Fproj-42").mock(
        side_effect=[
            httpx.Response(403, headers={"Retry-After": "4"}, json={"message": "slow down"}),
            httpx.Response(204),
        ]
    )
    assert await forge.delete_branch(REPO, BRANCH) is BranchDeletion.DELETED
    assert sleeps.calls == [4.0]


async def test_a_rate_limited_403_that_never_ends_is_an_error(
    gitea: respx.MockRouter, forge: GiteaForge, sleeps: Sleeps
) -> None:
    gitea.delete(f"{PREFIX}/branches/conveyor%2Fproj-42").respond(
        403, headers={"Retry-After": "4"}, json={"message": "slow down"}
    )
    with pytest.raises(ForgeError, match="slow down") as caught:
        await forge.delete_branch(REPO, BRANCH)
    assert not isinstance(caught.value, BranchRefused)
    assert sleeps.calls == [4.0, 4.0, 4.0]


# -- retries and rate limits -------------------------------------------------------------


async def test_5xx_is_retried(gitea: respx.MockRouter, forge: GiteaForge, sleeps: Sleeps) -> None:
    gitea.get(PULL).mock(
        side_effect=[httpx.Response(500), httpx.Response(200, json=sample("pull_mergeable"))]
    )
    assert (await forge.pull_request(REPO, 7)).number == 7
    assert sleeps.calls == [0.5]


async def test_a_429_waits_retry_after(
    gitea: respx.MockRouter, forge: GiteaForge, sleeps: Sleeps
) -> None:
    gitea.get(PROTECTIONS).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "9"}),
            httpx.Response(200, json=sample("branch_protections")),
        ]
    )
    assert await forge.branch_protected(REPO, "main") is True
    assert sleeps.calls == [9.0]


async def test_the_token_never_appears_in_an_error(
    gitea: respx.MockRouter, forge: GiteaForge
) -> None:
    gitea.get(PULL).respond(401, json={"message": f"token is invalid: token {TOKEN}"})
    with pytest.raises(ForgeError) as caught:
        await forge.pull_request(REPO, 7)
    assert TOKEN not in str(caught.value)
    assert "check the Gitea token" in str(caught.value)
    assert TOKEN not in repr(forge)


async def test_gitea_is_a_forge(forge: GiteaForge) -> None:
    forges: list[Forge] = [forge]
    assert forges[0].name == "gitea"
