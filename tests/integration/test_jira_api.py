"""Jira Cloud's REST v3 side against Jira's request and answer shapes (respx), with a real
httpx.AsyncClient: the ADF comment, Basic auth, reads, JQL search paging, 429 and 5xx."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.trackers.base import Gone, Notice, Signal, Ticket, TicketRef, TrackerError
from integrations.trackers.jira import ADAPTER, JiraSettings, JiraTracker
from integrations.trackers.jira.api import JiraApi
from integrations.trackers.vocabulary import Vocabulary
from tests.integration.http_ports import Clock, Sleeps

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "jira"
SITE = "https://acme.atlassian.net"
EMAIL = "conveyor-bot@acme.example"
TOKEN = "ATATT3xFfGF0Zq8Lr2Vm5Tn7Wc1Yd4Hs9Jf6Kg3Pb0"
BASIC = "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
REF = TicketRef("jira", "PROJ", "10042", "PROJ-42")
NOTICE = Notice(
    headline="conveyor stopped the work on PROJ-42.",
    items=("1 agent process stopped", "worktree removed"),
    closing="Move the ticket to To Analyse to start again.",
    marker="conveyor:stop:17",
)
SEARCH = "/rest/api/3/search/jql"
FIELDS = ["status", "summary", "description", "labels", "updated", "project"]


CODE_MARKER = {"type": "text", "text": "conveyor:stop:17", "marks": [{"type": "code"}]}


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def sent(call: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(call.request.content)
    return body


def paragraph(text: str) -> dict[str, Any]:
    return {"type": "paragraph", "content": [{"type": "text", "text": text}]}


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def site() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=SITE, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def jira(sleeps: Sleeps, clock: Clock) -> AsyncIterator[JiraTracker]:
    settings = JiraSettings(base_url=SITE + "/", email=EMAIL, api_token=TOKEN, webhook_secret="s")
    async with httpx.AsyncClient() as http:
        yield JiraTracker(settings, http, {"PROJ": "app"}, sleep=sleeps, clock=clock)


# -- comments ------------------------------------------------------------------------------


async def test_a_comment_is_an_adf_document_posted_with_basic_auth(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    route = site.post("/rest/api/3/issue/10042/comment").respond(
        201, json=sample("api_comment_created")
    )
    await jira.comment(REF, NOTICE)
    request = route.calls.last.request
    assert request.headers["Authorization"] == BASIC
    assert request.headers["Accept"] == "application/json"
    assert sent(route.calls.last) == {
        "body": {
            "type": "doc",
            "version": 1,
            "content": [
                paragraph("conveyor stopped the work on PROJ-42."),
                {
                    "type": "bulletList",
                    "content": [
                        {"type": "listItem", "content": [paragraph("1 agent process stopped")]},
                        {"type": "listItem", "content": [paragraph("worktree removed")]},
                    ],
                },
                paragraph("Move the ticket to To Analyse to start again."),
                # The marker as inline code: ADF keeps no HTML comment.
                {"type": "paragraph", "content": [CODE_MARKER]},
            ],
        },
        "properties": [{"key": "conveyor", "value": {"marker": "conveyor:stop:17"}}],
    }


async def test_a_ref_without_a_numeric_id_comments_by_key(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    route = site.post("/rest/api/3/issue/PROJ-42/comment").respond(201, json={})
    await jira.comment(TicketRef("jira", "PROJ", "PROJ-42", "PROJ-42"), Notice(headline="hi"))
    assert "properties" not in sent(route.calls.last)


async def test_a_refused_comment_says_what_to_check_and_never_shows_the_token(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    site.post("/rest/api/3/issue/10042/comment").respond(
        401, json={"errorMessages": ["You are not authenticated."], "errors": {}}
    )
    with pytest.raises(TrackerError) as failed:
        await jira.comment(REF, NOTICE)
    message = str(failed.value)
    assert failed.value.status == 401
    assert "You are not authenticated." in message and "email and api_token" in message
    assert TOKEN not in message and BASIC.split()[1] not in message


async def test_an_error_echoing_the_credentials_is_scrubbed(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    echo = {"errorMessages": [f"bad header {BASIC} for token {TOKEN}"]}
    site.post("/rest/api/3/issue/10042/comment").respond(400, json=echo)
    with pytest.raises(TrackerError) as failed:
        await jira.comment(REF, NOTICE)
    assert TOKEN not in str(failed.value) and BASIC.split()[1] not in str(failed.value)
    assert "[credential]" in str(failed.value)


# -- reads -----------------------------------------------------------------------------------


async def test_read_asks_for_the_fields_it_needs_and_answers_a_ticket(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    route = site.get("/rest/api/3/issue/10042").respond(200, json=sample("api_issue"))
    ticket = await jira.read(REF)
    assert isinstance(ticket, Ticket)
    assert ticket.ref == REF
    assert (ticket.state, ticket.signal) == ("STOP", Signal.STOP)
    assert ticket.title == "Fix login redirect loop"
    assert ticket.url == "https://acme.atlassian.net/browse/PROJ-42"
    assert ticket.labels == ("bug", "sso")
    assert ticket.description.startswith(
        "Users who sign in with SSO land back on `/login` after the callback."
    )
    assert "1. Open [the login page](https://app.acme.example/login)" in ticket.description
    assert ticket.updated_at == datetime(2026, 11, 30, 10, 41, 37, 650000, tzinfo=UTC)
    request = route.calls.last.request
    assert request.url.params["fields"] == "status,summary,description,labels,updated,project"
    assert request.headers["Authorization"] == BASIC


@pytest.mark.parametrize("status", [404, 410])
async def test_an_issue_jira_cannot_find_is_gone(
    site: respx.MockRouter, jira: JiraTracker, status: int
) -> None:
    site.get("/rest/api/3/issue/10042").respond(status, json=sample("api_not_found"))
    assert await jira.read(REF) == Gone(status)


async def test_an_error_is_never_gone(
    site: respx.MockRouter, jira: JiraTracker, sleeps: Sleeps
) -> None:
    site.get("/rest/api/3/issue/10042").respond(403, json={"errorMessages": ["Forbidden"]})
    with pytest.raises(TrackerError, match="browse and comment") as failed:
        await jira.read(REF)
    assert failed.value.status == 403
    issue = sample("api_issue")
    issue["key"] = "not a key"
    site.get("/rest/api/3/issue/10042").respond(200, json=issue)
    with pytest.raises(TrackerError, match="cannot read"):
        await jira.read(REF)


# -- changed issues: JQL search, paged ----------------------------------------------------------


async def test_changed_since_pages_on_next_page_token_in_the_users_time_zone(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    myself = site.get("/rest/api/3/myself").respond(200, json=sample("myself"))
    search = site.post(SEARCH)
    search.side_effect = [
        httpx.Response(200, json=sample("search_jql_page1")),
        httpx.Response(200, json=sample("search_jql_page2")),
    ]
    since = datetime(2026, 11, 30, 10, 0, 30, tzinfo=UTC)
    tickets = await jira.changed_since("PROJ", since)
    # PROJ-43 was updated at 10:02, PROJ-42 at 10:41, PROJ-44 at 10:50.
    assert [t.ref.key for t in tickets] == ["PROJ-43", "PROJ-42", "PROJ-44"]
    assert [t.signal for t in tickets] == [Signal.START, Signal.STOP, None]
    first, second = (sent(call) for call in search.calls)
    # The API user lives in America/New_York (UTC-5 in November): JQL reads its dates
    # there, at minute resolution, so 10:00:30Z is asked for as 05:00.
    assert first == {
        "jql": 'project = "PROJ" AND updated >= "2026-11-30 05:00" ORDER BY updated ASC',
        "fields": FIELDS,
        "maxResults": 100,
    }
    assert second == {**first, "nextPageToken": "CAEaAggD"}
    assert search.calls.last.request.headers["Authorization"] == BASIC
    assert myself.call_count == 1


async def test_the_users_time_zone_is_asked_once(site: respx.MockRouter, jira: JiraTracker) -> None:
    myself = site.get("/rest/api/3/myself").respond(200, json=sample("myself"))
    site.post(SEARCH).respond(200, json=sample("search_jql_page2"))
    for _ in range(3):
        await jira.changed_since("PROJ", datetime(2026, 11, 30, 10, tzinfo=UTC))
    assert myself.call_count == 1


async def test_issues_older_than_since_within_the_minute_are_dropped(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    site.get("/rest/api/3/myself").respond(200, json={"timeZone": "UTC"})
    search = site.post(SEARCH).respond(200, json=sample("search_jql_page2"))
    since = datetime(2026, 11, 30, 10, 50, 3, 500000, tzinfo=UTC)  # PROJ-44: 10:50:03.002
    assert await jira.changed_since("PROJ", since) == []
    assert 'updated >= "2026-11-30 10:50"' in sent(search.calls.last)["jql"]


async def test_an_unknown_time_zone_lists_from_the_earliest_reading(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    site.get("/rest/api/3/myself").respond(200, json={"accountId": "x", "timeZone": "Mars/Olympus"})
    search = site.post(SEARCH).respond(200, json=sample("search_jql_page2"))
    await jira.changed_since("PROJ", datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    assert 'updated >= "2026-11-29 22:00"' in sent(search.calls.last)["jql"]


async def test_a_project_key_that_could_break_the_jql_is_refused(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    search = site.post(SEARCH).respond(200, json=sample("search_jql_page2"))
    for project in ('PROJ" OR project = "SECRET', "proj", ""):
        with pytest.raises(TrackerError, match="not a Jira project key"):
            await jira.changed_since(project, datetime(2026, 11, 30, tzinfo=UTC))
    assert search.call_count == 0


async def test_a_token_that_does_not_advance_is_an_error(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    site.get("/rest/api/3/myself").respond(200, json=sample("myself"))
    site.post(SEARCH).respond(200, json=sample("search_jql_page1"))
    with pytest.raises(TrackerError, match="nextPageToken did not advance"):
        await jira.changed_since("PROJ", datetime(2026, 11, 30, tzinfo=UTC))


async def test_a_search_answer_without_issues_is_an_error(
    site: respx.MockRouter, jira: JiraTracker
) -> None:
    site.get("/rest/api/3/myself").respond(200, json=sample("myself"))
    site.post(SEARCH).respond(200, json={"warningMessages": ["?"]})
    with pytest.raises(TrackerError, match="without an issues list"):
        await jira.changed_since("PROJ", datetime(2026, 11, 30, tzinfo=UTC))


# -- rate limits and failures -------------------------------------------------------------------


async def test_429_with_retry_after_is_waited_out_then_retried(
    site: respx.MockRouter, jira: JiraTracker, sleeps: Sleeps
) -> None:
    route = site.get("/rest/api/3/issue/10042")
    route.side_effect = [
        httpx.Response(
            429, headers={"Retry-After": "3"}, json={"errorMessages": ["Rate limit exceeded."]}
        ),
        httpx.Response(200, json=sample("api_issue")),
    ]
    assert isinstance(await jira.read(REF), Ticket)
    assert sleeps.calls == [3.0]


async def test_a_long_retry_after_reaches_the_caller(
    site: respx.MockRouter, jira: JiraTracker, sleeps: Sleeps
) -> None:
    site.post(SEARCH).respond(429, headers={"Retry-After": "120"})
    site.get("/rest/api/3/myself").respond(200, json=sample("myself"))
    with pytest.raises(TrackerError) as failed:
        await jira.changed_since("PROJ", datetime(2026, 11, 30, tzinfo=UTC))
    assert failed.value.status == 429
    assert failed.value.retry_after == 120.0
    assert all(seconds <= 60 for seconds in sleeps.calls)  # never one long sleep


async def test_5xx_is_retried_then_an_error_with_the_status(
    site: respx.MockRouter, jira: JiraTracker, sleeps: Sleeps
) -> None:
    route = site.post("/rest/api/3/issue/10042/comment")
    route.side_effect = [
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(503),
        httpx.Response(503),
    ]
    with pytest.raises(TrackerError) as failed:
        await jira.comment(REF, NOTICE)
    assert failed.value.status == 503 and failed.value.retry_after is None
    assert route.call_count == 4 and sleeps.calls == [0.5, 1.0, 2.0]
    assert TOKEN not in str(failed.value)


async def test_a_5xx_then_an_answer_succeeds(
    site: respx.MockRouter, jira: JiraTracker, sleeps: Sleeps
) -> None:
    route = site.post("/rest/api/3/issue/10042/comment")
    route.side_effect = [
        httpx.Response(503),
        httpx.Response(201, json=sample("api_comment_created")),
    ]
    await jira.comment(REF, NOTICE)
    assert route.call_count == 2 and sleeps.calls == [0.5]


async def test_a_timeout_is_retried_then_an_error(
    site: respx.MockRouter, jira: JiraTracker, sleeps: Sleeps
) -> None:
    site.get("/rest/api/3/issue/10042").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(TrackerError, match="ReadTimeout"):
        await jira.read(REF)
    assert len(sleeps.calls) == 3


# -- the registry's build, and the client's own repr ------------------------------------------


async def test_the_built_tracker_reads_from_the_configured_site() -> None:
    settings = JiraSettings(base_url=SITE, email=EMAIL, api_token=TOKEN)
    with respx.mock(base_url=SITE) as router:
        route = router.get("/rest/api/3/issue/10042").respond(200, json=sample("api_issue"))
        async with httpx.AsyncClient() as http:
            tracker = ADAPTER.build(settings, http, {"PROJ": "app"})
            assert isinstance(await tracker.read(REF), Ticket)
            api = JiraApi(
                http, base_url=SITE, email=EMAIL, api_token=TOKEN, vocabulary=Vocabulary()
            )
            assert TOKEN not in repr(tracker) + repr(api)
    assert route.calls.last.request.headers["Authorization"] == BASIC
