"""`conveyor send plane`'s deliveries, read back by the same parser the webhook uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.cli.senders import describe_answer
from bot.cli.senders import plane_delivery as build_delivery
from bot.errors import ConfigError, UsageError
from bot.settings import Settings, settings_from_dict
from integrations.trackers.plane import webhook as plane
from integrations.trackers.plane.payloads import (
    DeliveryError,
    Ticket,
    sequence_id,
    stable_id,
    state_group,
)

SECRET = "plane_wh_unit_0123456789"
PROJECT = "5c7db7b1-1256-4e76-bfdc-fb3b34bf0180"
OTHER = "0b1c5e33-5c27-4d7a-8a2e-2f6f0a3c9d10"
ISSUE = "7f0e2a44-1f55-4c55-9a3c-5b2b1d8e6f21"
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def settings(**plane_settings: object) -> Settings:
    return settings_from_dict(
        {
            "trackers": {"plane": {"webhook_secret": SECRET, **plane_settings}},
            "repos": [
                {"name": "none", "path": "/nowhere"},
                {"name": "app", "path": "/srv/app", "tracker_project": PROJECT},
            ],
        }
    )


def read(ticket: Ticket, now: datetime = NOW, s: Settings | None = None) -> plane.PlaneEvent:
    delivery = build_delivery(s or settings(), ticket, now, "d-1")
    assert plane.verify_signature(SECRET, delivery.body, delivery.headers["X-Plane-Signature"])
    assert delivery.headers["X-Plane-Event"] == "issue"
    assert delivery.headers["X-Plane-Delivery"] == "d-1"
    return plane.parse_event(delivery.body, event_header="issue")


def test_a_stop_is_a_signed_state_change_in_the_cancelled_group() -> None:
    event = read(Ticket(key="PROJ-42", state="STOP", actor="ada"))
    assert event.kind is plane.EventKind.STATE_CHANGE
    assert (event.sequence_id, event.project_id) == (42, PROJECT)  # the first mapped repo's
    assert (event.state_name, event.state_group) == ("STOP", "cancelled")
    assert event.actor_name == "ada"
    assert event.issue_id == stable_id("issue", "PROJ-42")


def test_repeated_sends_hit_one_ticket_but_are_fresh_deliveries() -> None:
    first = read(Ticket(key="PROJ-42", state="To Analyse"))
    again = read(Ticket(key="PROJ-42", state="To Analyse"), NOW + timedelta(microseconds=1))
    assert first.issue_id == again.issue_id and first.state_id == again.state_id
    assert first.dedup_key != again.dedup_key
    assert first.state_group == "unstarted"


def test_explicit_ids_and_other_states() -> None:
    event = read(
        Ticket(key="ops-7", state="In Review", project_id=OTHER, issue_id=ISSUE, title="T")
    )
    assert (event.issue_id, event.project_id, event.title) == (ISSUE, OTHER, "T")
    assert event.state_group == "started"


def test_state_groups_follow_the_configured_names() -> None:
    plane_settings = settings(stop_states=["Halt"], start_states=["Go"]).trackers.plane
    assert state_group(plane_settings, "halt") == "cancelled"
    assert state_group(plane_settings, "GO") == "unstarted"
    assert state_group(plane_settings, "STOP") == "started"


@pytest.mark.parametrize("key", ["PROJ", "PROJ-", "-42", "PROJ-4x", "PROJ 42"])
def test_a_key_without_a_ticket_number_is_refused(key: str) -> None:
    with pytest.raises(DeliveryError, match="must look like PROJ-42"):
        sequence_id(key)


def test_no_secret_or_no_project_is_said_in_one_line() -> None:
    with pytest.raises(ConfigError, match="no Plane webhook secret"):
        build_delivery(Settings(), Ticket(key="PROJ-1", state="STOP", project_id=OTHER), NOW, "d")
    no_repos = settings_from_dict({"trackers": {"plane": {"webhook_secret": SECRET}}})
    with pytest.raises(UsageError, match="pass --project"):
        build_delivery(no_repos, Ticket(key="PROJ-1", state="STOP"), NOW, "d")


def test_answers_read_as_one_line() -> None:
    assert describe_answer(202, {"outcome": "started", "task": "PROJ-42"}) == "202 started PROJ-42"
    assert (
        describe_answer(202, {"outcome": "ignored", "task": None, "reason": "unmapped_project"})
        == "202 ignored - reason=unmapped_project"
    )
    assert (
        describe_answer(202, {"outcome": "stop_requested", "task": "P-1", "stop_id": "abc"})
        == "202 stop_requested P-1 stop_id=abc"
    )
