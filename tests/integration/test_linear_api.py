"""Linear's GraphQL API side against Linear's request and answer shapes (respx), with a
real httpx.AsyncClient: the comment mutation, reads, cursor paging, rate limits, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.trackers.base import Gone, Notice, Signal, Ticket, TicketRef, TrackerError
from integrations.trackers.linear import ADAPTER, LinearSettings, LinearTracker
from tests.integration.http_ports import Clock, Sleeps

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "linear"
API_URL = "https://linear.example.test/graphql"
API_KEY = "lin_api_Xq7Rk2Vb9Nm4Tz6Wc1Yd8Hs3Jf5Lg0Pa"
ENG_123 = "b2e4f6a8-0c1d-4e3f-9a5b-7c9d1e3f5a7b"
REF = TicketRef("linear", "ENG", ENG_123, "ENG-123")
NOTICE = Notice(
    headline="conveyor stopped the work on ENG-123.",
    items=("1 agent process stopped", "worktree removed"),
    closing="Move the ticket to To Analyse to start again.",
    marker="conveyor:stop:17",
)


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def sent(call: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(call.request.content)
    return body


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def graphql() -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False) as router:
        yield router.post(API_URL)


@pytest.fixture
async def linear(sleeps: Sleeps, clock: Clock) -> AsyncIterator[LinearTracker]:
    settings = LinearSettings(api_key=API_KEY, api_url=API_URL, webhook_secret="s")
    async with httpx.AsyncClient() as http:
        yield LinearTracker(settings, http, {"ENG": "app"}, sleep=sleeps, clock=clock)


# -- comments ------------------------------------------------------------------------------


async def test_a_comment_is_the_comment_create_mutation(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    graphql.respond(200, json=sample("api_comment_create"))
    await linear.comment(REF, NOTICE)
    assert graphql.call_count == 1
    request = graphql.calls.last.request
    assert request.headers["Authorization"] == API_KEY  # a personal key: no Bearer
    assert request.headers["Content-Type"] == "application/json"
    body = sent(graphql.calls.last)
    assert body["operationName"] == "ConveyorComment"
    assert "mutation ConveyorComment($input: CommentCreateInput!)" in body["query"]
    assert "commentCreate(input: $input)" in body["query"]
    # The marker is a last line of inline code: Linear rewrites `body` from its own
    # document, where an HTML comment is not sure to survive.
    assert body["variables"] == {
        "input": {
            "issueId": ENG_123,
            "body": "conveyor stopped the work on ENG-123.\n\n- 1 agent process stopped\n"
            "- worktree removed\n\nMove the ticket to To Analyse to start again.\n\n"
            "`conveyor:stop:17`",
        }
    }


async def test_a_comment_that_does_not_succeed_is_an_error(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    graphql.respond(200, json={"data": {"commentCreate": {"success": False, "comment": None}}})
    with pytest.raises(TrackerError, match="commentCreate on ENG-123 did not succeed"):
        await linear.comment(REF, NOTICE)


async def test_a_comment_on_a_deleted_issue_is_an_error(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    graphql.respond(400, json=sample("api_not_found"))
    with pytest.raises(TrackerError, match="Entity not found"):
        await linear.comment(REF, NOTICE)


# -- reads -----------------------------------------------------------------------------------


async def test_read_is_the_issue_query_and_answers_a_ticket(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    graphql.respond(200, json=sample("api_issue"))
    ticket = await linear.read(REF)
    assert isinstance(ticket, Ticket)
    assert ticket.ref == REF
    assert (ticket.state, ticket.signal) == ("STOP", Signal.STOP)
    assert ticket.title == "Fix login redirect loop"
    assert ticket.labels == ("Bug", "backend")
    assert ticket.url == "https://linear.app/acme/issue/ENG-123/fix-login-redirect-loop"
    assert ticket.updated_at == datetime(2026, 11, 30, 10, 41, 37, 650000, tzinfo=UTC)
    body = sent(graphql.calls.last)
    assert "issue(id: $id)" in body["query"] and "fragment ConveyorTicket on Issue" in body["query"]
    assert body["variables"] == {"id": ENG_123}


@pytest.mark.parametrize("status", [200, 400])
async def test_an_issue_linear_cannot_find_is_gone(
    graphql: respx.Route, linear: LinearTracker, status: int
) -> None:
    graphql.respond(status, json=sample("api_not_found"))
    assert await linear.read(REF) == Gone(404)


async def test_a_null_issue_is_gone(graphql: respx.Route, linear: LinearTracker) -> None:
    graphql.respond(200, json={"data": {"issue": None}})
    assert await linear.read(REF) == Gone(404)


async def test_an_answer_of_the_wrong_shape_is_an_error_not_gone(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    issue = sample("api_issue")
    issue["data"]["issue"]["identifier"] = "not a key"
    graphql.respond(200, json=issue)
    with pytest.raises(TrackerError, match="cannot read"):
        await linear.read(REF)
    graphql.respond(200, text="<html>gateway</html>")
    with pytest.raises(TrackerError, match="not JSON"):
        await linear.read(REF)


# -- changed issues, paged -------------------------------------------------------------------


async def test_changed_since_follows_the_cursor_and_lists_oldest_first(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    graphql.side_effect = [
        httpx.Response(200, json=sample("api_issues_page1")),
        httpx.Response(200, json=sample("api_issues_page2")),
    ]
    since = datetime(2026, 11, 30, 15, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    tickets = await linear.changed_since("ENG", since)
    assert [t.ref.key for t in tickets] == ["ENG-124", "ENG-123", "ENG-125"]
    assert [t.signal for t in tickets] == [Signal.START, Signal.STOP, None]
    assert {t.ref.project for t in tickets} == {"ENG"}
    first, second = (sent(call) for call in graphql.calls)
    assert first["variables"] == {
        "team": "ENG",
        "since": "2026-11-30T10:00:00.000Z",
        "first": 100,
        "after": None,
    }
    assert second["variables"]["after"] == "ZDRmNmE4YzAtMmUzYi00ZDVmLThhN2MtOWUxZjNiNWQ3Zjlh"
    query = first["query"]
    assert "filter: {team: {key: {eq: $team}}, updatedAt: {gte: $since}}" in query
    assert "orderBy: updatedAt" in query and "first: $first" in query and "after: $after" in query
    assert "pageInfo { hasNextPage endCursor }" in query


async def test_a_cursor_that_does_not_advance_is_an_error(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    page = sample("api_issues_page1")
    graphql.respond(200, json=page)
    with pytest.raises(TrackerError, match="cursor did not advance"):
        await linear.changed_since("ENG", datetime(2026, 11, 30, tzinfo=UTC))
    assert graphql.call_count == 2


async def test_a_next_page_without_a_cursor_is_an_error(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    page = sample("api_issues_page1")
    page["data"]["issues"]["pageInfo"]["endCursor"] = None
    graphql.respond(200, json=page)
    with pytest.raises(TrackerError, match="hasNextPage without an endCursor"):
        await linear.changed_since("ENG", datetime(2026, 11, 30, tzinfo=UTC))


# -- rate limits and failures -------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 200])
async def test_ratelimited_carries_the_reset_header_as_retry_after(
    graphql: respx.Route, linear: LinearTracker, sleeps: Sleeps, clock: Clock, status: int
) -> None:
    reset_ms = int((clock.now + 42) * 1000)
    graphql.respond(
        status,
        json=sample("api_ratelimited"),
        headers={
            "X-RateLimit-Requests-Limit": "1500",
            "X-RateLimit-Requests-Remaining": "0",
            "X-RateLimit-Requests-Reset": str(reset_ms),
        },
    )
    with pytest.raises(TrackerError) as failed:
        await linear.read(REF)
    assert failed.value.retry_after == pytest.approx(42.0)
    assert failed.value.status == status
    assert "rate-limited" in str(failed.value) and "Rate limit exceeded" in str(failed.value)
    assert graphql.call_count == 1 and sleeps.calls == []  # the caller decides when to retry


async def test_ratelimited_without_a_reset_header_backs_off(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    graphql.respond(400, json=sample("api_ratelimited"))
    with pytest.raises(TrackerError) as failed:
        await linear.comment(REF, NOTICE)
    assert failed.value.retry_after == 60.0


async def test_ratelimited_uses_the_complexity_reset_when_that_is_what_ran_out(
    graphql: respx.Route, linear: LinearTracker, clock: Clock
) -> None:
    headers = {"X-RateLimit-Complexity-Reset": str(int((clock.now + 7) * 1000))}
    graphql.respond(400, json=sample("api_ratelimited"), headers=headers)
    with pytest.raises(TrackerError) as failed:
        await linear.changed_since("ENG", datetime(2026, 11, 30, tzinfo=UTC))
    assert failed.value.retry_after == pytest.approx(7.0)


async def test_5xx_is_retried_then_an_error_with_the_status(
    graphql: respx.Route, linear: LinearTracker, sleeps: Sleeps
) -> None:
    graphql.side_effect = [
        httpx.Response(502),
        httpx.Response(503),
        httpx.Response(500),
        httpx.Response(500),
    ]
    with pytest.raises(TrackerError) as failed:
        await linear.read(REF)
    assert failed.value.status == 500
    assert graphql.call_count == 4
    assert sleeps.calls == [0.5, 1.0, 2.0]


async def test_a_5xx_then_an_answer_succeeds(
    graphql: respx.Route, linear: LinearTracker, sleeps: Sleeps
) -> None:
    graphql.side_effect = [httpx.Response(503), httpx.Response(200, json=sample("api_issue"))]
    assert isinstance(await linear.read(REF), Ticket)
    assert sleeps.calls == [0.5]


async def test_a_network_failure_is_retried_then_an_error(
    graphql: respx.Route, linear: LinearTracker, sleeps: Sleeps
) -> None:
    graphql.side_effect = httpx.ConnectError("connection refused")
    with pytest.raises(TrackerError, match="ConnectError") as failed:
        await linear.read(REF)
    assert failed.value.status is None and len(sleeps.calls) == 3


async def test_a_bad_key_says_which_setting_and_never_shows_the_key(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    graphql.respond(400, json=sample("api_authentication_error"))
    with pytest.raises(TrackerError) as failed:
        await linear.read(REF)
    assert "Authentication required" in str(failed.value)
    assert "[trackers.linear] api_key" in str(failed.value)
    assert API_KEY not in str(failed.value)


async def test_an_error_echoing_the_key_is_scrubbed(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    echo = {
        "errors": [
            {"message": f"Invalid header value: {API_KEY}", "extensions": {"code": "INVALID_INPUT"}}
        ]
    }
    graphql.respond(400, json=echo)
    with pytest.raises(TrackerError) as failed:
        await linear.comment(REF, NOTICE)
    assert API_KEY not in str(failed.value) and "[credential]" in str(failed.value)
    graphql.side_effect = [httpx.Response(500, json={"error": f"bad key {API_KEY}"})] * 4
    with pytest.raises(TrackerError) as failed:
        await linear.comment(REF, NOTICE)
    assert API_KEY not in str(failed.value) and failed.value.status == 500


async def test_an_unreadable_error_status_is_an_error(
    graphql: respx.Route, linear: LinearTracker
) -> None:
    graphql.respond(403, json={"message": "forbidden"})
    with pytest.raises(TrackerError, match="HTTP 403") as failed:
        await linear.read(REF)
    assert failed.value.status == 403


# -- the registry's build talks to Linear itself -----------------------------------------------


async def test_the_built_tracker_posts_to_linears_own_endpoint() -> None:
    with respx.mock() as router:
        route = router.post("https://api.linear.app/graphql").respond(
            200, json=sample("api_comment_create")
        )
        async with httpx.AsyncClient() as http:
            tracker = ADAPTER.build(LinearSettings(api_key=API_KEY), http, {"ENG": "app"})
            assert "lin_api" not in repr(tracker)
            await tracker.comment(REF, NOTICE)
    assert route.calls.last.request.headers["Authorization"] == API_KEY
