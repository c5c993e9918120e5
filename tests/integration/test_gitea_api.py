"""The Gitea/Forgejo adapter's API side against Gitea's HTTP shapes (respx), real client."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.trackers.base import Gone, Notice, Signal, Ticket, TicketRef, TrackerError
from integrations.trackers.gitea import GiteaSettings, GiteaTracker, build

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "gitea"
BASE_URL = "https://git.example.test"
API = f"{BASE_URL}/api/v1"
TOKEN = "8c1f0e5a4b3d2c1e0f9a8b7c6d5e4f3a2b1c0d9e"
PROJECTS = {"acme/web-app": "app"}
REF_42 = TicketRef("gitea", "acme/web-app", "acme/web-app#42", "app#42")
ISSUE_42 = "/repos/acme/web-app/issues/42"
ISSUES = "/repos/acme/web-app/issues"
SINCE = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


class Sleeps:
    """The sleep port: records how long the adapter asked to wait, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make(http: httpx.AsyncClient, sleeps: Sleeps, **settings: Any) -> GiteaTracker:
    values = {"webhook_secret": "s", "token": TOKEN, "base_url": BASE_URL} | settings
    return build(GiteaSettings(**values), http, PROJECTS, sleep=sleeps, clock=lambda: 0.0)


@pytest.fixture
def gitea(http: httpx.AsyncClient, sleeps: Sleeps) -> GiteaTracker:
    return make(http, sleeps)


def issues(first: int, count: int) -> list[dict[str, Any]]:
    """``count`` issues shaped like the sample, numbered from ``first``."""
    template = sample("api_issue")
    out = []
    for number in range(first, first + count):
        item = copy.deepcopy(template)
        item.update(
            number=number, id=300 + number, updated_at=f"2026-11-21T10:{number % 60:02d}:00+01:00"
        )
        out.append(item)
    return out


async def test_a_comment_is_posted_with_the_token(
    api: respx.MockRouter, gitea: GiteaTracker
) -> None:
    route = api.post(f"{ISSUE_42}/comments").respond(201, json=sample("api_comment_created"))
    notice = Notice("conveyor stopped this task.", ("agent stopped", "branch deleted"))
    await gitea.comment(REF_42, notice)
    request = route.calls.last.request
    assert request.url == f"{API}{ISSUE_42}/comments"
    assert json.loads(request.content) == {"body": notice.as_markdown()}
    assert request.headers["Authorization"] == f"token {TOKEN}"


async def test_read_answers_the_ticket(api: respx.MockRouter, gitea: GiteaTracker) -> None:
    api.get(ISSUE_42).respond(200, json=sample("api_issue"))
    ticket = await gitea.read(REF_42)
    assert isinstance(ticket, Ticket)
    assert (ticket.ref, ticket.title, ticket.labels) == (
        REF_42,
        "Fix login redirect loop",
        ("bug", "conveyor:analyse"),
    )
    assert ticket.signal is Signal.START
    assert ticket.updated_at == datetime(2026, 11, 21, 9, 15, 42, tzinfo=UTC)


async def test_a_missing_issue_in_a_readable_repository_is_gone(
    api: respx.MockRouter, gitea: GiteaTracker
) -> None:
    api.get(ISSUE_42).respond(404, json={"message": "The target couldn't be found.", "errors": []})
    api.get("/repos/acme/web-app").respond(200, json={"full_name": "acme/web-app"})
    assert await gitea.read(REF_42) == Gone(404)


async def test_a_repository_the_token_cannot_see_is_an_error_not_gone(
    api: respx.MockRouter, gitea: GiteaTracker
) -> None:
    api.get(ISSUE_42).respond(404, json={"message": "The target couldn't be found."})
    api.get("/repos/acme/web-app").respond(404, json={"message": "The target couldn't be found."})
    with pytest.raises(TrackerError, match="token cannot see it"):
        await gitea.read(REF_42)


async def test_a_server_error_is_retried_then_reported(
    api: respx.MockRouter, gitea: GiteaTracker, sleeps: Sleeps
) -> None:
    route = api.get(ISSUE_42).respond(500, json={"message": "database is locked"})
    with pytest.raises(TrackerError, match="HTTP 500") as failed:
        await gitea.read(REF_42)
    assert failed.value.status == 500 and route.call_count == 4 and len(sleeps.calls) == 3


async def test_a_429_waits_as_retry_after_says(
    api: respx.MockRouter, gitea: GiteaTracker, sleeps: Sleeps
) -> None:
    api.post(f"{ISSUE_42}/comments").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "4"}),
            httpx.Response(201, json=sample("api_comment_created")),
        ]
    )
    await gitea.comment(REF_42, Notice("stopped"))
    assert sleeps.calls == [4.0]


async def test_a_403_says_which_scopes_the_token_needs(
    api: respx.MockRouter, gitea: GiteaTracker, sleeps: Sleeps
) -> None:
    api.post(f"{ISSUE_42}/comments").respond(403, json={"message": "token does not have scope"})
    with pytest.raises(TrackerError, match="write:issue") as failed:
        await gitea.comment(REF_42, Notice("stopped"))
    assert failed.value.status == 403 and sleeps.calls == []


async def test_the_token_is_never_in_an_error_message(
    api: respx.MockRouter, gitea: GiteaTracker
) -> None:
    api.get(ISSUE_42).respond(401, json={"message": f"invalid token {TOKEN}"})
    with pytest.raises(TrackerError) as failed:
        await gitea.read(REF_42)
    assert TOKEN not in str(failed.value) and "CONVEYOR_GITEA_TOKEN" in str(failed.value)


async def test_changed_since_pages_until_a_short_page(
    api: respx.MockRouter, gitea: GiteaTracker
) -> None:
    route = api.get(ISSUES).mock(
        side_effect=[
            httpx.Response(200, json=issues(100, 50)),
            httpx.Response(200, json=sample("api_issues")),
        ]
    )
    tickets = await gitea.changed_since("acme/web-app", SINCE)
    assert len(tickets) == 52 and route.call_count == 2
    assert [dict(call.request.url.params) for call in route.calls] == [
        {
            "state": "all",
            "type": "issues",
            "since": "2026-11-21T09:00:00Z",
            "limit": "50",
            "page": str(page),
        }
        for page in (1, 2)
    ]
    times = [t.updated_at for t in tickets]
    assert times == sorted(times)  # oldest first
    assert {t.ref.key for t in tickets} >= {"app#42", "app#43", "app#100", "app#149"}


async def test_the_total_count_wins_over_a_smaller_server_page(
    api: respx.MockRouter, gitea: GiteaTracker
) -> None:
    # An instance with MAX_RESPONSE_ITEMS = 30 answers 30 per page whatever limit says.
    total = {"X-Total-Count": "45"}
    route = api.get(ISSUES).mock(
        side_effect=[
            httpx.Response(200, json=issues(1, 30), headers=total),
            httpx.Response(200, json=issues(31, 15), headers=total),
        ]
    )
    assert len(await gitea.changed_since("acme/web-app", SINCE)) == 45
    assert route.call_count == 2


async def test_an_empty_list_is_one_request(api: respx.MockRouter, gitea: GiteaTracker) -> None:
    route = api.get(ISSUES).respond(200, json=[], headers={"X-Total-Count": "0"})
    assert await gitea.changed_since("acme/web-app", SINCE) == []
    assert route.call_count == 1


async def test_pull_requests_in_the_list_are_skipped(
    api: respx.MockRouter, gitea: GiteaTracker
) -> None:
    pull = sample("api_issue") | {
        "number": 45,
        "pull_request": {"merged": False, "merged_at": None},
    }
    api.get(ISSUES).respond(200, json=[*sample("api_issues"), pull])
    assert sorted(t.ref.key for t in await gitea.changed_since("acme/web-app", SINCE)) == [
        "app#42",
        "app#43",
    ]


async def test_a_list_that_is_not_a_list_is_an_error(
    api: respx.MockRouter, gitea: GiteaTracker
) -> None:
    api.get(ISSUES).respond(200, json={"message": "not found"})
    with pytest.raises(TrackerError, match="is not a list"):
        await gitea.changed_since("acme/web-app", SINCE)


async def test_without_base_url_or_token_the_api_says_what_to_set(
    http: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    for missing in ({"token": ""}, {"base_url": ""}):
        gitea = make(http, sleeps, **missing)
        assert gitea.has_api is False
        with pytest.raises(TrackerError, match="CONVEYOR_GITEA_BASE_URL, CONVEYOR_GITEA_TOKEN"):
            await gitea.comment(REF_42, Notice("x"))


async def test_a_base_url_given_with_api_v1_is_not_doubled(
    api: respx.MockRouter, http: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    gitea = make(http, sleeps, base_url=f"{BASE_URL}/api/v1/")
    route = api.get(ISSUE_42).respond(200, json=sample("api_issue"))
    await gitea.read(REF_42)
    assert route.calls.last.request.url.path == "/api/v1/repos/acme/web-app/issues/42"
