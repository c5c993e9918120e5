"""The pure forge core on recorded GitHub and Gitea answers: pull requests, mergeability,
required checks, rulesets and Gitea's protection rule globs. No I/O."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from integrations.errors import IntegrationError
from integrations.forges import checks
from integrations.forges.base import (
    BranchRefused,
    ForgeError,
    Mergeability,
    MergeRefused,
    MergeState,
    PullRequest,
    PullRequestMerged,
    PullRequestState,
    split_repo,
)
from integrations.forges.checks import Check, Outcome
from integrations.forges.globs import gitea_rule_matches

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "forges"
HEAD_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
MERGE_SHA = "9f3a1c2e4b5d6a7f8e9d0c1b2a3f4e5d6c7b8a90"


def github(name: str) -> Any:
    return json.loads((SAMPLES / "github" / f"{name}.json").read_text())


def gitea(name: str) -> Any:
    return json.loads((SAMPLES / "gitea" / f"{name}.json").read_text())


# -- pull requests -----------------------------------------------------------------------


def test_a_created_github_pull_request() -> None:
    assert checks.github_pull_request(github("pull_created")) == PullRequest(
        number=42,
        url="https://github.com/acme/app/pull/42",
        head_sha=HEAD_SHA,
        state=PullRequestState.OPEN,
    )


def test_an_open_github_pull_request_never_reports_its_test_merge_commit() -> None:
    pr = checks.github_pull_request(github("pull_clean"))
    assert github("pull_clean")["merge_commit_sha"]  # GitHub's test merge
    assert pr.merge_sha is None


def test_a_merged_github_pull_request_has_its_merge_commit() -> None:
    pr = checks.github_pull_request(github("pull_merged"))
    assert (pr.state, pr.merge_sha) == (PullRequestState.MERGED, MERGE_SHA)


def test_a_github_list_item_reads_like_a_single_pull_request() -> None:
    [item] = github("pulls_open_for_head")
    assert checks.github_pull_request(item) == checks.github_pull_request(github("pull_created"))


def test_a_closed_github_pull_request() -> None:
    assert checks.github_pull_request(github("pull_closed")).state is PullRequestState.CLOSED


def test_gitea_pull_requests() -> None:
    created = checks.gitea_pull_request(gitea("pull_created"))
    assert created == PullRequest(
        7, "https://gitea.example.test/acme/app/pulls/7", HEAD_SHA, PullRequestState.OPEN
    )
    merged = checks.gitea_pull_request(gitea("pull_merged"))
    assert (merged.state, merged.merge_sha) == (PullRequestState.MERGED, MERGE_SHA)
    assert checks.gitea_pull_request(gitea("pull_closed")).state is PullRequestState.CLOSED


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"number": None}, "number"),
        ({"number": True}, "number"),
        ({"html_url": ""}, "html_url"),
        ({"head": "conveyor/proj-42"}, "head"),
    ],
)
def test_a_pull_request_without_its_fields_is_refused(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        checks.github_pull_request({**github("pull_created"), **change})


# -- GitHub mergeability -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pull_created", "pull_computing"])
def test_github_still_computing_is_unknown(name: str) -> None:
    verdict = checks.github_verdict(github(name))
    assert verdict is not None
    assert verdict.state is MergeState.UNKNOWN
    assert "computing" in verdict.reason


@pytest.mark.parametrize("name", ["pull_clean", "pull_unstable"])
def test_github_clean_and_unstable_are_mergeable(name: str) -> None:
    verdict = checks.github_verdict(github(name))
    assert verdict is not None and verdict.state is MergeState.MERGEABLE


def test_github_has_hooks_is_mergeable() -> None:
    verdict = checks.github_verdict({**github("pull_clean"), "mergeable_state": "has_hooks"})
    assert verdict is not None and verdict.state is MergeState.MERGEABLE


@pytest.mark.parametrize(
    ("name", "words"),
    [("pull_dirty", "conflicts"), ("pull_behind", "up to date"), ("pull_draft", "draft")],
)
def test_github_dirty_behind_and_draft_block_with_their_reason(name: str, words: str) -> None:
    verdict = checks.github_verdict(github(name))
    assert verdict is not None
    assert verdict.state is MergeState.BLOCKED
    assert words in verdict.reason


def test_github_blocked_needs_the_checks() -> None:
    assert checks.github_verdict(github("pull_blocked")) is None


def test_a_merged_pull_request_needs_no_merge_call_to_fail() -> None:
    verdict = checks.github_verdict(github("pull_merged"))
    assert verdict == Mergeability(MergeState.MERGEABLE, checks.ALREADY_MERGED)


def test_a_closed_pull_request_is_blocked() -> None:
    verdict = checks.github_verdict(github("pull_closed"))
    assert verdict is not None and verdict.state is MergeState.BLOCKED
    assert "closed" in verdict.reason


def test_an_unheard_of_mergeable_state_is_unknown_never_mergeable() -> None:
    verdict = checks.github_verdict({**github("pull_clean"), "mergeable_state": "sideways"})
    assert verdict is not None and verdict.state is MergeState.UNKNOWN


def test_required_checks_come_from_classic_protection_and_rulesets() -> None:
    required = checks.github_required_checks(github("branch_main_protected"), github("rules_main"))
    assert required == {"ci/build", "lint", "ci/test"}


def test_an_unprotected_base_requires_nothing() -> None:
    assert not checks.github_required_checks(github("branch_task_unprotected"), [])


def head_checks(runs: str, status: str) -> list[Check]:
    found = checks.github_check_runs(github(runs)["check_runs"])
    return found + checks.commit_statuses(github(status)["statuses"])


REQUIRED = frozenset({"ci/build", "ci/test", "lint"})


def test_a_completed_failing_required_check_blocks_naming_it() -> None:
    verdict = checks.github_blocked_verdict(
        head_checks("check_runs_failing", "status_success"), REQUIRED
    )
    assert verdict.state is MergeState.BLOCKED
    # `docs` failed too, but nothing requires it.
    assert verdict.failing_checks == ("ci/build",)
    assert "ci/build" in verdict.reason


def test_a_failing_required_status_blocks_too() -> None:
    verdict = checks.github_blocked_verdict(
        head_checks("check_runs_success", "status_failure"), REQUIRED
    )
    assert verdict.failing_checks == ("lint",)


def test_pending_required_checks_are_waited_for() -> None:
    verdict = checks.github_blocked_verdict(
        head_checks("check_runs_pending", "status_pending"), REQUIRED
    )
    assert verdict.state is MergeState.PENDING
    assert verdict.failing_checks == ()
    assert "ci/build" in verdict.reason and "lint" in verdict.reason


def test_a_required_check_not_reported_yet_is_pending() -> None:
    verdict = checks.github_blocked_verdict(
        head_checks("check_runs_success", "status_none"), REQUIRED
    )
    assert verdict.state is MergeState.PENDING
    assert "lint (not reported yet)" in verdict.reason


def test_all_required_checks_green_but_blocked_waits_for_a_review() -> None:
    verdict = checks.github_blocked_verdict(
        head_checks("check_runs_success", "status_success"), REQUIRED
    )
    assert verdict.state is MergeState.PENDING
    assert "review" in verdict.reason


def test_skipped_and_neutral_check_runs_pass_and_cancelled_fails() -> None:
    runs = [
        {"name": "a", "status": "completed", "conclusion": "skipped"},
        {"name": "b", "status": "completed", "conclusion": "neutral"},
        {"name": "c", "status": "completed", "conclusion": "cancelled"},
        {"name": "d", "status": "completed", "conclusion": "timed_out"},
        {"name": "e", "status": "waiting", "conclusion": None},
    ]
    outcomes = {check.name: check.outcome for check in checks.github_check_runs(runs)}
    assert outcomes == {
        "a": Outcome.PASSED,
        "b": Outcome.PASSED,
        "c": Outcome.FAILED,
        "d": Outcome.FAILED,
        "e": Outcome.PENDING,
    }


def test_a_name_reported_twice_takes_the_worse_outcome() -> None:
    reported = [Check("ci", Outcome.PASSED), Check("ci", Outcome.FAILED)]
    verdict = checks.judge_checks(reported, {"ci"})
    assert verdict is not None and verdict.failing_checks == ("ci",)


def test_rulesets_protect_against_deletion_force_push_or_update() -> None:
    assert checks.github_rules_protect(github("rules_main"))
    assert checks.github_rules_protect(github("rules_release_update"))
    assert not checks.github_rules_protect(github("rules_task_signed_only"))
    assert not checks.github_rules_protect(github("rules_none"))


# -- Gitea mergeability ----------------------------------------------------------------------


def gitea_statuses(name: str) -> list[Check]:
    return checks.commit_statuses(gitea(name)["statuses"] or [])


def test_gitea_mergeable_with_green_statuses() -> None:
    verdict = checks.gitea_verdict(gitea("pull_mergeable"), gitea_statuses("status_success"))
    assert verdict == Mergeability(MergeState.MERGEABLE)


def test_gitea_mergeable_without_any_status() -> None:
    verdict = checks.gitea_verdict(gitea("pull_mergeable"), gitea_statuses("status_none"))
    assert verdict.state is MergeState.MERGEABLE


def test_gitea_failing_status_blocks_naming_it() -> None:
    verdict = checks.gitea_verdict(gitea("pull_mergeable"), gitea_statuses("status_failure"))
    assert verdict.state is MergeState.BLOCKED
    assert verdict.failing_checks == ("ci / test (push)",)


def test_gitea_pending_status_is_pending() -> None:
    verdict = checks.gitea_verdict(gitea("pull_mergeable"), gitea_statuses("status_pending"))
    assert verdict.state is MergeState.PENDING
    assert "ci / test (push)" in verdict.reason


def test_gitea_not_mergeable_is_unknown_while_it_may_still_be_checking() -> None:
    verdict = checks.gitea_verdict(gitea("pull_created"), gitea_statuses("status_success"))
    assert verdict.state is MergeState.UNKNOWN
    assert "conflicts" in verdict.reason


def test_gitea_work_in_progress_blocks() -> None:
    verdict = checks.gitea_verdict(gitea("pull_wip"), [])
    assert verdict.state is MergeState.BLOCKED
    assert "work in progress" in verdict.reason


def test_gitea_merged_and_closed() -> None:
    assert checks.gitea_verdict(gitea("pull_merged"), []).reason == checks.ALREADY_MERGED
    assert checks.gitea_verdict(gitea("pull_closed"), []).state is MergeState.BLOCKED


def test_a_status_word_nobody_knows_never_passes() -> None:
    [check] = checks.commit_statuses([{"context": "ci", "status": "exploded"}])
    assert check.outcome is Outcome.PENDING


# -- Gitea's protection rule names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "branch", "matches"),
    [
        ("main", "main", True),
        ("main", "MAIN", True),  # a plain name compares case-insensitively
        ("main", "main2", False),
        ("release/**", "release/1.0/hotfix", True),
        ("release/*", "release/1.0", True),
        ("release/*", "release/1.0/hotfix", False),  # `*` stops at `/`
        ("release/*", "Release/1.0", False),  # a glob is case-sensitive
        ("conveyor/*", "conveyor/proj-42", True),
        ("v?.x", "v1.x", True),
        ("v?.x", "v/.x", False),
        ("v[0-9].x", "v7.x", True),
        ("v[!0-9].x", "v7.x", False),
        ("{main,develop}", "develop", True),
        ("{release,hotfix}/**", "hotfix/a/b", True),
        ("{release,hotfix}/**", "feature/a", False),
        (r"weird\*name", "weird*name", True),
        (r"weird\*name", "weirdXname", False),
        ("broken[", "broken[", True),  # does not compile: matched literally
        ("broken{a", "brokena", False),
    ],
)
def test_gitea_rule_matching(rule: str, branch: str, matches: bool) -> None:
    assert gitea_rule_matches(rule, branch) is matches


# -- the error hierarchy and repository names ------------------------------------------------


def test_every_forge_error_is_an_integration_error() -> None:
    errors = [
        MergeRefused("m", head_changed=True),
        PullRequestMerged("p"),
        BranchRefused("b", reason="protected"),
    ]
    assert all(isinstance(e, ForgeError) and isinstance(e, IntegrationError) for e in errors)


@pytest.mark.parametrize("bad", ["acme", "acme/app/x", "/app", "acme/", " acme/app", "../app", ""])
def test_a_repository_must_be_owner_slash_name(bad: str) -> None:
    with pytest.raises(ForgeError, match="owner/name"):
        split_repo(bad)


def test_a_repository_name_splits() -> None:
    assert split_repo("acme/app") == ("acme", "app")
