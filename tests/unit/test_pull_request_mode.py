"""Pull-request mode's pure parts: the settings it needs, the forges the composition
root builds from them, and the merge stage's decisions over the forge's answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bot.engine.pr_open import body_of, title_of
from bot.engine.pull_requests import (
    POLL_MAX_SECONDS,
    POLL_MIN_SECONDS,
    decide_next,
    forge_failure,
    next_poll,
)
from bot.errors import ConfigError
from bot.forges import build_forges, check_repo_forges
from bot.settings import settings_from_dict
from integrations.forges.base import ForgeError, Mergeability, MergeState
from integrations.forges.gitea import GiteaForge
from integrations.forges.github import GitHubForge
from state.models import Stage, Task


def _repo(**keys: Any) -> dict[str, Any]:
    return {"name": "app", "path": "/srv/app", **keys}


def test_pull_request_mode_needs_a_forge_and_its_repository() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({"repos": [_repo(merge="pull_request", forge="github")]})
    assert str(caught.value) == (
        'repos.0: merge = "pull_request" needs forge = "github" or "gitea" and '
        'forge_repo = "owner/name"'
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"merge": "rebase"},
            "repos.0.merge must be one of 'push' or 'pull_request', got 'rebase'",
        ),
        ({"forge": "gitlab"}, "repos.0.forge must be one of '', 'github' or 'gitea', got 'gitlab'"),
        ({"forge_repo": "acme"}, "repos.0.forge_repo: forge_repo must be 'owner/name', got 'acme'"),
        ({"forge": "github"}, 'repos.0: forge = "github" needs forge_repo = "owner/name"'),
        (
            {"merge_method": "ff"},
            "repos.0.merge_method must be one of 'merge', 'squash' or 'rebase', got 'ff'",
        ),
        (
            {"merge_timeout_seconds": 0},
            "repos.0.merge_timeout_seconds must be a number from 1 to 604800, got 0",
        ),
    ],
)
def test_bad_merge_settings_say_what_is_allowed(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({"repos": [_repo(**keys)]})
    assert str(caught.value) == message


def test_the_defaults_push_as_before() -> None:
    repo = settings_from_dict({"repos": [_repo()]}).repos[0]
    assert (repo.merge, repo.forge, repo.merge_method, repo.merge_timeout_seconds) == (
        "push",
        "",
        "merge",
        3600,
    )


async def test_forges_are_built_from_their_tracker_sections() -> None:
    settings = settings_from_dict(
        {
            "trackers": {
                "github": {"token": "ghp_x", "api_url": "https://ghe.example.test/api/v3"},
                "gitea": {"token": "gt_x", "base_url": "https://git.example.test"},
            },
            "repos": [
                _repo(merge="pull_request", forge="github", forge_repo="acme/app"),
                {**_repo(name="two", forge="gitea", forge_repo="acme/two")},
            ],
        }
    )
    async with httpx.AsyncClient() as http:
        forges = build_forges(settings, http)
    assert set(forges) == {"github", "gitea"}
    assert isinstance(forges["github"], GitHubForge) and isinstance(forges["gitea"], GiteaForge)
    assert "ghp_x" not in repr(forges["github"]) and "gt_x" not in repr(forges["gitea"])
    check_repo_forges(settings, forges)


async def test_a_pull_request_repo_without_forge_credentials_is_refused() -> None:
    settings = settings_from_dict(
        {"repos": [_repo(merge="pull_request", forge="gitea", forge_repo="acme/app")]}
    )
    async with httpx.AsyncClient() as http:
        forges = build_forges(settings, http)
    assert forges == {}
    with pytest.raises(ConfigError) as caught:
        check_repo_forges(settings, forges)
    assert "CONVEYOR_GITEA_TOKEN" in str(caught.value)


def test_mergeable_merges_and_blocked_blocks_at_once() -> None:
    merge = decide_next(Mergeability(MergeState.MERGEABLE), waited=0, timeout=60)
    assert merge.action == "merge"
    failing = Mergeability(MergeState.BLOCKED, "failing check: ci/test", ("ci/test",))
    assert decide_next(failing, waited=0, timeout=60).reason == "failing check: ci/test"
    assert decide_next(failing, waited=0, timeout=60).action == "block"


def test_pending_and_unknown_wait_until_the_timeout_then_block_with_the_reason() -> None:
    pending = Mergeability(MergeState.PENDING, "waiting for checks: ci/build")
    early = decide_next(pending, waited=8, timeout=60)
    assert (early.action, early.delay) == ("wait", 2.0)
    unknown = decide_next(Mergeability(MergeState.UNKNOWN), waited=0, timeout=60)
    assert (unknown.action, unknown.delay) == ("wait", POLL_MIN_SECONDS)
    late = decide_next(pending, waited=60, timeout=60)
    assert late.action == "block"
    assert late.reason == "not mergeable after 60 s: waiting for checks: ci/build"


def test_polls_back_off_within_bounds() -> None:
    assert next_poll(0) == POLL_MIN_SECONDS
    assert next_poll(40) == 10
    assert next_poll(10_000) == POLL_MAX_SECONDS


def test_title_and_body_name_the_ticket() -> None:
    task = Task(
        id=7,
        tracker="plane",
        issue_id="x",
        key="PROJ-42",
        project_id=None,
        repo="app",
        title="Fix login redirect loop",
        stage=Stage.MERGE,
        version=1,
        created_at=0,
        updated_at=0,
        url="https://plane.example.test/acme/browse/PROJ-42/",
    )
    repo = settings_from_dict(
        {"repos": [_repo(merge="pull_request", forge="github", forge_repo="acme/app")]}
    ).repos[0]
    assert title_of(task) == "PROJ-42: Fix login redirect loop"
    body = body_of(task, repo, "github")
    assert "Ticket: https://plane.example.test/acme/browse/PROJ-42/" in body
    assert "conveyor opened this pull request for PROJ-42" in body


def test_a_forge_that_fails_for_now_is_waited_for_one_that_refuses_blocks() -> None:
    for status in (None, 502, 429):
        assert (
            forge_failure("github", ForgeError("down", status=status)).state is MergeState.PENDING
        )
    refused = ForgeError("GitHub refused a pull request: No commits between main and x", status=422)
    verdict = forge_failure("github", refused)
    assert verdict.state is MergeState.BLOCKED and "No commits between" in verdict.reason


async def test_a_push_repo_naming_a_forge_without_credentials_is_refused() -> None:
    settings = settings_from_dict({"repos": [_repo(forge="github", forge_repo="acme/app")]})
    with pytest.raises(ConfigError) as caught:
        check_repo_forges(settings, {})
    assert str(caught.value) == (
        "repos.app asks about protection on github, which needs "
        "[trackers.github] token (CONVEYOR_GITHUB_TOKEN)"
    )


def test_conveyor_check_names_missing_forge_credentials_before_serving() -> None:
    from bot.check import Level, forge_findings

    bare = settings_from_dict(
        {"repos": [_repo(merge="pull_request", forge="gitea", forge_repo="acme/app")]}
    )
    [finding] = forge_findings(bare, bare.repos[0])
    assert (finding.level, finding.where) == (Level.PROBLEM, "repos.app.forge")
    assert finding.message == (
        "merges through pull requests on gitea, which needs [trackers.gitea] token and "
        "base_url (CONVEYOR_GITEA_TOKEN, CONVEYOR_GITEA_BASE_URL)"
    )
    ready = settings_from_dict(
        {
            "trackers": {"gitea": {"token": "t", "base_url": "https://git.example.test"}},
            "repos": [_repo(merge="pull_request", forge="gitea", forge_repo="acme/app")],
        }
    )
    assert forge_findings(ready, ready.repos[0]) == []
    push = settings_from_dict({"repos": [_repo()]})
    assert forge_findings(push, push.repos[0]) == []
