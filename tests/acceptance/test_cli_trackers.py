"""`conveyor send github|gitea|linear|jira`, tracker-qualified refs (`jira:PROJ-42`) and
`conveyor reconcile`, run as a user runs them: `bot.cli.main([...])` against the real app
under uvicorn on a loopback port, with one real repo per tracker and real agents.

Plane and Jira both serve a project `PROJ`, so `PROJ-42` names a task in each: a bare
ref is refused with 409 naming both, a qualified one finds the right task.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bot.serve import serving_in_thread
from bot.settings import settings_from_dict
from integrations.trackers.plane.payloads import stable_id
from tests.acceptance.test_cli import _keep_logging, run  # noqa: F401 (an autouse fixture)
from tests.acceptance.test_cli import wait_for as cli_wait_for
from tests.gitrepo import make_repo
from tests.harness import COOPERATIVE_AGENT, PROJECT, SECRET, base_settings, write_agent

TOKEN = "admin-token-0123456789"  # what base_settings gives the server
SECRETS = {
    "github": "gh-webhook-secret-0123456789",
    "gitea": "gitea-webhook-secret-0123456789",
    "linear": "lin_wh_0123456789abcdef",
    "jira": "jira-webhook-secret-0123456789",
}
PROJECTS = {"github": "acme/gh-app", "gitea": "acme/gt-app", "linear": "ENG", "jira": "PROJ"}
PLANE_API = "http://plane.test"


def settings_doc(tmp_path: Path, **plane: Any) -> dict[str, Any]:
    """Five trackers, one repo each; every analysis agent works until it is stopped."""
    agents = tmp_path / "agents"
    agents.mkdir(exist_ok=True)
    coop = write_agent(agents, "coop.py", COOPERATIVE_AGENT)
    plane_repo, _ = make_repo(tmp_path, "plane-app")
    doc = base_settings(tmp_path, plane_repo, **{"agents.analysis": coop, "workers.concurrency": 5})
    doc["trackers"]["plane"].update(plane)
    for name, project in PROJECTS.items():
        spec, _ = make_repo(tmp_path, f"{name}-app" if "/" not in project else project[5:])
        doc["repos"].append(
            {"name": spec.name, "path": str(spec.path), "tracker": name, "tracker_project": project}
        )
        doc["trackers"][name] = {"webhook_secret": SECRETS[name]}
    return doc


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads env only (no conveyor.toml in its directory): token and secrets."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for var in ("CONVEYOR_CONFIG", "CONVEYOR_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CONVEYOR_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("CONVEYOR_PLANE_WEBHOOK_SECRET", SECRET)
    for name, secret in SECRETS.items():
        monkeypatch.setenv(f"CONVEYOR_{name.upper()}_WEBHOOK_SECRET", secret)


def get(url: str, path: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(url + path, timeout=10).json()
    return doc


wait_for = functools.partial(cli_wait_for, timeout=60.0)


def stage_of(url: str, ref: str) -> str:
    return str(get(url, f"/tasks/{ref.replace('#', '%23')}")["task"]["stage"])


@pytest.mark.timeout(180)
def test_send_starts_and_stops_in_every_tracker_and_refs_name_the_tracker(
    tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_from_dict(settings_doc(tmp_path))
    with serving_in_thread(settings) as url:
        starts = {
            "gh-app#12": ["github", "--issue", "12", "--label", "conveyor:analyse"],
            "gt-app#3": ["gitea", "--issue", "3", "--label", "conveyor:analyse"],
            "ENG-7": ["linear", "--issue", "ENG-7", "--state", "To Analyse"],
            "PROJ-42": ["jira", "--issue", "PROJ-42", "--state", "To Analyse"],
        }
        for key, argv in starts.items():
            repo = ["--repo", PROJECTS[argv[0]]] if argv[0] in ("github", "gitea") else []
            code, out, err = run(capsys, "send", *argv, *repo, "--url", url)
            assert (code, out, err) == (0, f"202 started {key}\n", ""), key
        plane = ["--issue", "PROJ-42", "--state", "To Analyse", "--project", PROJECT]
        assert run(capsys, "send", "plane", *plane, "--url", url) == (
            0,
            "202 started PROJ-42\n",
            "",
        )

        again = ["jira", "--issue", "PROJ-42", "--state", "To Analyse", "--json"]
        code, out, err = run(capsys, "send", *again, "--url", url)  # still in analysis
        assert code == 0 and json.loads(out)["task"] == "PROJ-42"

        # PROJ-42 is a Plane ticket and a Jira one: a bare ref names both, and is refused.
        code, out, err = run(capsys, "show", "PROJ-42", "--url", url)
        assert (code, out) == (1, "")
        assert err == (
            "conveyor: 'PROJ-42' names tasks of several trackers: jira:PROJ-42, plane:PROJ-42;"
            " name the tracker, e.g. jira:PROJ-42\n"
        )
        answer = httpx.get(f"{url}/tasks/PROJ-42", timeout=10)
        assert answer.status_code == 409
        assert answer.json()["candidates"] == ["jira:PROJ-42", "plane:PROJ-42"]
        code, out, err = run(capsys, "stop", "PROJ-42", "--url", url)
        assert code == 1 and "jira:PROJ-42, plane:PROJ-42" in err
        for tracker in ("jira", "plane"):
            code, out, _ = run(capsys, "show", f"{tracker}:PROJ-42", "--json", "--url", url)
            assert code == 0 and json.loads(out)["task"]["tracker"] == tracker

        # A qualified stop stops that tracker's task only.
        code, out, err = run(capsys, "stop", "plane:PROJ-42", "--url", url)
        assert code == 0 and re.fullmatch(r"STOP_REQUESTED PROJ-42 stop_id=\w+ \(202\)\n", out)
        wait_for(lambda: stage_of(url, "plane:PROJ-42") == "cancelled", "the Plane task reset")
        assert stage_of(url, "jira:PROJ-42") == "analysis"
        # Once the Plane task's key is tombstoned, the bare ref still names both tickets.
        assert httpx.get(f"{url}/tasks/PROJ-42", timeout=10).status_code == 409

        stops = {
            "gh-app#12": ["github", "--issue", "12", "--label", "conveyor:stop"],
            "gt-app#3": ["gitea", "--issue", "3", "--label", "conveyor:stop"],
            "ENG-7": ["linear", "--issue", "ENG-7", "--state", "STOP"],
            "jira:PROJ-42": ["jira", "--issue", "PROJ-42", "--state", "STOP"],
        }
        for ref, argv in stops.items():
            repo = ["--repo", PROJECTS[argv[0]]] if argv[0] in ("github", "gitea") else []
            code, out, err = run(capsys, "send", *argv, *repo, "--url", url)
            key = ref.removeprefix("jira:")
            assert code == 0 and err == "", ref
            assert re.fullmatch(rf"202 stop_requested {re.escape(key)} stop_id=\w+\n", out), out
        for ref in stops:
            wait_for(lambda ref=ref: stage_of(url, ref) == "cancelled", f"{ref} reset")  # type: ignore[misc]


def test_send_without_a_secret_or_with_a_bad_issue_is_one_line(
    tmp_path: Path,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "http://127.0.0.1:9"  # never reached: each refusal comes first
    monkeypatch.delenv("CONVEYOR_GITHUB_WEBHOOK_SECRET")
    code, out, err = run(capsys, "send", "github", "--issue", "1", "--label", "x", "--repo", "a/b")
    assert (code, out) == (2, "")
    assert err == (
        "conveyor: no GitHub webhook secret is configured ([trackers.github] webhook_secret "
        "/ CONVEYOR_GITHUB_WEBHOOK_SECRET); cannot sign\n"
    )
    cases = [
        ["gitea", "--issue", "twelve", "--label", "x", "--repo", "a/b"],
        ["gitea", "--issue", "3", "--repo", "a/b"],  # labeled needs a label
        ["gitea", "--issue", "3", "--label", "x"],  # no repo mapped, none given
        ["linear", "--issue", "eng 7", "--state", "STOP"],
        ["jira", "--issue", "42", "--state", "STOP"],
    ]
    for argv in cases:
        code, out, err = run(capsys, "send", *argv, "--url", url)
        assert code == 2 and out == "" and err.startswith("conveyor: "), argv
        assert err.count("\n") == 1 and "Traceback" not in err, argv


def plane_item(state: str, state_id: str, group: str) -> dict[str, Any]:
    """A work item as Plane's list answers it with ``expand=state``."""
    return {
        "id": stable_id("issue", "PROJ-42"),  # the id `send plane` gives PROJ-42
        "name": "PROJ-42 (sent by conveyor)",
        "sequence_id": 42,
        "project": PROJECT,
        "state": {"id": state_id, "name": state, "color": "#ef4444", "group": group},
        "description_html": "<p></p>",
        "updated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


@pytest.mark.timeout(120)
def test_reconcile_runs_a_pass_now_and_says_what_it_found(
    tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_from_dict(
        settings_doc(tmp_path, base_url=PLANE_API, api_key="plane-api-key", workspace="acme")
    )
    work_items = f"{PLANE_API}/api/v1/workspaces/acme/projects/{PROJECT}/work-items/"
    with respx.mock(assert_all_called=False) as plane, serving_in_thread(settings) as url:
        plane.route(host="127.0.0.1").pass_through()
        listed = plane.get(work_items).mock(
            return_value=httpx.Response(200, json={"results": [], "next_page_results": False})
        )
        plane.get(url__startswith=work_items).mock(
            return_value=httpx.Response(200, json=plane_item("In Progress", "s1", "started"))
        )
        commented = plane.post(url__regex=r".*/comments/$").mock(
            return_value=httpx.Response(201, json={"id": "c1"})
        )
        plane.get(url__regex=r".*/states/$").mock(
            return_value=httpx.Response(200, json={"results": [], "next_page_results": False})
        )
        plane_args = ["--issue", "PROJ-42", "--state", "To Analyse", "--project", PROJECT]
        assert run(capsys, "send", "plane", *plane_args, "--url", url)[0] == 0
        wait_for(lambda: get(url, "/tasks/plane:PROJ-42")["jobs"], "the analysis job")

        code, out, err = run(capsys, "reconcile", "--url", url)
        assert (code, err) == (0, "")
        assert out == "plane: 0 changed tickets; nothing to do\n"

        # Moved to STOP in Plane, and the webhook never came: the pass finds it.
        stopped = plane_item("STOP", "e14a6af2-d4b4-42dc-8e20-d57645086590", "cancelled")
        listed.mock(
            return_value=httpx.Response(
                200, json={"results": [stopped], "next_page_results": False}
            )
        )
        code, out, err = run(capsys, "reconcile", "--url", url)
        assert (code, err) == (0, "")
        assert out == "plane: 1 changed tickets; stopped PROJ-42; 1 missed webhook\n"
        wait_for(lambda: stage_of(url, "plane:PROJ-42") == "cancelled", "the reset")
        wait_for(lambda: commented.call_count == 1, "the one comment")

        code, out, err = run(capsys, "reconcile", "--json", "--url", url)
        report = json.loads(out)["trackers"]["plane"]
        assert code == 0 and report["stops"] == [] and report["tickets"] == 1

        # Plane down: the pass changes nothing, says so, and the exit status is 1.
        listed.mock(return_value=httpx.Response(503, json={"error": "maintenance"}))
        code, out, err = run(capsys, "reconcile", "--url", url)
        assert code == 1 and out.startswith("plane: error, nothing changed: ")
        assert "503" in out


def test_reconcile_with_no_tracker_api_says_so(
    tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_from_dict(settings_doc(tmp_path))
    with serving_in_thread(settings) as url:
        assert run(capsys, "reconcile", "--url", url) == (
            0,
            "no tracker has API credentials and a mapped project: nothing to reconcile\n",
            "",
        )
        code, out, _ = run(capsys, "reconcile", "--json", "--url", url)
        assert code == 0 and json.loads(out) == {"trackers": {}}
