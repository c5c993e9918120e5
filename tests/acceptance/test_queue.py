"""GET /queue, GET /tasks and GET /tasks/{ref} through the real app, after real deliveries."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from state.models import Stage
from state.store import live_task_for_issue, update_task
from tests.acceptance.intake import ISSUE, deliver, later, make_settings, running, sample

STAGES = ["analysis", "implementation", "review", "merge", "deploy", "blocked", "done", "cancelled"]
STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
OTHER_ISSUE = "7b0f55d2-3c4e-4f8a-9b1d-2e3f4a5b6c7d"


def queue_schema() -> Draft202012Validator:
    text = (resources.files("bot.api") / "schemas" / "queue.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(doc: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in queue_schema().iter_errors(doc)]
    assert errors == []


def another_ticket(seq: int = 44) -> dict[str, Any]:
    payload = sample("v1_state_to_analyse")
    payload["data"].update(id=OTHER_ISSUE, sequence_id=seq, name="Another ticket")
    return payload


async def wait_for_stage(client: httpx.AsyncClient, ref: str, stage: str) -> dict[str, Any]:
    """The stop's reset runs behind the answer: wait (bounded) for its end."""
    for _ in range(200):
        shown: dict[str, Any] = (await client.get(f"/tasks/{ref}")).json()
        if shown.get("task", {}).get("stage") == stage:
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"{ref} never reached {stage}: {shown}")


# -- /queue -----------------------------------------------------------------------------


async def test_an_empty_store_answers_all_zeros(tmp_path: Path, db_url: str) -> None:
    async with running(make_settings(tmp_path, db_url)) as (client, _):
        answer = await client.get("/queue")
    assert answer.status_code == 200
    doc = answer.json()
    assert_valid(doc)
    assert doc == {
        "tasks": dict.fromkeys(STAGES, 0),
        "jobs": dict.fromkeys(STATUSES, 0),
        "running": [],
        "stop": {
            "enabled": True,
            "repos": [],
            "deferred": [],
            "in_progress": [],
            "cleanup_pending": [],
            "host_pending": [],
            "recent": [],
        },
        # No tracker has API credentials here: nothing to reconcile.
        "reconcile": {"enabled": True, "interval_seconds": 15.0, "trackers": {}},
    }


async def test_the_queue_has_the_contract_s_shape_after_a_mix_of_events(
    tmp_path: Path, db_url: str
) -> None:
    settings = make_settings(tmp_path, db_url, stop={"repos": ["app"]})
    async with running(settings) as (client, _):
        assert (await deliver(client, sample("v1_state_to_analyse"))).json()["outcome"] == "started"
        assert (await deliver(client, another_ticket())).json()["outcome"] == "started"
        await deliver(client, later(sample("v1_state_to_analyse"), "2026-11-20T10:00:00Z"))
        await deliver(client, sample("v1_field_priority"))  # ignored
        stopped = (await deliver(client, sample("v1_state_stop"))).json()
        await wait_for_stage(client, "PROJ-42", "cancelled")
        doc = (await client.get("/queue")).json()
    assert_valid(doc)
    assert doc["tasks"] == {**dict.fromkeys(STAGES, 0), "analysis": 1, "cancelled": 1}
    assert doc["jobs"] == {**dict.fromkeys(STATUSES, 0), "queued": 1, "cancelled": 1}
    assert doc["running"] == []
    stop = doc["stop"]
    assert (stop["enabled"], stop["repos"], stop["deferred"]) == (True, ["app"], [])
    assert [(r["task"], r["by"], r["stop_id"]) for r in stop["recent"]] == [
        ("PROJ-42", "plane:ada", stopped["stop_id"])
    ]
    assert stop["recent"][0]["outcome"] in ("cancelled_graceful", "cancelled_forced")


async def test_the_queue_shows_the_kill_switch(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, stop={"enabled": False, "repos": ["app", "web"]})
    async with running(settings) as (client, _):
        doc = (await client.get("/queue")).json()
    assert_valid(doc)
    assert (doc["stop"]["enabled"], doc["stop"]["repos"]) == (False, ["app", "web"])


def test_the_schema_refuses_what_the_contract_does_not_allow() -> None:
    good: dict[str, Any] = {
        "tasks": dict.fromkeys(STAGES, 0),
        "jobs": dict.fromkeys(STATUSES, 0),
        "running": [
            {
                "task": "PROJ-42",
                "job": 17,
                "stage": "implementation",
                "pid": 4242,
                "started_at": "2026-11-20T09:14:03.512207Z",
            }
        ],
        "stop": {
            "enabled": True,
            "repos": [],
            "deferred": [
                {"task": "PROJ-7", "requested_at": "2026-11-20T09:14:03Z", "window": "merge"}
            ],
            "in_progress": [],
            "cleanup_pending": [
                {"task": "PROJ-3", "step": "remote_branch", "attempts": 2, "last_error": "HTTP 502"}
            ],
            "recent": [
                {
                    "task": "PROJ-9",
                    "outcome": "cancelled_graceful",
                    "cancelled_at": "2026-11-20T09:14:03Z",
                    "by": "plane:ada",
                }
            ],
        },
        "reconcile": {
            "enabled": True,
            "interval_seconds": 15,
            "trackers": {
                "plane": {
                    "last_ok_at": "2026-11-20T09:14:03Z",
                    "lag_seconds": 3.1,
                    "last_error": None,
                    "passes": 120,
                    "stops_found": 1,
                    "starts_found": 0,
                    "missed_webhooks": 1,
                    "backoff_until": None,
                }
            },
        },
    }
    validator = queue_schema()
    assert list(validator.iter_errors(good)) == []
    missing_stage = json.loads(json.dumps(good))
    del missing_stage["tasks"]["blocked"]
    negative = json.loads(json.dumps(good))
    negative["jobs"]["failed"] = -1
    bad_time = json.loads(json.dumps(good))
    bad_time["stop"]["recent"][0]["cancelled_at"] = "yesterday"
    for doc in (missing_stage, negative, bad_time):
        assert list(validator.iter_errors(doc)) != []


# -- /tasks -----------------------------------------------------------------------------


async def test_tasks_lists_the_recent_ones_newest_first(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as (client, _):
        await deliver(client, sample("v1_state_to_analyse"))
        await deliver(client, another_ticket())
        everything = (await client.get("/tasks")).json()["tasks"]
        one = (await client.get("/tasks", params={"limit": "1"})).json()["tasks"]
    assert [t["key"] for t in everything] == ["PROJ-44", "PROJ-42"]
    assert one == everything[:1]
    assert set(one[0]) == {"id", "key", "stage", "outcome", "repo", "created_at", "updated_at"}
    assert one[0]["stage"] == "analysis" and one[0]["repo"] == "app"


@pytest.mark.parametrize("limit", ["0", "501", "-1", "1.5", "ten", "", "9" * 5000])
async def test_a_bad_limit_is_400(tmp_path: Path, limit: str) -> None:
    async with running(make_settings(tmp_path)) as (client, _):
        answer = await client.get("/tasks", params={"limit": limit})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("limit must be an integer from 1 to 500")


async def test_a_task_is_shown_by_id_issue_id_and_key(tmp_path: Path, db_url: str) -> None:
    async with running(make_settings(tmp_path, db_url)) as (client, svc):
        await deliver(client, sample("v1_state_to_analyse"))
        task = svc.store.query(live_task_for_issue, "plane", ISSUE)
        assert task is not None
        shown = [(await client.get(f"/tasks/{ref}")).json() for ref in (task.id, ISSUE, "PROJ-42")]
    assert shown[0] == shown[1] == shown[2]
    doc = shown[0]
    assert set(doc) == {"task", "jobs", "stops", "audit", "cleanups"}
    assert doc["task"]["id"] == task.id
    assert (doc["task"]["key"], doc["task"]["issue_id"], doc["task"]["tombstoned"]) == (
        "PROJ-42",
        ISSUE,
        False,
    )
    assert doc["task"]["stage"] == "analysis"
    assert doc["task"]["created_at"].endswith("Z")
    assert [(j["stage"], j["status"]) for j in doc["jobs"]] == [("analysis", "queued")]
    assert [e["kind"] for e in doc["audit"]] == ["started"]
    assert doc["audit"][0]["actor"] == "plane:ada"
    assert (doc["stops"], doc["cleanups"]) == ([], [])


async def test_a_stopped_task_is_shown_under_its_original_key(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as (client, _):
        await deliver(client, sample("v1_state_to_analyse"))
        stopped = (await deliver(client, sample("v1_state_stop"))).json()
        doc = await wait_for_stage(client, "PROJ-42", "cancelled")
    assert (doc["task"]["key"], doc["task"]["issue_id"]) == ("PROJ-42", ISSUE)
    assert doc["task"]["tombstoned"] is True
    assert [s["id"] for s in doc["stops"]] == [stopped["stop_id"]]
    assert doc["stops"][0]["requested_at"].endswith("Z")
    assert isinstance(doc["stops"][0]["steps"], dict)


async def test_a_task_moved_on_shows_its_stage(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as (client, svc):
        await deliver(client, sample("v1_state_to_analyse"))
        task = svc.store.query(live_task_for_issue, "plane", ISSUE)
        assert task is not None
        svc.store.write(update_task, task, svc.clock.now(), stage=Stage.REVIEW)
        doc = (await client.get("/tasks/PROJ-42")).json()
    assert doc["task"]["stage"] == "review" and doc["task"]["version"] == 2


@pytest.mark.parametrize("ref", ["PROJ-999", "12345", "99999999999999999999", "%00", "%20"])
async def test_an_unknown_ref_is_404(tmp_path: Path, db_url: str, ref: str) -> None:
    async with running(make_settings(tmp_path, db_url)) as (client, _):
        await deliver(client, sample("v1_state_to_analyse"))
        answer = await client.get(f"/tasks/{ref}")
    assert answer.status_code == 404
    assert answer.json()["error"].startswith("no task matches '")
    assert answer.json()["error"].endswith("' (try a task id, an issue id or a key like PROJ-42)")
    if ref == "PROJ-999":
        assert answer.json()["error"].startswith("no task matches 'PROJ-999' (try")
