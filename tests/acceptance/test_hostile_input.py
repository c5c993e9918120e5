"""Input an attacker would send, through the real app: every one is a 4xx with a
message and changes nothing (no 5xx, no row, no path outside its root); the admin stop
takes no body, `{}` or `{"reason"}`, caps its body and slows down a token guesser."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.services import Services
from integrations.trackers.jira import payloads as jira_payloads
from integrations.trackers.linear import payloads as linear_payloads
from tests.acceptance.intake import (
    deliver,
    make_settings,
    running,
    sample,
    snapshot,
)

ADMIN = "hostile-admin-token-0123456789"
HEADERS = {"X-Admin-Token": ADMIN}


@pytest.fixture
async def app(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, server={"admin_token": ADMIN})
    async with running(settings) as pair:
        yield pair


async def started(client: httpx.AsyncClient) -> str:
    answer = await deliver(client, sample("v1_state_to_analyse"))
    assert answer.json()["outcome"] == "started", answer.text
    return str(answer.json()["task"])


def with_data(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(sample("v1_state_to_analyse"))
    for name, value in changes.items():
        if value is None:
            payload["data"].pop(name, None)
        else:
            payload["data"][name] = value
    return payload


DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_SMALL = b"[" * 30_000 + b"]" * 30_000  # under the stop body's 64 KiB


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (with_data(sequence_id="²"), "sequence_id"),
        (with_data(sequence_id=int("9" * 4000)), "sequence_id"),
        (with_data(sequence_id="9" * 4000), "sequence_id"),
        (with_data(id="../../../etc", sequence_id=None), "data.id"),
        (with_data(id="20617384-0d13-472c-a860-e7f89295b2f5#cancelled-1"), "data.id"),
        (with_data(id="x" * 5000), "data.id"),
        (DEEP, "nested too deeply"),
    ],
    ids=[
        "unicode-digit",
        "4000-digits",
        "4000-digit-text",
        "path-id",
        "tombstone-id",
        "huge-id",
        "deep-json",
    ],
)
async def test_a_crafted_signed_delivery_is_a_400_that_changes_nothing(
    app: tuple[httpx.AsyncClient, Services], payload: dict[str, Any] | bytes, says: str
) -> None:
    client, svc = app
    before = snapshot(svc)
    body = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    answer = await deliver(client, body)
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]
    assert snapshot(svc) == before


async def test_huge_and_odd_refs_are_a_404_never_a_500(
    app: tuple[httpx.AsyncClient, Services],
) -> None:
    client, svc = app
    await started(client)
    before = snapshot(svc)
    for ref in ("9" * 5000, "²", "٣", "1" * 11, "x" * 300, "PROJ-42%23cancelled-99999999999"):
        shown = await client.get(f"/tasks/{ref}")
        assert shown.status_code == 404, (ref[:20], shown.text)
        assert len(shown.json()["error"]) < 400
        stopped = await client.post(f"/tasks/{ref}/stop", headers=HEADERS, content=DEEP)
        assert stopped.status_code == 404, (ref[:20], stopped.text)
    assert snapshot(svc) == before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "stopped by an operator"),
        (b"{}", "stopped by an operator"),
        (b'{"reason": "wrong ticket"}', "wrong ticket"),
    ],
    ids=["no-body", "empty-object", "reason"],
)
async def test_the_admin_stop_takes_no_body_an_empty_object_or_a_reason(
    app: tuple[httpx.AsyncClient, Services], body: bytes | None, reason: str
) -> None:
    client, _ = app
    key = await started(client)
    answer = await client.post(f"/tasks/{key}/stop", headers=HEADERS, content=body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "STOP_REQUESTED"
    detail = (await client.get(f"/tasks/{key}")).json()
    assert [s["reason"] for s in detail["stops"]] == [reason]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"x" * (64 * 1024 + 1), 413, "larger than"),
        (DEEP_SMALL, 400, "nested too deeply"),
        (b"[1, 2]", 400, "not a JSON object"),
        (b'{"reason": 7}', 400, "reason"),
        (b"not json", 400, "not JSON"),
    ],
    ids=["over-64k", "deep-json", "array", "reason-not-text", "not-json"],
)
async def test_a_bad_stop_body_is_a_4xx_that_changes_nothing(
    app: tuple[httpx.AsyncClient, Services], body: bytes, status: int, says: str
) -> None:
    client, svc = app
    key = await started(client)
    before = snapshot(svc)
    answer = await client.post(f"/tasks/{key}/stop", headers=HEADERS, content=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    assert snapshot(svc) == before


async def test_a_token_guesser_is_slowed_down_and_the_operator_is_not(
    app: tuple[httpx.AsyncClient, Services], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = app
    key = await started(client)
    caplog.set_level(logging.WARNING, logger="bot.api.stop")
    wrong = {"X-Admin-Token": "guess-0123456789abcdef"}
    answers = [await client.post(f"/tasks/{key}/stop", headers=wrong) for _ in range(13)]
    assert [a.status_code for a in answers] == [401] * 10 + [429] * 3
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    throttled = [r for r in caplog.records if r.getMessage() == "admin authentication throttled"]
    assert len(throttled) == 1  # once per window, never the token
    assert "guess-0123456789abcdef" not in caplog.text
    right = await client.post(f"/tasks/{key}/stop", headers=HEADERS, content=b"{}")
    assert right.status_code == 202, right.text  # a right token is never limited
    metrics = (await client.get("/metrics")).text
    assert 'conveyor_admin_auth_refusals_total{answer="401"} 10.0' in metrics
    assert 'conveyor_admin_auth_refusals_total{answer="429"} 3.0' in metrics


# -- every tracker, not only Plane ---------------------------------------------------------

OTHER_SECRET = "other-tracker-secret-0123456789"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _hex(body: bytes) -> str:
    return hmac.new(OTHER_SECRET.encode(), body, hashlib.sha256).hexdigest()


def _linear(change: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    headers, body = linear_payloads.issue_update(
        key="ENG-7", state="To Analyse", secret=OTHER_SECRET, now=time.time()
    )
    doc = json.loads(body)
    doc["data"].update(change)
    body = json.dumps(doc).encode()
    return "linear", {**headers, "Linear-Signature": _hex(body)}, body


def _jira(change: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    headers, body = jira_payloads.issue_status_change(
        key="PROJ-7", state="To Analyse", secret=OTHER_SECRET, now=time.time()
    )
    doc = json.loads(body)
    doc["issue"].update(change)
    body = json.dumps(doc).encode()
    return "jira", {**headers, "X-Hub-Signature": "sha256=" + _hex(body)}, body


def _github(change: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    doc = json.loads((SAMPLES / "github" / "issues_labeled_start.json").read_text())
    doc["issue"].update(change)
    body = json.dumps(doc).encode()
    headers = json.loads((SAMPLES / "github" / "deliveries.json").read_text())
    sent = headers["issues_labeled_start.json"]
    return "github", {**sent, "X-Hub-Signature-256": "sha256=" + _hex(body)}, body


@pytest.mark.parametrize(
    "crafted",
    [
        lambda: _linear({"id": "../../etc"}),
        lambda: _linear({"identifier": "ENG-7#cancelled-1"}),
        lambda: _linear({"identifier": "eng-7/../../x"}),
        lambda: _jira({"id": "10042#cancelled-3"}),
        lambda: _jira({"key": "../PROJ-7"}),
        lambda: _jira({"id": "²"}),
        lambda: _github({"number": "12#cancelled-1"}),
        lambda: _github({"number": int("9" * 4000)}),
        lambda: _github({"number": -1}),
    ],
    ids=[
        "linear-id",
        "linear-tombstone",
        "linear-path",
        "jira-tombstone",
        "jira-path",
        "jira-unicode-digit",
        "github-tombstone",
        "github-huge",
        "github-negative",
    ],
)
async def test_every_tracker_refuses_ids_without_its_own_shape(
    tmp_path: Path, crafted: Any
) -> None:
    trackers = {
        "linear": {"webhook_secret": OTHER_SECRET},
        "jira": {"webhook_secret": OTHER_SECRET},
        "github": {"webhook_secret": OTHER_SECRET},
    }
    settings = make_settings(tmp_path, trackers=trackers)
    async with running(settings) as (client, svc):
        before = snapshot(svc)
        name, headers, body = crafted()
        answer = await client.post(f"/webhooks/{name}", content=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]
        assert snapshot(svc) == before
