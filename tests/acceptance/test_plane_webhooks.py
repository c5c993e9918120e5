"""POST /webhooks/plane through the real app: signed deliveries in, tasks and jobs out.

The app runs without workers (start_background=False): these tests are about intake.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import text

from bot.app import create_app
from bot.services import Services
from state.jobs import jobs_for_task
from state.models import JobStatus, Stage
from state.stops import stops_for_task
from state.store import live_task_for_issue, update_task
from tests.acceptance.intake import (
    BOT,
    ISSUE,
    PLANE_URL,
    PROJECT_PATH,
    SECRET,
    STATES_PATH,
    TO_ANALYSE_STATE,
    deliver,
    encode,
    later,
    make_settings,
    running,
    sample,
    sample_json,
    snapshot,
)

MIB = 1024 * 1024


def task_and_jobs(svc: Services) -> tuple[Any, list[Any]]:
    task = svc.store.query(live_task_for_issue, "plane", ISSUE)
    return task, ([] if task is None else svc.store.query(jobs_for_task, task.id))


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    async with running(make_settings(tmp_path)) as pair:
        yield pair


# -- start ------------------------------------------------------------------------------


async def test_a_start_status_makes_a_task_with_a_queued_analysis_job(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    answer = await deliver(client, sample("v1_state_to_analyse"))
    assert answer.status_code == 202
    assert answer.json() == {"outcome": "started", "task": "PROJ-42"}
    task, jobs = task_and_jobs(svc)
    assert (task.key, task.repo, task.stage, task.title) == (
        "PROJ-42",
        "app",
        Stage.ANALYSIS,
        "Fix login redirect loop",
    )
    assert [(j.stage, j.status) for j in jobs] == [("analysis", JobStatus.QUEUED)]


async def test_a_work_item_created_straight_into_the_start_state_starts(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    """Plane sends `created` with the first state in `data.state` and no activity field."""
    client, svc = app
    payload = sample("v1_created")
    payload["data"]["state"] = {
        "id": TO_ANALYSE_STATE,
        "name": "To Analyse",
        "color": "#60646c",
        "group": "unstarted",
    }
    answer = await deliver(client, payload)
    assert answer.json() == {"outcome": "started", "task": "PROJ-43"}
    task = svc.store.query(live_task_for_issue, "plane", payload["data"]["id"])
    assert task is not None and task.stage is Stage.ANALYSIS
    jobs = svc.store.query(jobs_for_task, task.id)
    assert [(j.stage, j.status) for j in jobs] == [("analysis", JobStatus.QUEUED)]
    # The same creation delivered again (Plane's retry) is a duplicate, not a second task.
    assert (await deliver(client, payload)).json()["outcome"] == "duplicate"


async def test_a_start_through_plane_s_rest_api_is_a_start_too(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    answer = await deliver(client, sample("v1_state_via_api"))
    assert answer.json() == {"outcome": "started", "task": "PROJ-42"}
    assert task_and_jobs(svc)[0] is not None


# -- bad input: refused, and nothing in the store changes ------------------------------

NOT_JSON = b"event=issue&action=updated"


@pytest.mark.parametrize(
    ("body", "signature", "status", "says"),
    [
        (None, "", 401, "X-Plane-Signature"),
        (None, "0" * 64, 401, "X-Plane-Signature"),
        (None, "signed-with-another-secret", 401, "X-Plane-Signature"),
        (NOT_JSON, None, 400, "body is not JSON"),
        (b"[1, 2]", None, 400, "not a JSON object"),
        (
            encode({"event": "issue", "action": "updated", "data": {}}),
            None,
            400,
            "missing fields: data.id, data.project, activity.field",
        ),
        (
            encode({"event": "issue", "action": "updated", "data": "x"}),
            None,
            400,
            "data is not an object",
        ),
        (encode({"action": "updated"}), None, 400, "missing field: event"),
    ],
    ids=[
        "no-signature",
        "wrong-signature",
        "other-secret",
        "not-json",
        "not-an-object",
        "missing-fields",
        "data-not-an-object",
        "no-event",
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    app: tuple[httpx.AsyncClient, Services],
    body: bytes | None,
    signature: str | None,
    status: int,
    says: str,
) -> None:
    client, svc = app
    before = snapshot(svc)
    payload = body if body is not None else encode(sample("v1_state_to_analyse"))
    if signature == "signed-with-another-secret":
        from integrations.trackers.plane.webhook import sign

        signature = sign("plane_wh_someone_else", payload)
    # No X-Plane-Event header: the event name must come from the (signed) body.
    answer = await deliver(client, payload, signature=signature, event="")
    assert answer.status_code == status
    assert says in answer.json()["error"]
    assert snapshot(svc) == before


async def test_a_body_over_one_mib_is_413_and_changes_nothing(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    before = snapshot(svc)
    padded = sample("v1_state_to_analyse")
    padded["data"]["description_html"] = "x" * MIB
    answer = await deliver(client, padded)
    assert answer.status_code == 413
    assert "larger than 1048576 bytes" in answer.json()["error"]
    assert snapshot(svc) == before


async def test_a_chunked_body_is_cut_off_past_one_mib(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    before = snapshot(svc)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB on offer; no Content-Length
            sent += 1
            yield b" " * (64 * 1024)

    answer = await client.post(
        "/webhooks/plane", content=chunks(), headers={"X-Plane-Signature": "0" * 64}
    )
    assert answer.status_code == 413
    assert sent < 64  # the rest was never read
    assert snapshot(svc) == before


async def test_no_secret_configured_refuses_every_delivery(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, trackers={"plane": {"webhook_secret": ""}})
    async with running(settings) as (client, svc):
        before = snapshot(svc)
        answer = await deliver(client, sample("v1_state_to_analyse"), secret="")
        assert answer.status_code == 401
        assert answer.json() == {
            "error": "no Plane webhook secret is configured (trackers.plane.webhook_secret"
            " / CONVEYOR_PLANE_WEBHOOK_SECRET); refusing"
        }
        assert snapshot(svc) == before


async def test_an_overlong_issue_id_is_400_not_a_database_error(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    before = snapshot(svc)
    payload = sample("v1_state_to_analyse")
    payload["data"]["id"] = "x" * 500
    answer = await deliver(client, payload)
    assert answer.status_code == 400
    assert "data.id" in answer.json()["error"]
    assert snapshot(svc) == before


# -- duplicates and ignored events ------------------------------------------------------


async def test_the_same_content_twice_is_a_duplicate(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    payload = sample("v1_state_to_analyse")
    first = await deliver(client, payload, delivery="11111111-1111-4111-8111-111111111111")
    # Plane's retry of the same change carries a new X-Plane-Delivery.
    again = await deliver(client, payload, delivery="22222222-2222-4222-8222-222222222222")
    assert first.json()["outcome"] == "started"
    assert again.status_code == 202
    assert again.json() == {"outcome": "duplicate", "task": "PROJ-42"}
    task, jobs = task_and_jobs(svc)
    assert task is not None and len(jobs) == 1


def _own_change() -> dict[str, Any]:
    payload = sample("v1_state_to_analyse")
    payload["activity"]["actor"]["id"] = BOT
    return payload


def _other_project() -> dict[str, Any]:
    payload = sample("v1_state_to_analyse")
    payload["data"]["project"] = "0a4e2b8e-4a53-4d5b-9d8c-000000000000"
    return payload


@pytest.mark.parametrize(
    ("payload", "event", "reason", "task"),
    [
        (_own_change(), "issue", "own_change", "PROJ-42"),
        (_other_project(), "issue", "unmapped_project", "plane-42"),
        (sample("v1_deleted"), "issue", "deleted", "plane-a2d33009-5414-418f-b1d5-4e1c4ff09ea8"),
        (sample("v1_field_priority"), "issue", "not_a_state_change", "PROJ-42"),
        (sample("v1_created"), "issue", "not_a_state_change", "PROJ-43"),
        (sample("comment_created"), "issue_comment", "not_an_issue_event", None),
    ],
    ids=["own-change", "unmapped-project", "deleted", "other-field", "created", "comment"],
)
async def test_events_conveyor_does_not_act_on_are_ignored_and_change_nothing(
    app: tuple[httpx.AsyncClient, Services],
    payload: dict[str, Any],
    event: str,
    reason: str,
    task: str | None,
) -> None:
    client, svc = app
    before = snapshot(svc)
    answer = await deliver(client, payload, event=event)
    assert answer.status_code == 202
    assert answer.json() == {"outcome": "ignored", "task": task, "reason": reason}
    assert snapshot(svc) == before


async def test_a_state_that_is_neither_start_stop_nor_confirm_is_ignored(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    answer = await deliver(client, sample("v1_state_other"))
    assert answer.json() == {"outcome": "ignored", "task": "PROJ-42", "reason": "state_not_handled"}
    assert task_and_jobs(svc)[0] is None


async def test_a_state_name_that_cannot_be_resolved_is_ignored(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    payload = sample("v1_state_to_analyse")
    del payload["data"]["state"]  # no name in the body, and no Plane API configured
    before = snapshot(svc)
    answer = await deliver(client, payload)
    assert answer.json() == {"outcome": "ignored", "task": "PROJ-42", "reason": "unknown_state"}
    assert snapshot(svc) == before


# -- relaunch ---------------------------------------------------------------------------


async def test_a_start_again_in_analysis_relaunches(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    payload = sample("v1_state_to_analyse")
    await deliver(client, payload)
    again = await deliver(client, later(payload, "2026-11-20T10:00:00Z"))
    assert again.json() == {"outcome": "relaunched", "task": "PROJ-42"}
    task, jobs = task_and_jobs(svc)
    assert task.stage is Stage.ANALYSIS
    assert [j.status for j in jobs] == [JobStatus.QUEUED]  # still one job: it never ran


async def test_a_start_on_a_task_past_analysis_is_ignored(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    payload = sample("v1_state_to_analyse")
    await deliver(client, payload)
    task, _ = task_and_jobs(svc)
    svc.store.write(update_task, task, svc.clock.now(), stage=Stage.REVIEW)
    before = snapshot(svc)
    again = await deliver(client, later(payload, "2026-11-20T10:00:00Z"))
    assert again.json() == {
        "outcome": "ignored",
        "task": "PROJ-42",
        "reason": "relaunch_only_in_analysis",
    }
    after = snapshot(svc)
    assert after["tasks"] == before["tasks"] and after["jobs"] == before["jobs"]


# -- STOP -------------------------------------------------------------------------------


async def _started_then_stopped(
    client: httpx.AsyncClient,
) -> tuple[httpx.Response, httpx.Response]:
    started = await deliver(client, sample("v1_state_to_analyse"))
    stopped = await deliver(client, sample("v1_state_stop"))
    return started, stopped


async def test_stop_with_the_kill_switch_off_is_a_no_op(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path, stop={"enabled": False})) as (client, svc):
        await deliver(client, sample("v1_state_to_analyse"))
        before = snapshot(svc)
        stopped = await deliver(client, sample("v1_state_stop"))
        after = snapshot(svc)
    assert stopped.json() == {"outcome": "ignored", "task": "PROJ-42", "reason": "stop_disabled"}
    for table in ("tasks", "jobs", "stop_records", "audit_events", "pending_cleanups"):
        assert after[table] == before[table], table


async def test_stop_outside_the_repo_allowlist_is_ignored(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path, stop={"repos": ["other"]})) as (client, svc):
        _, stopped = await _started_then_stopped(client)
        task, jobs = task_and_jobs(svc)
        assert svc.store.query(stops_for_task, task.id) == []
    assert stopped.json() == {
        "outcome": "ignored",
        "task": "PROJ-42",
        "reason": "repo_not_in_stop_repos",
    }
    assert task.stage is Stage.ANALYSIS and [j.status for j in jobs] == [JobStatus.QUEUED]


async def test_stop_on_a_ticket_with_no_task_is_ignored(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    answer = await deliver(client, sample("v1_state_stop"))
    assert answer.json() == {"outcome": "ignored", "task": "PROJ-42", "reason": "unknown_ticket"}
    assert task_and_jobs(svc)[0] is None


async def test_stop_on_a_started_task_requests_the_stop(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    _, stopped = await _started_then_stopped(client)
    assert stopped.status_code == 202
    doc = stopped.json()
    assert (doc["outcome"], doc["task"]) == ("stop_requested", "PROJ-42")
    assert doc["stop_id"]
    shown = (await client.get("/tasks/PROJ-42")).json()
    assert [s["id"] for s in shown["stops"]] == [doc["stop_id"]]
    assert shown["stops"][0]["requested_by"] == "plane:ada"


# -- Plane's API for names: v2 payloads, and a v1 body newer than its activity ----------


def _states_api(router: respx.MockRouter) -> None:
    def states(request: httpx.Request) -> httpx.Response:
        page = "states_page2" if request.url.params.get("cursor") else "states_page1"
        return httpx.Response(200, json=sample_json(page))

    router.get(STATES_PATH).mock(side_effect=states)
    router.get(PROJECT_PATH).mock(return_value=httpx.Response(200, json=sample_json("project")))


@pytest.fixture
def plane_api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=PLANE_URL, assert_all_called=False) as router:
        _states_api(router)
        yield router


def _with_plane_api(tmp_path: Path) -> Any:
    plane = {"base_url": PLANE_URL, "api_key": "plane_api_key", "workspace": "acme"}
    return make_settings(tmp_path, identifiers={}, trackers={"plane": plane})


async def test_v2_deliveries_are_resolved_through_plane_s_states_api(
    tmp_path: Path, plane_api: respx.MockRouter
) -> None:
    async with running(_with_plane_api(tmp_path)) as (client, svc):
        started = await deliver(client, sample("v2_workitem_updated_state"), event="")
        stopped = await deliver(client, sample("v2_workitem_updated_stop"), event="")
        task = svc.store.query(live_task_for_issue, "plane", ISSUE)
        stops = [] if task is None else svc.store.query(stops_for_task, task.id)
    assert started.json() == {"outcome": "started", "task": "PROJ-42"}  # PROJ from the API
    assert stopped.json()["outcome"] == "stop_requested"
    assert len(stops) == 1 and stops[0].id == stopped.json()["stop_id"]
    assert plane_api.calls.call_count >= 3  # two pages of states, the project
    assert all(c.request.headers["X-API-Key"] == "plane_api_key" for c in plane_api.calls)


async def test_a_v2_retry_with_the_same_event_id_is_a_duplicate(
    tmp_path: Path, plane_api: respx.MockRouter
) -> None:
    payload = sample("v2_workitem_updated_state")
    async with running(_with_plane_api(tmp_path)) as (client, svc):
        await deliver(client, payload, event="")
        retry = copy.deepcopy(payload)
        retry["delivery_id"] = "9a0e1c55-2d7e-4b8e-9f31-d1b2c3d4e5f6"  # new per retry
        again = await deliver(client, retry, event="")
        _, jobs = task_and_jobs(svc)
    assert again.json() == {"outcome": "duplicate", "task": "PROJ-42"}
    assert len(jobs) == 1


async def test_the_activity_s_state_wins_over_a_newer_body(
    tmp_path: Path, plane_api: respx.MockRouter
) -> None:
    # `data` is read when Plane sends, so it may already show a later state: the name
    # comes from Plane's states for the state in `activity`, not from `data.state`.
    payload = sample("v1_state_to_analyse")
    payload["data"]["state"] = sample("v1_state_stop")["data"]["state"]
    assert payload["activity"]["new_value"] == TO_ANALYSE_STATE
    async with running(_with_plane_api(tmp_path)) as (client, _):
        answer = await deliver(client, payload)
    assert answer.json() == {"outcome": "started", "task": "PROJ-42"}


# -- the delivery's account: logs and metrics, never the secret -------------------------


class Counts:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def webhook(self, tracker: str, outcome: str) -> None:
        self.seen.append((tracker, outcome))


async def test_each_delivery_is_logged_once_and_counted_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counts = Counts()

    def configure(svc: Services) -> None:
        svc.metrics = counts  # type: ignore[assignment]

    caplog.set_level(logging.DEBUG)
    payload = sample("v1_state_to_analyse")
    async with running(make_settings(tmp_path), configure=configure) as (client, _):
        await deliver(client, payload, delivery="d-1")
        await deliver(client, payload, delivery="d-2")
        await deliver(client, payload, delivery="d-3", signature="0" * 64)
    lines = [r for r in caplog.records if r.name == "bot.intake.route"]
    assert [(r.getMessage(), r.delivery, r.outcome) for r in lines] == [  # type: ignore[attr-defined]
        ("webhook delivery", "d-1", "started"),
        ("webhook delivery", "d-2", "duplicate"),
        # The delivery header is not signed: it is not logged for a refused request.
        ("webhook delivery", None, "refused"),
    ]
    assert counts.seen == [("plane", "started"), ("plane", "duplicate"), ("plane", "refused")]
    logged = caplog.text + json.dumps([vars(r) for r in caplog.records], default=str)
    assert SECRET not in logged
    assert "0" * 64 not in logged


# -- an unexpected failure: 500, and the delivery is forgotten so a retry is acted on ---


async def test_a_failure_while_routing_forgets_the_delivery(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), start_background=False)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://conveyor.test") as c:
            with svc.store.begin() as conn:  # the store breaks under the route
                conn.execute(text("ALTER TABLE jobs RENAME TO jobs_away"))
            failed = await deliver(c, sample("v1_state_to_analyse"))
            with svc.store.begin() as conn:
                conn.execute(text("ALTER TABLE jobs_away RENAME TO jobs"))
            retried = await deliver(c, sample("v1_state_to_analyse"))
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal error; the server log has the details"}
    assert retried.json() == {"outcome": "started", "task": "PROJ-42"}
