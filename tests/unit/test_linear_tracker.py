"""Linear's webhook side (no I/O): signatures, the replay window, every recorded sample
read into the port's event, and the signed bodies `conveyor send linear` builds."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from integrations.trackers.base import (
    BadPayload,
    BadSignature,
    EventKind,
    Notice,
    Signal,
    TicketRef,
    TrackerError,
    TrackerEvent,
)
from integrations.trackers.jira import JiraSettings
from integrations.trackers.linear import ADAPTER, LinearSettings, LinearTracker, payloads

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "linear"
SECRET = "lin_wh_3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e"
BOT = "0e2a4c6e-8b1d-4f3a-a5c7-9e1b3d5f7a9c"
ADA = "6b8d0f2a-4c6e-4a8b-9c1d-3e5f7a9b1c2d"
ENG_123 = "b2e4f6a8-0c1d-4e3f-9a5b-7c9d1e3f5a7b"
TO_ANALYSE = "c7d1e3f5-8a2b-4c6d-9e0f-1a3b5c7d9e2f"


def raw(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(raw(name))
    return doc


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers_for(
    body: bytes, delivery: str = "7f0c2a4e-1b3d-4f5a-9c8e-2d4f6a8b0c1e"
) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Linear-Webhook",
        "Linear-Delivery": delivery,
        "Linear-Event": "Issue",
        "Linear-Signature": sign(body),
    }


def sent_at(body: bytes) -> float:
    """The delivery's own send time, in epoch seconds."""
    return float(json.loads(body)["webhookTimestamp"]) / 1000


def encoded(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def make(http: httpx.AsyncClient, **overrides: Any) -> LinearTracker:
    settings = LinearSettings(webhook_secret=SECRET, bot_actor_id=BOT, **overrides)
    return LinearTracker(settings, http, {"ENG": "app"})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def linear(http: httpx.AsyncClient) -> LinearTracker:
    return make(http)


def parse(tracker: LinearTracker, body: bytes, **headers: str) -> TrackerEvent:
    return tracker.parse({**headers_for(body), **headers}, body)


# -- every recorded sample -----------------------------------------------------------------

CASES = [
    # sample, kind, signal, state_after, key, ignore
    ("issue_create", EventKind.CREATED, Signal.START, "To Analyse", "ENG-124", None),
    ("issue_update_state", EventKind.STATE_CHANGE, Signal.START, "To Analyse", "ENG-123", None),
    ("issue_update_stop", EventKind.STATE_CHANGE, Signal.STOP, "STOP", "ENG-123", None),
    ("issue_update_title", EventKind.OTHER, None, None, "ENG-123", "not_a_state_change"),
    ("issue_remove", EventKind.DELETED, None, None, "ENG-123", None),
]


@pytest.mark.parametrize(("name", "kind", "signal", "state", "key", "ignore"), CASES)
def test_every_issue_sample_is_read(
    linear: LinearTracker,
    name: str,
    kind: EventKind,
    signal: Signal | None,
    state: str | None,
    key: str,
    ignore: str | None,
) -> None:
    body = raw(name)
    linear.verify(headers_for(body), body, now=sent_at(body) + 2)
    event = parse(linear, body)
    assert (event.kind, event.signal, event.state_after, event.ignore) == (
        kind,
        signal,
        state,
        ignore,
    )
    assert event.ticket is not None and event.ticket.ref.key == key
    assert event.ticket.ref.project == "ENG"
    assert (event.actor, event.actor_id) == ("Ada Lovelace", ADA)
    assert event.delivery_key == "linear:7f0c2a4e-1b3d-4f5a-9c8e-2d4f6a8b0c1e"
    assert event.tracker == "linear"


def test_a_comment_is_not_an_issue_event(linear: LinearTracker) -> None:
    body = raw("comment_create")
    linear.verify(headers_for(body), body, now=sent_at(body))
    event = parse(linear, body, **{"Linear-Event": "Comment"})
    assert (event.kind, event.ignore, event.ticket) == (EventKind.OTHER, "not_an_issue_event", None)
    assert event.actor_id == BOT


def test_a_state_change_carries_the_ticket_an_agent_starts_from(linear: LinearTracker) -> None:
    event = parse(linear, raw("issue_update_state"))
    assert event.state_id == TO_ANALYSE
    assert event.state_before is None  # Linear sends only the previous state's id
    ticket = event.ticket
    assert ticket is not None
    assert ticket.ref == TicketRef("linear", "ENG", ENG_123, "ENG-123")
    assert ticket.title == "Fix login redirect loop"
    assert ticket.description.startswith("Users who sign in with SSO land back on `/login`")
    assert "## Steps to reproduce" in ticket.description
    assert ticket.url == "https://linear.app/acme/issue/ENG-123/fix-login-redirect-loop"
    assert (ticket.state, ticket.signal) == ("To Analyse", Signal.START)
    assert ticket.labels == ("Bug", "backend")
    assert ticket.updated_at == datetime(2026, 11, 30, 10, 15, 2, 118000, tzinfo=UTC)


def test_stop_wins_when_a_state_is_in_both_lists(http: httpx.AsyncClient) -> None:
    tracker = make(http, start_states=["STOP", "To Analyse"], stop_states=["stop"])
    assert parse(tracker, raw("issue_update_stop")).signal is Signal.STOP


def test_confirm_deploy_states_are_read(http: httpx.AsyncClient) -> None:
    tracker = make(http, confirm_deploy_states=["To Analyse"], start_states=[])
    assert parse(tracker, raw("issue_update_state")).signal is Signal.CONFIRM_DEPLOY


# -- verify: signature first, then the replay window ------------------------------------------


def test_a_fresh_signed_delivery_is_accepted_up_to_60_seconds_either_way(
    linear: LinearTracker,
) -> None:
    body = raw("issue_update_stop")
    for skew in (-60.0, 0.0, 60.0):
        linear.verify(headers_for(body), body, now=sent_at(body) + skew)


@pytest.mark.parametrize(("skew", "words"), [(61.0, "61 s old"), (-90.0, "90 s in the future")])
def test_a_stale_or_future_timestamp_is_refused_as_a_replay(
    linear: LinearTracker, skew: float, words: str
) -> None:
    body = raw("issue_update_stop")
    with pytest.raises(BadSignature) as refused:
        linear.verify(headers_for(body), body, now=sent_at(body) + skew)
    assert refused.value.reason == "stale_timestamp"
    assert refused.value.status == 401
    assert words in refused.value.message and "replay" in refused.value.message


def test_a_replay_days_later_is_refused(linear: LinearTracker) -> None:
    body = raw("issue_update_stop")
    with pytest.raises(BadSignature, match="replay") as refused:
        linear.verify(headers_for(body), body, now=sent_at(body) + 3 * 86400)
    assert refused.value.reason == "stale_timestamp"


def test_a_body_without_webhook_timestamp_is_refused(linear: LinearTracker) -> None:
    doc = sample("issue_update_stop")
    del doc["webhookTimestamp"]
    body = encoded(doc)
    with pytest.raises(BadSignature, match="webhookTimestamp") as refused:
        linear.verify(headers_for(body), body, now=1_796_035_297.0)
    assert refused.value.reason == "stale_timestamp"


def test_the_signature_is_checked_before_the_timestamp(linear: LinearTracker) -> None:
    body = raw("issue_update_stop")
    headers = {**headers_for(body), "Linear-Signature": sign(body, "another-secret")}
    with pytest.raises(BadSignature) as refused:
        linear.verify(headers, body, now=sent_at(body) + 3600)
    assert refused.value.reason == "bad_signature"


@pytest.mark.parametrize("signature", [None, "", "   ", "00" * 32, "sha256=" + "ab" * 32])
def test_a_missing_or_wrong_signature_is_refused(
    linear: LinearTracker, signature: str | None
) -> None:
    body = raw("issue_update_stop")
    headers = headers_for(body)
    if signature is None:
        del headers["Linear-Signature"]
    else:
        headers["Linear-Signature"] = signature
    with pytest.raises(BadSignature, match="Linear-Signature") as refused:
        linear.verify(headers, body, now=sent_at(body))
    assert refused.value.status == 401


def test_the_signature_covers_the_raw_bytes_not_the_json(linear: LinearTracker) -> None:
    body = raw("issue_update_stop")
    reserialised = json.dumps(json.loads(body), separators=(",", ":")).encode()
    with pytest.raises(BadSignature):
        linear.verify(headers_for(body), reserialised, now=sent_at(body))


def test_the_header_name_is_case_insensitive(linear: LinearTracker) -> None:
    body = raw("issue_update_stop")
    headers = {k.lower(): v for k, v in headers_for(body).items()}
    linear.verify(headers, body, now=sent_at(body))
    assert linear.parse(headers, body).kind is EventKind.STATE_CHANGE


def test_no_secret_configured_refuses_and_says_which_setting(http: httpx.AsyncClient) -> None:
    tracker = LinearTracker(LinearSettings(), http, {"ENG": "app"})
    body = raw("issue_update_stop")
    with pytest.raises(BadSignature) as refused:
        tracker.verify(headers_for(body), body, now=sent_at(body))
    assert "[trackers.linear] webhook_secret" in refused.value.message
    assert "CONVEYOR_LINEAR_WEBHOOK_SECRET" in refused.value.message


def test_a_signed_body_that_is_not_json_is_a_bad_payload(linear: LinearTracker) -> None:
    body = b"webhookTimestamp=1796035297702"
    with pytest.raises(BadPayload, match="not JSON"):
        linear.verify(headers_for(body), body, now=1_796_035_297.7)


# -- parse: what is ignored, what is refused --------------------------------------------------


def test_an_unmapped_team_is_ignored(http: httpx.AsyncClient) -> None:
    tracker = LinearTracker(LinearSettings(webhook_secret=SECRET), http, {"OPS": "ops"})
    event = parse(tracker, raw("issue_update_stop"))
    assert (event.kind, event.signal, event.ignore) == (
        EventKind.STATE_CHANGE,
        Signal.STOP,
        "unmapped_project",
    )


def test_a_payload_with_only_team_id_is_unmapped(linear: LinearTracker) -> None:
    doc = sample("issue_update_stop")
    del doc["data"]["team"]
    assert doc["data"]["teamId"]
    assert parse(linear, encoded(doc)).ignore == "unmapped_project"


def test_conveyors_own_change_is_ignored(linear: LinearTracker) -> None:
    doc = sample("issue_update_stop")
    doc["actor"] = {"id": BOT, "name": "conveyor-bot", "type": "user"}
    event = parse(linear, encoded(doc))
    assert (event.ignore, event.actor) == ("own_change", "conveyor-bot")


def test_no_bot_actor_configured_ignores_nobody(http: httpx.AsyncClient) -> None:
    tracker = LinearTracker(LinearSettings(webhook_secret=SECRET), http, {"ENG": "app"})
    doc = sample("issue_update_stop")
    del doc["actor"]
    event = parse(tracker, encoded(doc))
    assert (event.ignore, event.actor, event.actor_id) == (None, None, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"action": "update"}', "missing field: type"),
        (b'{"type": "Issue", "data": {}}', "missing field: action"),
        (b'{"type": "Issue", "action": "update"}', "missing field: data"),
    ],
)
def test_a_body_that_is_not_a_linear_event_is_a_bad_payload(
    linear: LinearTracker, body: bytes, message: str
) -> None:
    with pytest.raises(BadPayload, match=message) as refused:
        parse(linear, body)
    assert refused.value.status == 400


def test_deep_nesting_is_refused_by_verify_too(linear: LinearTracker) -> None:
    body = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    with pytest.raises(BadPayload, match="nested too deeply"):
        linear.verify(headers_for(body), body, now=0.0)


def test_a_delivery_without_linear_delivery_is_a_bad_payload(linear: LinearTracker) -> None:
    body = raw("issue_update_stop")
    headers = headers_for(body)
    del headers["Linear-Delivery"]
    with pytest.raises(BadPayload, match="Linear-Delivery"):
        linear.parse(headers, body)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", "ENG-123", "UUID"),
        ("id", "b2e4f6a8-0c1d-4e3f-9a5b-7c9d1e3f5a7b/../x", "UUID"),
        ("id", 123, "UUID"),
        ("identifier", "eng-123", "ENG-123"),
        ("identifier", "ENG-12a", "ENG-123"),
        ("identifier", "ENG 123", "ENG-123"),
        ("identifier", "../ENG-1", "ENG-123"),
        ("identifier", None, "ENG-123"),
    ],
)
def test_an_issue_id_or_key_of_the_wrong_shape_is_refused(
    linear: LinearTracker, field: str, value: Any, message: str
) -> None:
    doc = sample("issue_update_stop")
    doc["data"][field] = value
    with pytest.raises(BadPayload, match=message):
        parse(linear, encoded(doc))


def test_a_state_change_without_the_new_state_is_refused(linear: LinearTracker) -> None:
    doc = sample("issue_update_stop")
    del doc["data"]["state"]
    with pytest.raises(BadPayload, match=r"data\.state\.name"):
        parse(linear, encoded(doc))


def test_other_entities_and_actions_are_ignored(linear: LinearTracker) -> None:
    for entity in ("IssueLabel", "Project", "Cycle", "Reaction"):
        event = parse(linear, encoded({"type": entity, "action": "update", "data": {}}))
        assert event.ignore == "not_an_issue_event"
    doc = sample("issue_update_stop")
    doc["action"] = "restore"
    assert parse(linear, encoded(doc)).ignore == "not_a_state_change"


# -- what `conveyor send linear` sends ------------------------------------------------------

NOW = 1_796_035_297.702


def test_a_sent_state_change_verifies_and_reads_back(linear: LinearTracker) -> None:
    headers, body = payloads.issue_update(key="ENG-123", state="STOP", secret=SECRET, now=NOW)
    linear.verify(headers, body, now=NOW + 1)
    event = linear.parse(headers, body)
    assert (event.kind, event.signal, event.state_after) == (
        EventKind.STATE_CHANGE,
        Signal.STOP,
        "STOP",
    )
    assert event.ticket is not None
    assert event.ticket.ref == TicketRef(
        "linear", "ENG", payloads.issue_id_of("ENG-123"), "ENG-123"
    )
    assert event.delivery_key == f"linear:{headers['Linear-Delivery']}"
    assert body.startswith(b'{"action":"update","actor":')  # JSON.stringify's compact form
    assert json.loads(body)["webhookTimestamp"] == 1_796_035_297_702


def test_repeated_sends_are_one_issue_but_fresh_deliveries(linear: LinearTracker) -> None:
    first = linear.parse(
        *payloads.issue_update(key="ENG-7", state="To Analyse", secret=SECRET, now=NOW)
    )
    again = linear.parse(*payloads.issue_update(key="ENG-7", state="STOP", secret=SECRET, now=NOW))
    assert first.ticket is not None and again.ticket is not None
    assert first.ticket.ref == again.ticket.ref
    assert first.delivery_key != again.delivery_key
    assert (first.signal, again.signal) == (Signal.START, Signal.STOP)


def test_a_sent_delivery_is_stale_a_minute_later(linear: LinearTracker) -> None:
    headers, body = payloads.issue_update(key="ENG-123", state="STOP", secret=SECRET, now=NOW)
    with pytest.raises(BadSignature) as refused:
        linear.verify(headers, body, now=NOW + 61)
    assert refused.value.reason == "stale_timestamp"


def test_a_sent_remove_is_a_deletion(linear: LinearTracker) -> None:
    headers, body = payloads.issue_remove(
        key="ENG-123", state="To Analyse", secret=SECRET, now=NOW, delivery="d-1"
    )
    linear.verify(headers, body, now=NOW)
    event = linear.parse(headers, body)
    assert (event.kind, event.delivery_key) == (EventKind.DELETED, "linear:d-1")


def test_a_send_with_a_bad_key_is_refused() -> None:
    with pytest.raises(ValueError, match="ENG-123"):
        payloads.issue_update(key="eng-1", state="STOP", secret=SECRET, now=NOW)


# -- the adapter entry and its settings --------------------------------------------------------


def test_the_adapter_entry_names_its_settings_and_env() -> None:
    assert ADAPTER.name == "linear"
    assert ADAPTER.settings is LinearSettings
    assert dict(ADAPTER.env) == {
        "CONVEYOR_LINEAR_WEBHOOK_SECRET": "webhook_secret",
        "CONVEYOR_LINEAR_API_KEY": "api_key",
    }


def test_settings_take_designs_keys_and_refuse_others() -> None:
    settings = LinearSettings.model_validate(
        {
            "webhook_secret": SECRET,
            "api_key": "lin_api_k",
            "bot_actor_id": BOT,
            "start_states": ["Ready"],
            "stop_states": ["Halt"],
            "confirm_deploy_states": ["Ship it"],
        }
    )
    assert settings.api_url == "https://api.linear.app/graphql"
    assert sorted(settings.secrets()) == sorted([SECRET, "lin_api_k"])
    assert "lin_api_k" not in repr(settings)
    with pytest.raises(ValidationError):
        LinearSettings.model_validate({"api_token": "x"})


async def test_build_makes_a_tracker_and_refuses_other_settings(http: httpx.AsyncClient) -> None:
    tracker = ADAPTER.build(LinearSettings(api_key="lin_api_k"), http, {"ENG": "app"})
    assert (tracker.name, tracker.has_api) == ("linear", True)
    assert tracker.signal_for_labels(frozenset({"STOP"})) is None
    assert not ADAPTER.build(LinearSettings(), http, {}).has_api
    with pytest.raises(TypeError, match="LinearSettings"):
        ADAPTER.build(JiraSettings(), http, {})


async def test_the_api_side_without_a_key_says_which_setting(linear: LinearTracker) -> None:
    ref = TicketRef("linear", "ENG", ENG_123, "ENG-123")
    with pytest.raises(TrackerError, match="CONVEYOR_LINEAR_API_KEY"):
        await linear.comment(ref, Notice(headline="stopped"))
    with pytest.raises(TrackerError, match=r"\[trackers.linear\] api_key"):
        await linear.read(ref)
    with pytest.raises(TrackerError, match="api_key"):
        await linear.changed_since("ENG", datetime(2026, 11, 30, tzinfo=UTC))


async def test_complete_leaves_the_event_as_it_is(linear: LinearTracker) -> None:
    event = parse(linear, raw("issue_update_stop"))
    assert await linear.complete(event) is event
