"""PlaneClient against Plane's HTTP shapes (respx), with a real httpx.AsyncClient."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.trackers.base import TrackerError
from integrations.trackers.plane.api import (
    PlaneClient,
    PlaneState,
    ProjectIdentifiers,
    StateNames,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "plane"
BASE_URL = "https://plane.example.test"
API_KEY = "plane_api_3b9f0c2e7a4d4b6e8f1a2c3d4e5f6a7b"
WORKSPACE = "acme"
PROJECT = "5c7db7b1-1256-4e76-bfdc-fb3b34bf0180"
ISSUE = "20617384-0d13-472c-a860-e7f89295b2f5"
STOP = "e14a6af2-d4b4-42dc-8e20-d57645086590"
DONE = "e952b5c7-ef4c-42f6-bbd9-3b23d676ca6f"
PROJECT_PATH = f"/api/v1/workspaces/{WORKSPACE}/projects/{PROJECT}"
STATES_PATH = f"{PROJECT_PATH}/states/"
ITEM_PATH = f"{PROJECT_PATH}/work-items/{ISSUE}/"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


class Sleeps:
    """The sleep port: records how long the client asked to wait, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def plane() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def client(sleeps: Sleeps, clock: Clock) -> AsyncIterator[PlaneClient]:
    async with httpx.AsyncClient() as http:
        yield PlaneClient(
            http,
            base_url=BASE_URL + "/",
            api_key=API_KEY,
            workspace=WORKSPACE,
            sleep=sleeps,
            clock=clock,
        )


# --- reads --------------------------------------------------------------------------


async def test_list_states_follows_the_cursor(plane: respx.MockRouter, client: PlaneClient) -> None:
    route = plane.get(STATES_PATH).mock(
        side_effect=[
            httpx.Response(200, json=sample("states_page1")),
            httpx.Response(200, json=sample("states_page2")),
        ]
    )
    states = await client.list_states(PROJECT)
    assert [state.name for state in states] == [
        "Backlog",
        "Todo",
        "To Analyse",
        "In Progress",
        "Confirm Deploy",
        "Done",
        "Cancelled",
        "STOP",
    ]
    assert PlaneState(id=STOP, name="STOP", group="cancelled") in states
    assert route.call_count == 2
    assert "cursor" not in route.calls[0].request.url.params
    assert route.calls[1].request.url.params["cursor"] == "5:1:0"


async def test_a_malformed_states_page_is_a_tracker_error(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    plane.get(STATES_PATH).respond(200, json={"results": [{"id": STOP}]})
    with pytest.raises(TrackerError, match="lacks id, name or group"):
        await client.list_states(PROJECT)


async def test_project_identifier(plane: respx.MockRouter, client: PlaneClient) -> None:
    plane.get(f"{PROJECT_PATH}/").respond(200, json=sample("project"))
    assert await client.project_identifier(PROJECT) == "PROJ"


async def test_get_issue_expands_the_state(plane: respx.MockRouter, client: PlaneClient) -> None:
    route = plane.get(ITEM_PATH).respond(200, json=sample("work_item"))
    issue = await client.get_issue(PROJECT, ISSUE)
    assert issue["state"]["name"] == "In Progress"
    assert route.calls.last.request.url.params["expand"] == "state"


# --- writes -------------------------------------------------------------------------


async def test_comment_posts_internal_html_with_the_api_key(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    route = plane.post(f"{ITEM_PATH}comments/").respond(201, json=sample("comment_created"))
    await client.comment(PROJECT, ISSUE, "<p>conveyor stopped this task.</p>")
    request = route.calls.last.request
    assert request.headers["X-API-Key"] == API_KEY
    assert json.loads(request.content) == {
        "comment_html": "<p>conveyor stopped this task.</p>",
        "access": "INTERNAL",
    }


def _comments_page(htmls: list[str], cursor: str, more: bool) -> dict[str, Any]:
    comment = sample("comment_created")
    results = [{**comment, "comment_html": html} for html in htmls]
    return {"results": results, "next_cursor": cursor, "next_page_results": more}


async def test_comments_html_follows_the_cursor(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    marked = "<p>conveyor stopped PROJ-42.</p><!-- conveyor:stop:s1 -->"
    route = plane.get(f"{ITEM_PATH}comments/").mock(
        side_effect=[
            httpx.Response(200, json=_comments_page(["<p>a person</p>"], "100:1:0", True)),
            httpx.Response(200, json=_comments_page([marked], "100:2:0", False)),
        ]
    )
    assert await client.comments_html(PROJECT, ISSUE) == ["<p>a person</p>", marked]
    assert route.call_count == 2
    assert route.calls[1].request.url.params["cursor"] == "100:1:0"


async def test_a_comments_answer_without_results_is_a_tracker_error(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    plane.get(f"{ITEM_PATH}comments/").respond(200, json={"detail": "no"})
    with pytest.raises(TrackerError, match="no comments"):
        await client.comments_html(PROJECT, ISSUE)


async def test_set_state_patches_the_work_item(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    route = plane.patch(ITEM_PATH).respond(200, json=sample("work_item"))
    await client.set_state(PROJECT, ISSUE, DONE)
    assert json.loads(route.calls.last.request.content) == {"state": DONE}
    assert route.calls.last.request.headers["X-API-Key"] == API_KEY


async def test_an_issue_without_project_is_refused_before_any_request(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    with pytest.raises(TrackerError, match="no Plane project id"):
        await client.comment("", ISSUE, "<p/>")
    assert not plane.calls


async def test_ids_cannot_add_path_segments(plane: respx.MockRouter, client: PlaneClient) -> None:
    route = plane.patch(url__regex=r".*").respond(200, json={})
    await client.set_state(PROJECT, "../../members", DONE)
    assert route.calls.last.request.url.raw_path.endswith(b"/work-items/..%2F..%2Fmembers/")


# --- retries ------------------------------------------------------------------------


async def test_a_429_waits_retry_after_then_succeeds(
    plane: respx.MockRouter, client: PlaneClient, sleeps: Sleeps
) -> None:
    route = plane.patch(ITEM_PATH).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "throttled"}),
            httpx.Response(200, json=sample("work_item")),
        ]
    )
    await client.set_state(PROJECT, ISSUE, STOP)
    assert sleeps.calls == [7.0]
    assert route.call_count == 2


async def test_a_429_without_retry_after_waits_until_the_rate_limit_reset(
    plane: respx.MockRouter, client: PlaneClient, sleeps: Sleeps, clock: Clock
) -> None:
    reset = str(int(clock.now) + 12)
    plane.patch(ITEM_PATH).mock(
        side_effect=[
            httpx.Response(429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}),
            httpx.Response(200, json={}),
        ]
    )
    await client.set_state(PROJECT, ISSUE, STOP)
    assert sleeps.calls == [12.0]


async def test_a_429_asking_for_more_than_a_minute_is_handed_back_not_slept(
    plane: respx.MockRouter, client: PlaneClient, sleeps: Sleeps
) -> None:
    plane.patch(ITEM_PATH).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(200, json={}),
        ]
    )
    with pytest.raises(TrackerError) as caught:
        await client.set_state(PROJECT, ISSUE, STOP)
    assert (caught.value.status, caught.value.retry_after) == (429, 3600.0)
    assert sleeps.calls == []


async def test_a_503_twice_then_success_backs_off(
    plane: respx.MockRouter, client: PlaneClient, sleeps: Sleeps
) -> None:
    route = plane.post(f"{ITEM_PATH}comments/").mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(503),
            httpx.Response(201, json=sample("comment_created")),
        ]
    )
    await client.comment(PROJECT, ISSUE, "<p>hi</p>")
    assert sleeps.calls == [0.5, 1.0]
    assert route.call_count == 3


async def test_transport_errors_are_retried(
    plane: respx.MockRouter, client: PlaneClient, sleeps: Sleeps
) -> None:
    plane.get(f"{PROJECT_PATH}/").mock(
        side_effect=[
            httpx.ConnectError("connection refused"),
            httpx.Response(200, json=sample("project")),
        ]
    )
    assert await client.project_identifier(PROJECT) == "PROJ"
    assert sleeps.calls == [0.5]


async def test_a_500_forever_gives_up_after_max_attempts(
    plane: respx.MockRouter, client: PlaneClient, sleeps: Sleeps
) -> None:
    route = plane.patch(ITEM_PATH).respond(500, json={"error": "Something went wrong"})
    with pytest.raises(TrackerError, match="after 4 attempts: HTTP 500") as caught:
        await client.set_state(PROJECT, ISSUE, STOP)
    assert route.call_count == 4
    assert sleeps.calls == [0.5, 1.0, 2.0]
    assert ITEM_PATH in str(caught.value)


async def test_a_404_fails_at_once_with_status_and_reason(
    plane: respx.MockRouter, client: PlaneClient, sleeps: Sleeps
) -> None:
    route = plane.patch(ITEM_PATH).respond(404, json={"error": "Work item not found"})
    with pytest.raises(TrackerError, match="404 Not Found: Work item not found"):
        await client.set_state(PROJECT, ISSUE, STOP)
    assert route.call_count == 1
    assert sleeps.calls == []


async def test_the_api_key_never_appears_in_an_error(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    # A server that echoes the request's headers back in its error body.
    plane.patch(ITEM_PATH).respond(401, json={"detail": f"Invalid X-API-Key {API_KEY}"})
    plane.get(f"{PROJECT_PATH}/").mock(side_effect=httpx.ConnectError(f"refused; key={API_KEY}"))
    errors = []
    for call in (client.set_state(PROJECT, ISSUE, STOP), client.project_identifier(PROJECT)):
        with pytest.raises(TrackerError) as caught:
            await call
        errors.append(caught.value)
    for error in errors:
        assert API_KEY not in str(error)
        assert API_KEY not in repr(error)
    assert "401" in str(errors[0])
    assert API_KEY not in repr(client)


# --- caches -------------------------------------------------------------------------


@pytest.fixture
def states_route(plane: respx.MockRouter) -> respx.Route:
    return plane.get(STATES_PATH).mock(
        side_effect=lambda request: httpx.Response(
            200,
            json=sample("states_page2" if "cursor" in request.url.params else "states_page1"),
        )
    )


async def test_state_names_are_cached(states_route: respx.Route, client: PlaneClient) -> None:
    names = StateNames(client, clock=Clock())
    stop = await names.resolve(PROJECT, STOP)
    assert stop == PlaneState(id=STOP, name="STOP", group="cancelled")
    assert await names.resolve(PROJECT, DONE) == PlaneState(id=DONE, name="Done", group="completed")
    assert states_route.call_count == 2  # one refresh, two pages


async def test_unknown_state_ids_refresh_at_most_once_per_window(
    states_route: respx.Route, client: PlaneClient
) -> None:
    clock = Clock(100.0)
    names = StateNames(client, min_refresh_seconds=30.0, clock=clock)
    assert await names.resolve(PROJECT, STOP) is not None
    calls = states_route.call_count

    clock.now += 31
    assert await names.resolve(PROJECT, "00000000-0000-4000-8000-000000000001") is None
    assert states_route.call_count == calls + 2  # one refresh for the unknown id

    clock.now += 5
    assert await names.resolve(PROJECT, "00000000-0000-4000-8000-000000000002") is None
    assert states_route.call_count == calls + 2  # within the window: no request

    clock.now += 30
    assert await names.resolve(PROJECT, "00000000-0000-4000-8000-000000000002") is None
    assert states_route.call_count == calls + 4


async def test_a_failing_states_api_resolves_to_none(
    plane: respx.MockRouter, client: PlaneClient, caplog: pytest.LogCaptureFixture
) -> None:
    route = plane.get(STATES_PATH).respond(403, json={"error": "forbidden"})
    names = StateNames(client, clock=Clock())
    assert await names.resolve(PROJECT, STOP) is None
    assert await names.resolve(PROJECT, STOP) is None
    assert route.call_count == 1
    assert "plane states refresh failed" in caplog.messages
    assert all(API_KEY not in record.getMessage() for record in caplog.records)


async def test_project_identifiers_are_looked_up_once(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    route = plane.get(f"{PROJECT_PATH}/").respond(200, json=sample("project"))
    identifiers = ProjectIdentifiers(client, clock=Clock())
    assert await identifiers.resolve(PROJECT) == "PROJ"
    assert await identifiers.resolve(PROJECT) == "PROJ"
    assert route.call_count == 1


async def test_a_failed_identifier_lookup_is_retried_after_the_window(
    plane: respx.MockRouter, client: PlaneClient
) -> None:
    route = plane.get(f"{PROJECT_PATH}/").mock(
        side_effect=[
            httpx.Response(404, json={"error": "Project not found"}),
            httpx.Response(200, json=sample("project")),
        ]
    )
    clock = Clock(0.0)
    identifiers = ProjectIdentifiers(client, min_refresh_seconds=30.0, clock=clock)
    assert await identifiers.resolve(PROJECT) is None
    assert await identifiers.resolve(PROJECT) is None
    assert route.call_count == 1
    clock.now += 30
    assert await identifiers.resolve(PROJECT) == "PROJ"
    assert route.call_count == 2
