"""`conveyor check --online` against a tracker's HTTP API shaped like Plane's (respx) and
a real git remote: credentials that answer are no finding, a refusal is one line."""

from __future__ import annotations

from pathlib import Path

import httpx
import respx

from bot import check
from bot.settings import Settings, settings_from_dict
from tests.gitrepo import make_repo

BASE_URL = "https://plane.example.test"
PROJECT = "5c7db7b1-1256-4e76-bfdc-fb3b34bf0180"
ITEMS = f"/api/v1/workspaces/acme/projects/{PROJECT}/work-items/"


def settings(tmp_path: Path) -> Settings:
    repo, _ = make_repo(tmp_path)
    return settings_from_dict(
        {
            "trackers": {
                "plane": {"base_url": BASE_URL, "api_key": "plane_api_key", "workspace": "acme"}
            },
            "repos": [{"name": "app", "path": str(repo.path), "tracker_project": PROJECT}],
        }
    )


def test_credentials_that_answer_are_no_finding(tmp_path: Path) -> None:
    with respx.mock(base_url=BASE_URL) as plane:
        route = plane.get(ITEMS).mock(
            return_value=httpx.Response(200, json={"results": [], "next_page_results": False})
        )
        assert check.online(settings(tmp_path)) == []
    assert route.calls.last.request.headers["x-api-key"] == "plane_api_key"


def test_a_refused_key_is_one_problem(tmp_path: Path) -> None:
    with respx.mock(base_url=BASE_URL) as plane:
        plane.get(ITEMS).mock(return_value=httpx.Response(403, json={"detail": "Invalid API key"}))
        found = check.online(settings(tmp_path))
    assert len(found) == 1
    assert (found[0].level, found[0].where) == (check.Level.PROBLEM, "trackers.plane")
    assert found[0].line().startswith(f"problem: trackers.plane: project {PROJECT}: ")
    assert "403" in found[0].message and "plane_api_key" not in found[0].message


GITHUB_API = "https://api.github.test"
BRANCH_URL = "/repos/acme/app/branches/main"
RULES_URL = "/repos/acme/app/rules/branches/main"


def forge_settings(tmp_path: Path) -> Settings:
    repo, _ = make_repo(tmp_path)
    return settings_from_dict(
        {
            "trackers": {"github": {"token": "github_token_0123456789", "api_url": GITHUB_API}},
            "repos": [
                {
                    "name": "app",
                    "path": str(repo.path),
                    "forge": "github",
                    "forge_repo": "acme/app",
                    "merge": "pull_request",
                }
            ],
        }
    )


def test_a_forge_that_reads_the_default_branch_is_no_finding(tmp_path: Path) -> None:
    with respx.mock(base_url=GITHUB_API) as github:
        branch = github.get(BRANCH_URL).mock(
            return_value=httpx.Response(200, json={"name": "main", "protected": False})
        )
        github.get(RULES_URL).mock(return_value=httpx.Response(200, json=[]))
        assert check.online(forge_settings(tmp_path)) == []
    assert branch.calls.last.request.headers["authorization"] == "Bearer github_token_0123456789"


def test_a_forge_that_cannot_see_the_repo_is_one_problem(tmp_path: Path) -> None:
    with respx.mock(base_url=GITHUB_API) as github:
        github.get(BRANCH_URL).mock(
            return_value=httpx.Response(404, json={"message": "Not Found", "status": "404"})
        )
        found = check.online(forge_settings(tmp_path))
    assert [(f.level, f.where) for f in found] == [(check.Level.PROBLEM, "repos.app.forge_repo")]
    assert found[0].line().startswith("problem: repos.app.forge_repo: github acme/app: ")
    assert "Not Found" in found[0].message and "github_token_0123456789" not in found[0].message
