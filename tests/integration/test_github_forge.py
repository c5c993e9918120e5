"""GitHubForge against GitHub's HTTP shapes (respx), with a real httpx.AsyncClient."""

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
from integrations.forges.fake import FakeForge
from integrations.forges.github import GitHubForge

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "forges" / "github"
API_URL = "https://github.example.test/api/v3"  # GitHub Enterprise: a path prefix too
TOKEN = "ghp_R4nd0mT0k3nF0rT3st1ngOnly0123456789ab"
REPO = "acme/app"
BRANCH = "conveyor/proj-42"
HEAD_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
MERGE_SHA = "9f3a1c2e4b5d6a7f8e9d0c1b2a3f4e5d6c7b8a90"
PREFIX = "/api/v3/repos/acme/app"
PULL = f"{PREFIX}/pulls/42"
COMMIT = f"{PREFIX}/commits/{HEAD_SHA}"
TITLE = "PROJ-42: Fix login redirect loop"
BODY = json.loads((SAMPLES / "pull_created.json").read_text())["body"]


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


class Sleeps:
    """The sleep port: records how long the client asked to wait, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


NOW = 1_800_000_000.0


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def github() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url="https://github.example.test", assert_all_called=False) as router:
        yield router


@pytest.fixture
async def forge(sleeps: Sleeps) -> AsyncIterator[GitHubForge]:
    async with httpx.AsyncClient() as http:
        yield GitHubForge(http, token=TOKEN, api_url=API_URL + "/", sleep=sleeps, clock=lambda: NOW)


def body_of(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


# -- opening -----------------------------------------------------------------------------


async def test_open_creates_a_pull_request_with_the_body_and_headers_github_wants(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    listed = github.get(f"{PREFIX}/pulls").respond(200, json=[])
    created = github.post(f"{PREFIX}/pulls").respond(201, json=sample("pull_created"))

    pr = await forge.open_pull_request(REPO, head=BRANCH, base="main", title=TITLE, body=BODY)

    assert pr == PullRequest(
        42, "https://github.com/acme/app/pull/42", HEAD_SHA, PullRequestState.OPEN
    )
    query = listed.calls.last.request.url.params
    assert (query["head"], query["state"]) == ("acme:conveyor/proj-42", "open")
    request = created.calls.last.request
    assert body_of(created) == {"title": TITLE, "head": BRANCH, "base": "main", "body": BODY}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"


async def test_open_updates_the_one_already_open_for_the_head(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(f"{PREFIX}/pulls").respond(200, json=sample("pulls_open_for_head"))
    created = github.post(f"{PREFIX}/pulls").respond(201, json=sample("pull_created"))
    updated = github.patch(PULL).respond(200, json={**sample("pull_created"), "title": "New"})

    pr = await forge.open_pull_request(REPO, head=BRANCH, base="main", title="New", body="B2")

    assert pr.number == 42
    assert not created.called
    assert body_of(updated) == {"title": "New", "body": "B2"}


async def test_open_with_the_same_title_and_body_changes_nothing(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(f"{PREFIX}/pulls").respond(200, json=sample("pulls_open_for_head"))
    updated = github.patch(PULL).respond(200, json=sample("pull_created"))
    pr = await forge.open_pull_request(REPO, head=BRANCH, base="main", title=TITLE, body=BODY)
    assert pr.number == 42
    assert not updated.called


async def test_open_that_races_another_finds_and_updates_it(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(f"{PREFIX}/pulls").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=sample("pulls_open_for_head")),
        ]
    )
    github.post(f"{PREFIX}/pulls").respond(422, json=sample("pull_exists_422"))
    updated = github.patch(PULL).respond(200, json=sample("pull_created"))
    pr = await forge.open_pull_request(REPO, head=BRANCH, base="main", title="T", body="B")
    assert pr.number == 42
    assert body_of(updated) == {"title": "T", "body": "B"}


async def test_open_refused_says_why(github: respx.MockRouter, forge: GitHubForge) -> None:
    github.get(f"{PREFIX}/pulls").respond(200, json=[])
    github.post(f"{PREFIX}/pulls").respond(422, json=sample("pull_no_commits_422"))
    with pytest.raises(ForgeError, match="No commits between main and conveyor/proj-42") as caught:
        await forge.open_pull_request(REPO, head=BRANCH, base="main", title=TITLE, body=BODY)
    assert caught.value.status == 422


# -- mergeability ------------------------------------------------------------------------


async def test_null_mergeable_is_unknown_and_asks_nothing_more(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(PULL).respond(200, json=sample("pull_computing"))
    verdict = await forge.mergeability(REPO, 42)
    assert verdict.state is MergeState.UNKNOWN
    assert len(github.calls) == 1


async def test_clean_is_mergeable_in_one_request(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(PULL).respond(200, json=sample("pull_clean"))
    assert (await forge.mergeability(REPO, 42)).state is MergeState.MERGEABLE
    assert len(github.calls) == 1


async def test_dirty_blocks(github: respx.MockRouter, forge: GitHubForge) -> None:
    github.get(PULL).respond(200, json=sample("pull_dirty"))
    verdict = await forge.mergeability(REPO, 42)
    assert verdict.state is MergeState.BLOCKED and "conflicts" in verdict.reason


def route_checks(github: respx.MockRouter, runs: str, status: str) -> None:
    github.get(PULL).respond(200, json=sample("pull_blocked"))
    github.get(f"{PREFIX}/branches/main").respond(200, json=sample("branch_main_protected"))
    github.get(f"{PREFIX}/rules/branches/main").respond(200, json=sample("rules_main"))
    github.get(f"{COMMIT}/check-runs").respond(200, json=sample(runs))
    github.get(f"{COMMIT}/status").respond(200, json=sample(status))


async def test_blocked_by_a_failing_required_check_names_it(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    route_checks(github, "check_runs_failing", "status_success")
    verdict = await forge.mergeability(REPO, 42)
    assert verdict.state is MergeState.BLOCKED
    assert verdict.failing_checks == ("ci/build",)


async def test_blocked_with_pending_required_checks_is_pending(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    route_checks(github, "check_runs_pending", "status_pending")
    verdict = await forge.mergeability(REPO, 42)
    assert verdict.state is MergeState.PENDING
    assert "ci/build" in verdict.reason and "lint" in verdict.reason


async def test_blocked_with_every_required_check_green_waits_for_a_review(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    route_checks(github, "check_runs_success", "status_success")
    verdict = await forge.mergeability(REPO, 42)
    assert verdict.state is MergeState.PENDING and "review" in verdict.reason


async def test_check_runs_are_read_page_by_page(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    route_checks(github, "check_runs_success", "status_success")
    failing = sample("check_runs_failing")
    page_two = (
        f'<{API_URL}/repos/acme/app/commits/{HEAD_SHA}/check-runs?per_page=100&page=2>; rel="next"'
    )
    runs = github.get(f"{COMMIT}/check-runs").mock(
        side_effect=[
            httpx.Response(200, json=sample("check_runs_success"), headers={"Link": page_two}),
            httpx.Response(200, json={"total_count": 4, "check_runs": failing["check_runs"][:1]}),
        ]
    )
    verdict = await forge.mergeability(REPO, 42)
    assert verdict.failing_checks == ("ci/build",)  # the re-run on page 2 failed
    assert [call.request.url.params["page"] for call in runs.calls] == ["1", "2"]
    assert runs.calls.last.request.url.params["per_page"] == "100"


# -- merging -----------------------------------------------------------------------------


async def test_merge_sends_the_method_and_the_head_it_expects(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    merged = github.put(f"{PULL}/merge").respond(200, json=sample("merge_200"))
    assert await forge.merge(REPO, 42, method=MergeMethod.SQUASH, sha=HEAD_SHA) == MERGE_SHA
    assert body_of(merged) == {"merge_method": "squash", "sha": HEAD_SHA}


async def test_merge_405_is_refused_with_githubs_words(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    github.put(f"{PULL}/merge").respond(405, json=sample("merge_405_review"))
    github.get(PULL).respond(200, json=sample("pull_blocked"))
    with pytest.raises(MergeRefused, match="At least 1 approving review") as refused:
        await forge.merge(REPO, 42, method=MergeMethod.MERGE, sha=HEAD_SHA)
    assert (refused.value.status, refused.value.head_changed) == (405, False)
    assert sleeps.calls == []


async def test_merge_409_says_the_head_changed(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.put(f"{PULL}/merge").respond(409, json=sample("merge_409"))
    github.get(PULL).respond(200, json=sample("pull_clean"))
    with pytest.raises(MergeRefused, match="Head branch was modified") as refused:
        await forge.merge(REPO, 42, method=MergeMethod.MERGE, sha=HEAD_SHA)
    assert refused.value.head_changed


async def test_a_merge_retried_after_a_502_that_went_through_answers_its_merge_commit(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    merge = github.put(f"{PULL}/merge").mock(
        side_effect=[httpx.Response(502), httpx.Response(405, json=sample("merge_405"))]
    )
    github.get(PULL).respond(200, json=sample("pull_merged"))
    assert await forge.merge(REPO, 42, method=MergeMethod.MERGE, sha=HEAD_SHA) == MERGE_SHA
    assert merge.call_count == 2
    assert sleeps.calls == [0.5]


# -- closing -----------------------------------------------------------------------------


async def test_close_comments_then_closes(github: respx.MockRouter, forge: GitHubForge) -> None:
    github.get(PULL).respond(200, json=sample("pull_blocked"))
    comment = github.post(f"{PREFIX}/issues/42/comments").respond(
        201, json=sample("issue_comment_created")
    )
    close = github.patch(PULL).respond(200, json=sample("pull_closed"))
    await forge.close(REPO, 42, comment="conveyor stopped this task.")
    assert body_of(comment) == {"body": "conveyor stopped this task."}
    assert body_of(close) == {"state": "closed"}
    order = [(call.request.method, call.request.url.path) for call in github.calls]
    assert order[1:] == [("POST", f"{PREFIX}/issues/42/comments"), ("PATCH", PULL)]


async def test_closing_a_closed_pull_request_is_fine(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(PULL).respond(200, json=sample("pull_closed"))
    await forge.close(REPO, 42, comment="again")
    assert len(github.calls) == 1


async def test_a_merged_pull_request_is_never_closed(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(PULL).respond(200, json=sample("pull_merged"))
    writes = github.route(method__in=["POST", "PATCH"]).respond(200, json={})
    with pytest.raises(PullRequestMerged, match="stays merged"):
        await forge.close(REPO, 42, comment="no")
    assert not writes.called


# -- protection --------------------------------------------------------------------------


async def test_classic_protection_is_enough(github: respx.MockRouter, forge: GitHubForge) -> None:
    github.get(f"{PREFIX}/branches/main").respond(200, json=sample("branch_main_protected"))
    rules = github.get(f"{PREFIX}/rules/branches/main").respond(200, json=[])
    assert await forge.branch_protected(REPO, "main") is True
    assert not rules.called


async def test_an_unprotected_task_branch_asks_the_rulesets_too(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    branch = github.get(f"{PREFIX}/branches/conveyor%2Fproj-42").respond(
        200, json=sample("branch_task_unprotected")
    )
    rules = github.get(f"{PREFIX}/rules/branches/conveyor%2Fproj-42").respond(
        200, json=sample("rules_task_signed_only")
    )
    assert await forge.branch_protected(REPO, BRANCH) is False
    assert branch.calls.last.request.url.raw_path.endswith(b"/branches/conveyor%2Fproj-42")
    assert rules.calls.last.request.url.params["per_page"] == "100"


async def test_a_ruleset_alone_protects(github: respx.MockRouter, forge: GitHubForge) -> None:
    github.get(f"{PREFIX}/branches/release%2F1.0").respond(404, json=sample("branch_not_found"))
    github.get(f"{PREFIX}/rules/branches/release%2F1.0").respond(
        200, json=sample("rules_release_update")
    )
    assert await forge.branch_protected(REPO, "release/1.0") is True


async def test_a_branch_nobody_protects_that_does_not_exist(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(f"{PREFIX}/branches/conveyor%2Fproj-42").respond(
        404, json=sample("branch_not_found")
    )
    github.get(f"{PREFIX}/rules/branches/conveyor%2Fproj-42").respond(200, json=[])
    assert await forge.branch_protected(REPO, BRANCH) is False


async def test_a_forge_that_cannot_say_raises(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    github.get(f"{PREFIX}/branches/conveyor%2Fproj-42").respond(404, json=sample("not_found"))
    with pytest.raises(ForgeError, match="Not Found"):
        await forge.branch_protected(REPO, BRANCH)

    github.get(f"{PREFIX}/branches/main").respond(200, json=sample("branch_task_unprotected"))
    github.get(f"{PREFIX}/rules/branches/main").respond(500)
    with pytest.raises(ForgeError, match="HTTP 500") as caught:
        await forge.branch_protected(REPO, "main")
    assert caught.value.status == 500
    assert sleeps.calls == [0.5, 1.0, 2.0]


async def test_forbidden_without_rate_limit_headers_fails_at_once(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    route = github.get(f"{PREFIX}/branches/main").respond(403, json=sample("forbidden_403"))
    with pytest.raises(ForgeError, match="403.*check that the token") as caught:
        await forge.branch_protected(REPO, "main")
    assert caught.value.status == 403
    assert route.call_count == 1 and sleeps.calls == []


# -- deleting branches -------------------------------------------------------------------


async def test_delete_branch_deletes_the_encoded_ref(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    route = github.delete(f"{PREFIX}/git/refs/heads/conveyor%2Fproj-42").respond(204)
    assert await forge.delete_branch(REPO, BRANCH) is BranchDeletion.DELETED
    assert route.calls.last.request.url.raw_path.endswith(b"/git/refs/heads/conveyor%2Fproj-42")


@pytest.mark.parametrize(
    ("status", "answer"), [(422, sample("ref_missing_422")), (404, sample("not_found"))]
)
async def test_a_missing_branch_is_already_gone(
    github: respx.MockRouter, forge: GitHubForge, status: int, answer: Any
) -> None:
    github.delete(f"{PREFIX}/git/refs/heads/conveyor%2Fproj-42").respond(status, json=answer)
    assert await forge.delete_branch(REPO, BRANCH) is BranchDeletion.ALREADY_GONE


async def test_a_refused_deletion_says_so(github: respx.MockRouter, forge: GitHubForge) -> None:
    github.delete(f"{PREFIX}/git/refs/heads/release%2F1.0").respond(
        422, json=sample("ref_protected_422")
    )
    with pytest.raises(BranchRefused, match="Cannot delete this branch") as refused:
        await forge.delete_branch(REPO, "release/1.0")
    assert refused.value.reason == "protected"


async def test_path_parts_never_add_segments(github: respx.MockRouter, forge: GitHubForge) -> None:
    route = github.delete(url__regex=r".*").respond(204)
    await forge.delete_branch("ac me/a?p", "../../../orgs/acme")
    assert route.calls.last.request.url.raw_path == (
        b"/api/v3/repos/ac%20me/a%3Fp/git/refs/heads/..%2F..%2F..%2Forgs%2Facme"
    )


# -- retries and rate limits -------------------------------------------------------------


async def test_5xx_is_retried_with_backoff(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    route = github.get(PULL).mock(
        side_effect=[
            httpx.Response(502),
            httpx.Response(503),
            httpx.Response(200, json=sample("pull_clean")),
        ]
    )
    assert (await forge.pull_request(REPO, 42)).number == 42
    assert route.call_count == 3
    assert sleeps.calls == [0.5, 1.0]


async def test_a_secondary_rate_limit_403_waits_retry_after(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    limited = httpx.Response(
        403, json=sample("secondary_rate_limit_403"), headers={"Retry-After": "7"}
    )
    github.get(PULL).mock(side_effect=[limited, httpx.Response(200, json=sample("pull_clean"))])
    assert (await forge.mergeability(REPO, 42)).state is MergeState.MERGEABLE
    assert sleeps.calls == [7.0]


async def test_a_primary_rate_limit_waits_until_the_reset(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    exhausted = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 12)}
    github.get(PULL).mock(
        side_effect=[
            httpx.Response(403, json={"message": "API rate limit exceeded"}, headers=exhausted),
            httpx.Response(200, json=sample("pull_clean")),
        ]
    )
    await forge.pull_request(REPO, 42)
    assert sleeps.calls == [12.0]


async def test_a_429_waits_retry_after(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    github.delete(f"{PREFIX}/git/refs/heads/conveyor%2Fproj-42").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(204)]
    )
    assert await forge.delete_branch(REPO, BRANCH) is BranchDeletion.DELETED
    assert sleeps.calls == [3.0]


async def test_a_long_rate_limit_is_handed_back_not_slept(
    github: respx.MockRouter, forge: GitHubForge, sleeps: Sleeps
) -> None:
    github.get(PULL).respond(
        403, headers={"Retry-After": "3600"}, json=sample("secondary_rate_limit_403")
    )
    with pytest.raises(ForgeError) as caught:
        await forge.mergeability(REPO, 42)
    assert (caught.value.status, caught.value.retry_after) == (403, 3600.0)
    assert sleeps.calls == []


async def test_the_token_never_appears_in_an_error(
    github: respx.MockRouter, forge: GitHubForge
) -> None:
    github.get(PULL).respond(401, json={"message": f"Bad credentials: Bearer {TOKEN}"})
    github.get(f"{PREFIX}/pulls").mock(side_effect=httpx.ConnectError(f"refused; {TOKEN}"))
    errors = []
    for call in (
        forge.pull_request(REPO, 42),
        forge.open_pull_request(REPO, head=BRANCH, base="main", title="t", body="b"),
    ):
        with pytest.raises(ForgeError) as caught:
            await call
        errors.append(caught.value)
    for error in errors:
        assert TOKEN not in str(error) and TOKEN not in repr(error)
    assert "401" in str(errors[0]) and "check the GitHub token" in str(errors[0])
    assert TOKEN not in repr(forge)


async def test_the_adapters_and_the_fake_are_forges(forge: GitHubForge) -> None:
    forges: list[Forge] = [forge, FakeForge()]
    assert [f.name for f in forges] == ["github", "fake"]
