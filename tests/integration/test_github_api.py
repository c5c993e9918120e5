"""The GitHub adapter's API side against GitHub's HTTP shapes (respx), with a real client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.trackers.base import Gone, Notice, Signal, Ticket, TicketRef, TrackerError
from integrations.trackers.github import GitHubSettings, GitHubTracker, build

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "github"
API_URL = "https://api.github.com"
TOKEN = "github_pat_11ACME0000_k3e9Zx7QvLw2Rt5Yb8Nc1Df4Gh6Jm0Pq"
PROJECTS = {"acme/web-app": "app"}
REF_42 = TicketRef("github", "acme/web-app", "acme/web-app#42", "app#42")
ISSUE_42 = "/repos/acme/web-app/issues/42"
ISSUES = "/repos/acme/web-app/issues"
SINCE = datetime(2026, 11, 21, 9, 0, 0, 750_000, tzinfo=UTC)


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


class Sleeps:
    """The sleep port: records how long the adapter asked to wait, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


NOW = 1_800_000_000.0


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make(http: httpx.AsyncClient, sleeps: Sleeps, **settings: Any) -> GitHubTracker:
    values = {"webhook_secret": "s", "token": TOKEN} | settings
    return build(GitHubSettings(**values), http, PROJECTS, sleep=sleeps, clock=lambda: NOW)


@pytest.fixture
def github(http: httpx.AsyncClient, sleeps: Sleeps) -> GitHubTracker:
    return make(http, sleeps)


# -- comment and read -------------------------------------------------------------------


async def test_a_comment_is_markdown_posted_with_the_token(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    route = api.post(f"{ISSUE_42}/comments").respond(201, json=sample("api_comment_created"))
    notice = Notice(
        "conveyor stopped this task.",
        ("agent stopped",),
        "Add the label again to restart.",
        "conveyor:stop",
    )
    assert github.has_api
    await github.comment(REF_42, notice)
    request = route.calls.last.request
    assert json.loads(request.content) == {"body": notice.as_markdown()}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"


async def test_read_answers_the_ticket_as_github_has_it(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    api.get(ISSUE_42).respond(200, json=sample("api_issue"))
    ticket = await github.read(REF_42)
    assert isinstance(ticket, Ticket)
    assert ticket.ref == REF_42
    assert ticket.title == "Fix login redirect loop"
    assert ticket.description.startswith("Logging in from `/settings`")
    assert ticket.url == "https://github.com/acme/web-app/issues/42"
    assert ticket.labels == ("bug", "conveyor:analyse") and ticket.state is None
    assert ticket.signal is Signal.START
    assert ticket.updated_at == datetime(2026, 11, 21, 10, 15, 42, tzinfo=UTC)


async def test_a_deleted_issue_is_gone(api: respx.MockRouter, github: GitHubTracker) -> None:
    api.get(ISSUE_42).respond(410, json={"message": "This issue was deleted"})
    assert await github.read(REF_42) == Gone(410)


async def test_a_missing_issue_in_a_readable_repository_is_gone(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    api.get(ISSUE_42).respond(404, json={"message": "Not Found"})
    repo = api.get("/repos/acme/web-app").respond(200, json={"full_name": "acme/web-app"})
    assert await github.read(REF_42) == Gone(404)
    assert repo.called


async def test_a_repository_the_token_cannot_see_is_an_error_not_gone(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    # GitHub answers 404 for a private repository the token may not read: reading that as
    # "gone" would stop every task of the repository.
    api.get(ISSUE_42).respond(404, json={"message": "Not Found"})
    api.get("/repos/acme/web-app").respond(404, json={"message": "Not Found"})
    with pytest.raises(TrackerError, match="token cannot see it") as failed:
        await github.read(REF_42)
    assert failed.value.status == 404


async def test_a_server_error_is_retried_then_reported_with_its_status(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    route = api.get(ISSUE_42).respond(502, json={"message": "Server Error"})
    with pytest.raises(TrackerError, match="HTTP 502") as failed:
        await github.read(REF_42)
    assert failed.value.status == 502
    assert route.call_count == 4 and sleeps.calls == [0.5, 1.0, 2.0]


async def test_a_500_then_success_reads_the_ticket(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    api.get(ISSUE_42).mock(
        side_effect=[httpx.Response(500), httpx.Response(200, json=sample("api_issue"))]
    )
    assert isinstance(await github.read(REF_42), Ticket)
    assert sleeps.calls == [0.5]


async def test_a_429_waits_as_retry_after_says(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    route = api.post(f"{ISSUE_42}/comments").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow down"}),
            httpx.Response(201, json=sample("api_comment_created")),
        ]
    )
    await github.comment(REF_42, Notice("stopped"))
    assert sleeps.calls == [7.0] and route.call_count == 2


async def test_a_secondary_rate_limit_403_waits_as_retry_after_says(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    limited = httpx.Response(
        403,
        headers={"Retry-After": "30"},
        json={"message": "You have exceeded a secondary rate limit."},
    )
    api.get(ISSUE_42).mock(side_effect=[limited, httpx.Response(200, json=sample("api_issue"))])
    assert isinstance(await github.read(REF_42), Ticket)
    assert sleeps.calls == [30.0]


async def test_an_exhausted_rate_limit_403_waits_until_the_reset(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 12)}
    api.get(ISSUE_42).mock(
        side_effect=[
            httpx.Response(403, headers=headers, json={"message": "API rate limit exceeded"}),
            httpx.Response(200, json=sample("api_issue")),
        ]
    )
    await github.read(REF_42)
    assert sleeps.calls == [12.0]


async def test_a_long_rate_limit_is_handed_back_not_slept_through(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    route = api.get(ISSUE_42).respond(
        403, headers={"Retry-After": "900"}, json={"message": "limit"}
    )
    with pytest.raises(TrackerError) as failed:
        await github.read(REF_42)
    assert (failed.value.status, failed.value.retry_after) == (403, 900.0)
    assert sleeps.calls == [] and route.call_count == 1  # reconciliation backs off instead


async def test_a_plain_403_is_not_a_rate_limit_and_says_what_to_grant(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    route = api.post(f"{ISSUE_42}/comments").respond(
        403, json={"message": "Resource not accessible by personal access token"}
    )
    with pytest.raises(TrackerError, match="Issues: read and write") as failed:
        await github.comment(REF_42, Notice("stopped"))
    assert failed.value.status == 403 and route.call_count == 1 and sleeps.calls == []


async def test_the_token_is_never_in_an_error_message(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    api.get(ISSUE_42).respond(401, json={"message": f"Bad credentials: Bearer {TOKEN}"})
    with pytest.raises(TrackerError) as failed:
        await github.read(REF_42)
    assert TOKEN not in str(failed.value)
    assert "CONVEYOR_GITHUB_TOKEN" in str(failed.value) and failed.value.status == 401


async def test_a_transport_error_is_retried_and_reported_without_the_token(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    api.get(ISSUE_42).mock(side_effect=httpx.ConnectError(f"refused (token {TOKEN})"))
    with pytest.raises(TrackerError, match="ConnectError") as failed:
        await github.read(REF_42)
    assert TOKEN not in str(failed.value) and len(sleeps.calls) == 3


async def test_an_answer_that_is_not_an_issue_is_an_error(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    api.get(ISSUE_42).respond(200, json={**sample("api_issue"), "labels": "bug"})
    with pytest.raises(TrackerError, match="issue.labels"):
        await github.read(REF_42)
    api.get(ISSUE_42).respond(200, text="<html>maintenance</html>")
    with pytest.raises(TrackerError, match="not JSON"):
        await github.read(REF_42)


async def test_ids_never_leave_the_issue_path(api: respx.MockRouter, github: GitHubTracker) -> None:
    route = api.route().respond(200, json={})
    for issue_id in ("acme/..#1", "acme/web-app#1/../../../user", "acme/web-app#x"):
        with pytest.raises(TrackerError, match="not an issue id"):
            await github.read(TicketRef("github", "acme/web-app", issue_id, "app#1"))
    assert not route.called


async def test_without_a_token_the_api_says_what_to_set(
    http: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    github = make(http, sleeps, token="")
    assert github.has_api is False
    with pytest.raises(TrackerError, match="CONVEYOR_GITHUB_TOKEN"):
        await github.read(REF_42)


async def test_github_enterprise_is_reached_at_its_api_url(
    http: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    github = make(http, sleeps, api_url="https://ghe.example.test/api/v3")
    with respx.mock(base_url="https://ghe.example.test/api/v3") as ghe:
        route = ghe.get(ISSUE_42).respond(200, json=sample("api_issue"))
        assert isinstance(await github.read(REF_42), Ticket)
    assert route.calls.last.request.url.path == "/api/v3/repos/acme/web-app/issues/42"


# -- the issues changed since a time -------------------------------------------------------

PAGE_2 = f"{API_URL}/repositories/701234567/issues?state=all&since=2026-11-21T09%3A00%3A00Z&sort=updated&direction=desc&per_page=100&page=2"


async def test_changed_since_follows_link_skips_pull_requests_and_sorts_oldest_first(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    first = api.get(ISSUES).respond(
        200,
        json=sample("api_issues_page1"),
        headers={"Link": f'<{PAGE_2}>; rel="next", <{PAGE_2}>; rel="last"'},
    )
    second = api.get("/repositories/701234567/issues").respond(200, json=sample("api_issues_page2"))
    tickets = await github.changed_since("acme/web-app", SINCE)
    assert [t.ref.key for t in tickets] == ["app#39", "app#42", "app#43"]  # PR #45 skipped
    assert [t.signal for t in tickets] == [None, Signal.STOP, Signal.START]
    params = first.calls.last.request.url.params
    assert dict(params) == {
        "state": "all",
        "since": "2026-11-21T09:00:00Z",
        "sort": "updated",
        "direction": "desc",
        "per_page": "100",
    }
    assert second.calls.last.request.url.params["page"] == "2"
    assert second.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_an_unchanged_list_is_answered_from_the_etag_cache(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    route = api.get(ISSUES).mock(
        side_effect=[
            httpx.Response(200, json=sample("api_issues_page1"), headers={"ETag": 'W/"a1b2c3"'}),
            httpx.Response(304, headers={"ETag": 'W/"a1b2c3"'}),
        ]
    )
    first = await github.changed_since("acme/web-app", SINCE)
    again = await github.changed_since("acme/web-app", SINCE)
    assert again == first and len(first) == 2
    assert "If-None-Match" not in route.calls[0].request.headers
    assert route.calls[1].request.headers["If-None-Match"] == 'W/"a1b2c3"'


async def test_a_new_since_asks_afresh(api: respx.MockRouter, github: GitHubTracker) -> None:
    route = api.get(ISSUES).mock(
        side_effect=[
            httpx.Response(200, json=sample("api_issues_page1"), headers={"ETag": '"e1"'}),
            httpx.Response(200, json=sample("api_issues_page2"), headers={"ETag": '"e2"'}),
        ]
    )
    await github.changed_since("acme/web-app", SINCE)
    later = await github.changed_since("acme/web-app", datetime(2026, 11, 21, 12, tzinfo=UTC))
    assert [t.ref.key for t in later] == ["app#39"]
    assert "If-None-Match" not in route.calls[1].request.headers


async def test_a_next_link_off_the_api_is_never_followed(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    api.get(ISSUES).respond(
        200,
        json=sample("api_issues_page1"),
        headers={"Link": '<https://evil.example/steal?page=2>; rel="next"'},
    )
    with pytest.raises(TrackerError, match="leaves https://api.github.com"):
        await github.changed_since("acme/web-app", SINCE)
    assert [call.request.url.host for call in api.calls] == ["api.github.com"]


async def test_a_rate_limited_list_waits_and_goes_on(
    api: respx.MockRouter, github: GitHubTracker, sleeps: Sleeps
) -> None:
    api.get(ISSUES).mock(
        side_effect=[
            httpx.Response(
                403, headers={"Retry-After": "3"}, json={"message": "secondary rate limit"}
            ),
            httpx.Response(200, json=sample("api_issues_page2")),
        ]
    )
    assert [t.ref.key for t in await github.changed_since("acme/web-app", SINCE)] == ["app#39"]
    assert sleeps.calls == [3.0]


async def test_an_unmapped_project_is_refused_before_any_request(
    api: respx.MockRouter, github: GitHubTracker
) -> None:
    route = api.route().respond(200, json=[])
    with pytest.raises(TrackerError, match="not a mapped tracker_project"):
        await github.changed_since("someone/else", SINCE)
    assert not route.called
