"""The pure Plane core: signatures, payload parsing, dedup keys, task keys."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from integrations.errors import IntegrationError
from integrations.trackers.plane.payloads import build_v1_payload
from integrations.trackers.plane.webhook import (
    MAX_BODY_BYTES,
    EventKind,
    PayloadError,
    parse_event,
    project_tags,
    sign,
    task_key,
    verify_signature,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "plane"
SECRET = "plane_wh_5f0c3e9a7d2b4c18a6e1f0b9d8c7a6e5"
PROJECT = "5c7db7b1-1256-4e76-bfdc-fb3b34bf0180"
ISSUE = "20617384-0d13-472c-a860-e7f89295b2f5"
ADA = "196f02c6-b57b-497f-bd05-8bb8840a685d"
STATES = {
    "Backlog": "235ef155-b1d7-4e4d-ac57-1691e78123a3",
    "To Analyse": "c490adf0-9b37-4095-b695-b1523c9091f0",
    "In Progress": "5e2d6691-2878-4fe7-b8e1-d2ccb149c5cd",
    "Confirm Deploy": "ef4aa396-3f61-4e75-846e-31078e71c650",
    "STOP": "e14a6af2-d4b4-42dc-8e20-d57645086590",
}


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(sample_bytes(name))
    return loaded


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# --- signatures ---------------------------------------------------------------------


def test_sign_is_lowercase_hex_hmac_sha256_of_the_raw_body() -> None:
    body = sample_bytes("v1_state_stop")
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == expected
    assert sign(SECRET, body) == sign(SECRET, body).lower()


def test_a_valid_signature_verifies() -> None:
    body = sample_bytes("v1_state_stop")
    assert verify_signature(SECRET, body, sign(SECRET, body))


def test_uppercase_hex_and_surrounding_whitespace_are_tolerated() -> None:
    body = sample_bytes("v1_state_stop")
    assert verify_signature(SECRET, body, f"  {sign(SECRET, body).upper()}\n")


@pytest.mark.parametrize("signature", [None, "", "   "])
def test_a_missing_signature_never_verifies(signature: str | None) -> None:
    assert not verify_signature(SECRET, b"{}", signature)


def test_a_wrong_signature_does_not_verify() -> None:
    body = sample_bytes("v1_state_stop")
    assert not verify_signature(SECRET, body, sign("plane_wh_other", body))
    assert not verify_signature(SECRET, body, "sha256=" + sign(SECRET, body))
    assert not verify_signature(SECRET, body, "zz\u00e9 not hex")


def test_a_signature_over_a_reserialised_body_does_not_verify() -> None:
    body = sample_bytes("v1_state_stop")
    reserialised = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert not verify_signature(SECRET, body, sign(SECRET, reserialised))


def test_an_empty_secret_never_verifies() -> None:
    assert not verify_signature("", b"{}", sign("", b"{}"))


# --- samples ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "state", "group"),
    [
        ("v1_state_to_analyse", "To Analyse", "unstarted"),
        ("v1_state_stop", "STOP", "cancelled"),
        ("v1_state_confirm_deploy", "Confirm Deploy", "started"),
        ("v1_state_other", "In Progress", "started"),
    ],
)
def test_v1_state_changes_carry_the_new_state(name: str, state: str, group: str) -> None:
    event = parse_event(sample_bytes(name), event_header="issue")
    assert event.kind is EventKind.STATE_CHANGE
    assert event.version == "v1"
    assert (event.issue_id, event.project_id) == (ISSUE, PROJECT)
    assert (event.sequence_id, event.title) == (42, "Fix login redirect loop")
    assert event.field == "state_id"
    assert (event.state_id, event.state_name, event.state_group) == (STATES[state], state, group)
    assert (event.actor_id, event.actor_name) == (ADA, "ada")
    assert event.updated_at is not None and event.updated_at.startswith("2026-11-20T")
    assert len(event.dedup_key) == 64


def test_a_state_change_through_the_rest_api_names_the_field_state() -> None:
    event = parse_event(sample_bytes("v1_state_via_api"))
    assert event.kind is EventKind.STATE_CHANGE
    assert event.field == "state"
    assert (event.state_id, event.state_name) == (STATES["To Analyse"], "To Analyse")
    assert (event.actor_id, event.actor_name) == ("00b4a3a5-0a0a-4fa3-a4b4-a5c1f7071465", "grace")


def test_another_field_is_other_field_without_state() -> None:
    event = parse_event(sample_bytes("v1_field_priority"))
    assert event.kind is EventKind.OTHER_FIELD
    assert event.field == "priority"
    assert (event.state_id, event.state_name, event.state_group) == (None, None, None)
    assert event.issue_id == ISSUE


def test_a_delete_needs_only_the_id() -> None:
    event = parse_event(sample_bytes("v1_deleted"))
    assert event.kind is EventKind.DELETED
    assert event.issue_id == "a2d33009-5414-418f-b1d5-4e1c4ff09ea8"
    assert (event.project_id, event.title, event.sequence_id) == (None, "", None)


def test_a_created_ticket_carries_its_first_state() -> None:
    event = parse_event(sample_bytes("v1_created"))
    assert event.kind is EventKind.CREATED
    assert (event.issue_id, event.sequence_id) == ("457d3866-237a-4cf3-a551-9bc755607240", 43)
    assert (event.state_id, event.state_name, event.state_group) == (
        STATES["Backlog"],
        "Backlog",
        "backlog",
    )


@pytest.mark.parametrize(
    ("name", "state", "event_id"),
    [
        ("v2_workitem_updated_state", "To Analyse", "f8e5cab7-908d-4fc7-a9e0-7faf7acc3c27"),
        ("v2_workitem_updated_stop", "STOP", "19912b18-1592-49a6-bcc2-60cc9025c872"),
    ],
)
def test_v2_state_changes_carry_the_state_id_only(name: str, state: str, event_id: str) -> None:
    event = parse_event(sample_bytes(name))
    assert event.kind is EventKind.STATE_CHANGE
    assert event.version == "v2"
    assert (event.issue_id, event.project_id, event.sequence_id) == (ISSUE, PROJECT, 42)
    assert event.field == "state_id"
    assert (event.state_id, event.state_name, event.state_group) == (STATES[state], None, None)
    assert (event.actor_id, event.actor_name) == (ADA, None)
    assert event.dedup_key == f"plane:v2:{event_id}"


@pytest.mark.parametrize(
    "event_name",
    ["workitem.updated", "work_item.updated", "WORK_ITEM.UPDATED", "issue.updated"],
)
def test_v2_event_names_match_loosely(event_name: str) -> None:
    payload = sample("v2_workitem_updated_state") | {"event": event_name}
    assert parse_event(encode(payload)).kind is EventKind.STATE_CHANGE


def test_the_v2_actor_is_read_from_an_actor_object_when_present() -> None:
    actor = {"id": "b9d23dcd-af28-4b51-9e29-459ae23d6d64", "display_name": "conveyor-bot"}
    payload = sample("v2_workitem_updated_state") | {"actor": actor}
    event = parse_event(encode(payload))
    assert (event.actor_id, event.actor_name) == (actor["id"], "conveyor-bot")


def test_a_v2_change_of_another_field_is_other_field() -> None:
    payload = sample("v2_workitem_updated_state") | {"previous_attributes": {"priority": "low"}}
    event = parse_event(encode(payload))
    assert (event.kind, event.field) == (EventKind.OTHER_FIELD, "priority")


def test_a_v2_delete_takes_the_id_from_the_envelope() -> None:
    payload = sample("v2_workitem_updated_state") | {
        "event": "workitem.deleted",
        "data": {},
        "previous_attributes": {},
    }
    event = parse_event(encode(payload))
    assert (event.kind, event.issue_id) == (EventKind.DELETED, ISSUE)


@pytest.mark.parametrize(
    "event_name", ["issue_comment", "project", "cycle", "workitem.comment.created"]
)
def test_events_about_other_things_are_not_an_issue(event_name: str) -> None:
    payload = {"event": event_name, "action": "created", "data": {"id": "x"}}
    event = parse_event(encode(payload))
    assert event.kind is EventKind.NOT_AN_ISSUE


def test_the_event_header_is_used_only_when_the_body_has_no_event() -> None:
    body = sample("v1_state_stop")
    assert parse_event(encode(body), event_header="project").kind is EventKind.STATE_CHANGE
    del body["event"]
    assert parse_event(encode(body), event_header="project").kind is EventKind.NOT_AN_ISSUE
    assert parse_event(encode(body), event_header="issue").kind is EventKind.STATE_CHANGE


def test_the_older_update_action_spelling_is_accepted() -> None:
    payload = sample("v1_state_stop") | {"action": "update"}
    assert parse_event(encode(payload)).kind is EventKind.STATE_CHANGE


def test_the_state_id_falls_back_to_data_state() -> None:
    payload = sample("v1_state_stop")
    payload["activity"]["new_value"] = None
    assert parse_event(encode(payload)).state_id == STATES["STOP"]
    payload["data"]["state"] = STATES["STOP"]  # a bare UUID, not expanded
    event = parse_event(encode(payload))
    assert (event.state_id, event.state_name) == (STATES["STOP"], None)


def test_a_data_state_newer_than_the_activity_does_not_name_the_new_state() -> None:
    # `data` is read when Plane sends; the ticket moved on since the STOP activity.
    payload = sample("v1_state_stop")
    payload["data"]["state"] = {
        "id": STATES["In Progress"],
        "name": "In Progress",
        "color": "#f59e0b",
        "group": "started",
    }
    event = parse_event(encode(payload))
    assert (event.state_id, event.state_name, event.state_group) == (STATES["STOP"], None, None)


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"\xff\xfe"])
def test_a_body_that_is_not_json_says_so(body: bytes) -> None:
    with pytest.raises(PayloadError, match="^body is not JSON$"):
        parse_event(body)


def test_a_json_body_that_is_not_an_object_says_so() -> None:
    with pytest.raises(PayloadError, match="not a JSON object"):
        parse_event(b"[1, 2]")


def test_a_body_over_the_limit_is_refused() -> None:
    with pytest.raises(PayloadError, match="larger than"):
        parse_event(b" " * (MAX_BODY_BYTES + 1))


def test_payload_error_is_an_integration_error() -> None:
    assert issubclass(PayloadError, IntegrationError)


def test_a_missing_issue_id_is_named() -> None:
    payload = sample("v1_state_stop")
    del payload["data"]["id"]
    with pytest.raises(PayloadError, match="^missing field: data.id$"):
        parse_event(encode(payload))


def test_several_missing_fields_are_all_named() -> None:
    payload = sample("v1_field_priority")
    del payload["data"]["project"]
    payload["activity"]["field"] = None
    with pytest.raises(PayloadError, match="^missing fields: data.project, activity.field$"):
        parse_event(encode(payload))


def test_a_state_change_without_a_new_state_names_it() -> None:
    payload = sample("v1_state_stop")
    payload["activity"]["new_value"] = None
    del payload["data"]["state"]
    with pytest.raises(PayloadError, match="^missing field: activity.new_value$"):
        parse_event(encode(payload))


def test_a_v2_state_change_without_a_state_id_names_it() -> None:
    payload = sample("v2_workitem_updated_state")
    del payload["data"]["state_id"]
    with pytest.raises(PayloadError, match="^missing field: data.state_id$"):
        parse_event(encode(payload))


def test_missing_event_and_action_are_named() -> None:
    with pytest.raises(PayloadError, match="^missing field: event$"):
        parse_event(b'{"data": {}}')
    with pytest.raises(PayloadError, match="^missing field: action$"):
        parse_event(b'{"event": "issue", "data": {}}')


def test_data_that_is_not_an_object_is_named() -> None:
    with pytest.raises(PayloadError, match="data is not an object"):
        parse_event(b'{"event": "issue", "action": "updated", "data": [1]}')


# --- dedup keys ---------------------------------------------------------------------


def test_a_retry_with_a_new_delivery_header_has_the_same_key() -> None:
    # X-Plane-Delivery is not part of the body, so identical content means identical key.
    body = sample_bytes("v1_state_stop")
    reserialised = encode(json.loads(body))
    assert parse_event(body).dedup_key == parse_event(reserialised).dedup_key


def test_the_content_key_follows_the_documented_formula() -> None:
    event = parse_event(sample_bytes("v1_state_stop"))
    updated_at = sample("v1_state_stop")["data"]["updated_at"]
    content = f"plane|{ISSUE}|state_id|{STATES['STOP']}|{updated_at}|updated"
    assert event.dedup_key == hashlib.sha256(content.encode()).hexdigest()


def test_a_different_updated_at_makes_a_different_key() -> None:
    payload = sample("v1_state_stop")
    first = parse_event(encode(payload)).dedup_key
    payload["data"]["updated_at"] = "2026-11-20T11:41:07.000001Z"
    assert parse_event(encode(payload)).dedup_key != first


def test_two_fields_changed_by_one_drag_have_different_keys() -> None:
    payload = sample("v1_state_stop")
    sort_order = json.loads(json.dumps(payload))
    sort_order["activity"] |= {"field": "sort_order", "old_value": 75535.0, "new_value": 85535.0}
    assert parse_event(encode(payload)).dedup_key != parse_event(encode(sort_order)).dedup_key


def test_a_v2_key_ignores_the_delivery_id() -> None:
    payload = sample("v2_workitem_updated_stop")
    retry = payload | {"delivery_id": "0d5bb7de-3b49-4f2b-9f6e-59f1c0b4f1aa"}
    assert parse_event(encode(payload)).dedup_key == parse_event(encode(retry)).dedup_key


def test_a_v2_delivery_without_event_id_falls_back_to_content() -> None:
    payload = sample("v2_workitem_updated_stop")
    del payload["event_id"]
    assert len(parse_event(encode(payload)).dedup_key) == 64


# --- task keys ----------------------------------------------------------------------


def test_task_key_forms() -> None:
    assert task_key("PROJ", 42, ISSUE) == "PROJ-42"
    assert task_key(None, 42, ISSUE) == "plane-42"
    assert task_key("", 42, ISSUE) == "plane-42"
    assert task_key("PROJ", None, ISSUE) == f"plane-{ISSUE}"
    assert task_key(None, None, ISSUE) == f"plane-{ISSUE}"
    # A UUID that starts with digits is not ticket #20617384's key.
    assert task_key(None, None, "20617384-0000-4000-8000-000000000000") != task_key(
        None, 20617384, ISSUE
    )


def test_sequence_ids_of_two_projects_without_identifiers_never_share_a_key() -> None:
    a, b = "5c7db7b1-1256-4e76-bfdc-fb3b34bf0180", "9e1d0c44-0000-4000-8000-000000000001"
    twin = "5c7db7b1-ffff-4000-8000-000000000002"  # same 8-character prefix as `a`
    assert project_tags([a], {}) == {}  # one such project: plain plane-42
    assert project_tags([a, b], {b: "WEB"}) == {}  # the other has its identifier
    tags = project_tags([a, b], {})
    assert tags == {a: "5c7db7b1", b: "9e1d0c44"}
    assert task_key(None, 42, ISSUE, tags[a]) == "plane-5c7db7b1-42"
    assert task_key(None, 42, ISSUE, tags[a]) != task_key(None, 42, ISSUE, tags[b])
    assert task_key("PROJ", 42, ISSUE, tags[a]) == "PROJ-42"  # an identifier wins
    clash = project_tags([a, b, twin], {})
    assert clash[a] == a and clash[twin] == twin and clash[b] == "9e1d0c44"


async def test_the_tracker_keys_ticket_42_of_two_bare_projects_apart() -> None:
    import httpx

    from integrations.trackers.plane.settings import PlaneSettings
    from integrations.trackers.plane.tracker import PlaneTracker

    payload = sample("v2_workitem_updated_stop")
    first = payload["data"]["project"]
    other = "9e1d0c44-0000-4000-8000-000000000001"
    settings = PlaneSettings(webhook_secret="x" * 16)
    async with httpx.AsyncClient() as http:
        tracker = PlaneTracker(settings, http, {first: "app", other: "web"})
        one = tracker.parse({}, encode(payload))
        payload["data"]["project"] = other
        payload["data"]["id"] = "11111111-2222-4333-8444-555555555555"
        two = tracker.parse({}, encode(payload))
    assert one.ticket is not None and two.ticket is not None
    assert one.ticket.ref.key == f"plane-{first[:8]}-42"
    assert two.ticket.ref.key == "plane-9e1d0c44-42"


# --- build_v1_payload ---------------------------------------------------------------


def build(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "issue_id": ISSUE,
        "project_id": PROJECT,
        "sequence_id": 42,
        "title": "Fix login redirect loop",
        "state_id": STATES["STOP"],
        "state_name": "STOP",
        "state_group": "cancelled",
        "old_state_id": STATES["In Progress"],
        "actor_id": ADA,
        "actor_name": "ada",
        "updated_at": "2026-11-20T11:40:52.118034Z",
    }
    return build_v1_payload(**(arguments | overrides))


def test_build_v1_payload_round_trips_through_parse_event() -> None:
    body = encode(build())
    event = parse_event(body, event_header="issue")
    assert event.kind is EventKind.STATE_CHANGE
    assert (event.version, event.issue_id, event.project_id) == ("v1", ISSUE, PROJECT)
    assert (event.sequence_id, event.title, event.field) == (
        42,
        "Fix login redirect loop",
        "state_id",
    )
    assert (event.state_id, event.state_name, event.state_group) == (
        STATES["STOP"],
        "STOP",
        "cancelled",
    )
    assert (event.actor_id, event.actor_name) == (ADA, "ada")
    assert event.updated_at == "2026-11-20T11:40:52.118034Z"
    assert verify_signature(SECRET, body, sign(SECRET, body))


def test_build_v1_payload_has_the_shape_of_the_recorded_samples() -> None:
    built, recorded = build(), sample("v1_state_stop")
    assert built.keys() == recorded.keys()
    assert built["activity"].keys() == recorded["activity"].keys()
    assert built["activity"]["actor"].keys() == recorded["activity"]["actor"].keys()
    assert built["data"].keys() == recorded["data"].keys()
    assert built["data"]["state"].keys() == recorded["data"]["state"].keys()
    assert built["activity"]["old_value"] == STATES["In Progress"]


def test_build_v1_payload_can_mimic_a_rest_api_change() -> None:
    event = parse_event(encode(build(field="state", workspace_id="w-1")))
    assert (event.kind, event.field) == (EventKind.STATE_CHANGE, "state")


def test_build_v1_payload_is_deterministic() -> None:
    assert encode(build()) == encode(build())
