"""Plane reads `data` when it sends, so a STOP quickly followed by another move can
arrive with `data.state` already showing the newer state. The STOP is recognised from
`activity.new_value`: by the state ids learnt from earlier deliveries (no API key), or
through Plane's states API."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import respx

from tests.acceptance.intake import (
    ISSUE,
    PLANE_URL,
    PROJECT_PATH,
    STATES_PATH,
    deliver,
    make_settings,
    running,
    sample,
    sample_json,
)

OTHER_ISSUE = "0a6b3c1d-7e2f-4a5b-9c8d-1e2f3a4b5c6d"


def raced_stop() -> dict[str, Any]:
    """The STOP delivery whose `data.state` is already the next state, To Analyse."""
    stop = sample("v1_state_stop")
    newer = sample("v1_state_to_analyse")["data"]["state"]
    stop["data"]["state"] = copy.deepcopy(newer)
    stop["data"]["updated_at"] = "2026-11-21T10:05:00.000000Z"
    return stop


def other_ticket_stopped() -> dict[str, Any]:
    """Another ticket moved to STOP: its `data.state` names the STOP state's id."""
    other = sample("v1_state_stop")
    other["data"]["id"] = OTHER_ISSUE
    other["data"]["sequence_id"] = 99
    return other


async def test_the_raced_stop_is_honoured_without_an_api_key(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as (client, _):
        assert (await deliver(client, sample("v1_state_to_analyse"))).json()["outcome"] == "started"
        learnt = await deliver(client, other_ticket_stopped())
        assert learnt.json()["reason"] == "unknown_ticket"
        answer = await deliver(client, raced_stop())
        assert answer.json()["outcome"] == "stop_requested", answer.json()


async def test_without_a_learnt_id_or_an_api_the_raced_stop_is_not_guessed(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path)) as (client, _):
        await deliver(client, sample("v1_state_to_analyse"))
        answer = await deliver(client, raced_stop())
        assert answer.json() == {"outcome": "ignored", "task": "PROJ-42", "reason": "unknown_state"}


async def test_the_raced_stop_is_honoured_through_the_states_api(tmp_path: Path) -> None:
    plane = {"base_url": PLANE_URL, "api_key": "plane_api_key_0123456789", "workspace": "acme"}
    settings = make_settings(tmp_path, trackers={"plane": plane})
    with respx.mock(base_url=PLANE_URL, assert_all_called=False) as router:

        def states(request: httpx.Request) -> httpx.Response:
            page = "states_page2" if request.url.params.get("cursor") else "states_page1"
            return httpx.Response(200, json=sample_json(page))

        router.get(STATES_PATH).mock(side_effect=states)
        router.get(PROJECT_PATH).respond(200, json=sample_json("project"))
        router.post(url__regex=r".*/comments/$").respond(201, json=sample_json("comment_created"))
        async with running(settings) as (client, svc):
            await deliver(client, sample("v1_state_to_analyse"))
            answer = await deliver(client, raced_stop())
            assert answer.json()["outcome"] == "stop_requested"
            task = svc.store.query(_task, ISSUE)
            assert task is not None
            assert router.routes[0].call_count >= 1  # the states API named the STOP


def _task(conn: Any, issue: str) -> Any:
    from state.store import live_task_for_issue

    return live_task_for_issue(conn, "plane", issue)
