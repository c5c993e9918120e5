"""The in-package fake forge: it keeps the port's promises, so engine tests can rely on it."""

from __future__ import annotations

import asyncio

import pytest

from integrations.forges.base import (
    BranchDeletion,
    BranchRefused,
    Forge,
    ForgeError,
    Mergeability,
    MergeMethod,
    MergeRefused,
    MergeState,
    PullRequestMerged,
    PullRequestState,
)
from integrations.forges.fake import FakeForge

REPO = "acme/app"
BRANCH = "conveyor/proj-42"
SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
PENDING = Mergeability(MergeState.PENDING, "waiting for checks: ci")
MERGEABLE = Mergeability(MergeState.MERGEABLE)


@pytest.fixture
def forge() -> FakeForge:
    forge = FakeForge()
    forge.push(REPO, BRANCH, SHA)
    return forge


async def open_pr(forge: Forge, title: str = "PROJ-42: Fix login") -> int:
    pr = await forge.open_pull_request(REPO, head=BRANCH, base="main", title=title, body="b")
    return pr.number


async def test_opening_twice_for_one_head_updates_the_same_pull_request(forge: FakeForge) -> None:
    first = await forge.open_pull_request(REPO, head=BRANCH, base="main", title="t1", body="b1")
    second = await forge.open_pull_request(REPO, head=BRANCH, base="main", title="t2", body="b2")
    assert first.number == second.number == 1
    assert (forge.pull(REPO, 1).title, forge.pull(REPO, 1).body) == ("t2", "b2")
    assert first.url == "https://fake-forge.invalid/acme/app/pull/1"
    assert first.head_sha == SHA


async def test_a_push_moves_the_open_pull_requests_head(forge: FakeForge) -> None:
    number = await open_pr(forge)
    forge.push(REPO, BRANCH, "f" * 40)
    assert (await forge.pull_request(REPO, number)).head_sha == "f" * 40


async def test_scripted_mergeability_then_merge(forge: FakeForge) -> None:
    number = await open_pr(forge)
    forge.script_mergeability(REPO, number, PENDING, PENDING, MERGEABLE)
    seen = [(await forge.mergeability(REPO, number)).state for _ in range(4)]
    assert seen == [
        MergeState.PENDING,
        MergeState.PENDING,
        MergeState.MERGEABLE,
        MergeState.MERGEABLE,
    ]
    merge_sha = await forge.merge(REPO, number, method=MergeMethod.SQUASH, sha=SHA)
    pull = forge.pull(REPO, number)
    assert (pull.state, pull.merge_sha, pull.method) == (
        PullRequestState.MERGED,
        merge_sha,
        MergeMethod.SQUASH,
    )
    # Merging again is answered with the same merge commit: merged once.
    assert await forge.merge(REPO, number, method=MergeMethod.SQUASH, sha=SHA) == merge_sha


async def test_merge_is_refused_while_not_mergeable_or_when_the_head_moved(
    forge: FakeForge,
) -> None:
    number = await open_pr(forge)
    forge.script_mergeability(REPO, number, Mergeability(MergeState.BLOCKED, "failing check: ci"))
    with pytest.raises(MergeRefused, match="failing check: ci") as refused:
        await forge.merge(REPO, number, method=MergeMethod.MERGE, sha=SHA)
    assert refused.value.status == 405 and not refused.value.head_changed
    forge.script_mergeability(REPO, number, MERGEABLE)
    with pytest.raises(MergeRefused) as moved:
        await forge.merge(REPO, number, method=MergeMethod.MERGE, sha="0" * 40)
    assert moved.value.head_changed and moved.value.status == 409
    assert forge.pull(REPO, number).state is PullRequestState.OPEN


async def test_scripted_merge_results(forge: FakeForge) -> None:
    number = await open_pr(forge)
    forge.script_merge(REPO, number, MergeRefused("Base branch was modified", status=405), "a" * 40)
    with pytest.raises(MergeRefused, match="Base branch"):
        await forge.merge(REPO, number, method=MergeMethod.MERGE, sha=SHA)
    assert await forge.merge(REPO, number, method=MergeMethod.MERGE, sha=SHA) == "a" * 40


async def test_a_failure_that_lands_merges_but_loses_the_answer(forge: FakeForge) -> None:
    number = await open_pr(forge)
    forge.fail_next(operation="merge", status=502, lands=True)
    with pytest.raises(ForgeError) as lost:
        await forge.merge(REPO, number, method=MergeMethod.MERGE, sha=SHA)
    assert lost.value.status == 502
    assert forge.pull(REPO, number).state is PullRequestState.MERGED
    # The retry finds it merged and answers the one merge commit.
    merge_sha = forge.pull(REPO, number).merge_sha
    assert await forge.merge(REPO, number, method=MergeMethod.MERGE, sha=SHA) == merge_sha


async def test_failures_match_their_operation_only(forge: FakeForge) -> None:
    number = await open_pr(forge)
    forge.fail_next(2, operation="branch_protected", status=503, retry_after=30.0)
    assert (await forge.mergeability(REPO, number)).state is MergeState.MERGEABLE
    for _ in range(2):
        with pytest.raises(ForgeError) as caught:
            await forge.branch_protected(REPO, BRANCH)
        assert (caught.value.status, caught.value.retry_after) == (503, 30.0)
    assert await forge.branch_protected(REPO, BRANCH) is False


async def test_close_comments_once_and_never_closes_a_merged_one(forge: FakeForge) -> None:
    number = await open_pr(forge)
    await forge.close(REPO, number, comment="conveyor stopped this task")
    await forge.close(REPO, number, comment="again")  # closing a closed one is fine
    pull = forge.pull(REPO, number)
    assert (pull.state, pull.comments) == (PullRequestState.CLOSED, ["conveyor stopped this task"])

    forge.push(REPO, "conveyor/proj-43", "b" * 40)
    other = (
        await forge.open_pull_request(
            REPO, head="conveyor/proj-43", base="main", title="t", body="b"
        )
    ).number
    forge.merged_by_hand(REPO, other)
    with pytest.raises(PullRequestMerged, match="stays merged"):
        await forge.close(REPO, other, comment="no")
    assert forge.pull(REPO, other).state is PullRequestState.MERGED
    mergeability = await forge.mergeability(REPO, other)
    assert mergeability.state is MergeState.MERGEABLE  # merge() answers its merge commit


async def test_protection_and_deletion(forge: FakeForge) -> None:
    forge.protect(REPO, "release/*")
    forge.push(REPO, "release/1.0", "c" * 40)
    assert await forge.branch_protected(REPO, "release/1.0")
    assert not await forge.branch_protected(REPO, BRANCH)
    with pytest.raises(BranchRefused) as protected:
        await forge.delete_branch(REPO, "release/1.0")
    assert protected.value.reason == "protected"
    with pytest.raises(BranchRefused) as default:
        await forge.delete_branch(REPO, "main")
    assert default.value.reason == "default"
    assert await forge.delete_branch(REPO, BRANCH) is BranchDeletion.DELETED
    assert await forge.delete_branch(REPO, BRANCH) is BranchDeletion.ALREADY_GONE
    assert "release/1.0" in forge.branches[REPO]


async def test_a_held_call_lets_a_test_act_while_it_is_in_flight(forge: FakeForge) -> None:
    number = await open_pr(forge)
    hold = forge.hold("merge")
    merging = asyncio.create_task(forge.merge(REPO, number, method=MergeMethod.MERGE, sha=SHA))
    await hold.entered.wait()
    assert forge.pull(REPO, number).state is PullRequestState.OPEN
    hold.release.set()
    await merging
    assert forge.pull(REPO, number).state is PullRequestState.MERGED


async def test_every_call_is_logged(forge: FakeForge) -> None:
    number = await open_pr(forge)
    await forge.mergeability(REPO, number)
    await forge.merge(REPO, number, method=MergeMethod.REBASE, sha=SHA)
    await forge.delete_branch(REPO, BRANCH)
    assert forge.calls == [
        f"open_pull_request {REPO} {BRANCH}",
        f"mergeability {REPO} #1",
        f"merge {REPO} #1 rebase {SHA}",
        f"delete_branch {REPO} {BRANCH}",
    ]


async def test_unknown_pull_requests_and_bad_repository_names(forge: FakeForge) -> None:
    with pytest.raises(ForgeError) as missing:
        await forge.pull_request(REPO, 99)
    assert missing.value.status == 404
    with pytest.raises(ForgeError, match="owner/name"):
        await forge.branch_protected("app", BRANCH)
