"""The Gitea/Forgejo adapter's webhook side: signatures, and every recorded delivery read."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import ValidationError

from integrations.trackers.base import (
    BadPayload,
    BadSignature,
    EventKind,
    Signal,
    TicketRef,
    Tracker,
)
from integrations.trackers.gitea import ADAPTER, GiteaSettings, GiteaTracker, build
from integrations.trackers.gitea.payloads import build_delivery
from integrations.trackers.signing import hmac_sha256_hex

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "gitea"
DELIVERIES: dict[str, dict[str, str]] = json.loads((SAMPLES / "deliveries.json").read_text())
SECRET = "gitea-webhook-secret-71c0d2"
PROJECTS = {"acme/web-app": "app"}
REF_42 = TicketRef("gitea", "acme/web-app", "acme/web-app#42", "app#42")
SIGNATURES = ("X-Gitea-Signature", "X-Gogs-Signature", "X-Forgejo-Signature")


def sample_body(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def signed(body: bytes, headers: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    """The signature headers Gitea adds (empty ones when the webhook has no secret)."""
    sha256 = hmac_sha256_hex(secret, body) if secret else ""
    sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest() if secret else ""
    prefixes = {name.rsplit("-", 1)[0] for name in headers if name.endswith("-Delivery")}
    extra = {f"{p}-Signature": sha256 for p in prefixes if not p.startswith("X-GitHub")}
    return (
        headers
        | extra
        | {"X-Hub-Signature": f"sha1={sha1}", "X-Hub-Signature-256": f"sha256={sha256}"}
    )


def delivery(name: str, body: bytes | None = None) -> tuple[dict[str, str], bytes]:
    raw = sample_body(name) if body is None else body
    return signed(raw, dict(DELIVERIES[name])), raw


def edited(name: str, change: Any) -> bytes:
    doc = json.loads(sample_body(name))
    change(doc)
    return json.dumps(doc, indent=2).encode()


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


def make(http: httpx.AsyncClient, **settings: Any) -> GiteaTracker:
    values = {"webhook_secret": SECRET, "bot_login": "conveyor-bot"} | settings
    return build(GiteaSettings(**values), http, PROJECTS)


@pytest.fixture
def gitea(http: httpx.AsyncClient) -> GiteaTracker:
    return make(http)


def parse(gitea: GiteaTracker, name: str, body: bytes | None = None) -> Any:
    headers, raw = delivery(name, body)
    gitea.verify(headers, raw, now=0.0)
    return gitea.parse(headers, raw)


# -- signatures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keep", ["X-Gitea-Signature", "X-Forgejo-Signature", "X-Hub-Signature-256"]
)
def test_any_one_of_the_signature_headers_verifies(gitea: GiteaTracker, keep: str) -> None:
    headers, body = delivery("forgejo_issue_label_updated_stop.json")
    only = {
        k: v for k, v in headers.items() if not k.endswith("Signature-256") and "Signature" not in k
    }
    gitea.verify(only | {keep: headers[keep]}, body, now=0.0)


def test_the_hex_signature_is_bare(gitea: GiteaTracker) -> None:
    headers, body = delivery("issue_label_updated_stop.json")
    headers["X-Gitea-Signature"] = "sha256=" + headers["X-Gitea-Signature"]
    with pytest.raises(BadSignature, match="X-Gitea-Signature does not match"):
        gitea.verify(headers, body, now=0.0)


def test_a_webhook_without_a_secret_sends_empty_headers_and_is_refused(
    gitea: GiteaTracker,
) -> None:
    headers, body = delivery("issue_label_updated_stop.json")
    unsigned = signed(body, dict(DELIVERIES["issue_label_updated_stop.json"]), secret="")
    assert unsigned["X-Gitea-Signature"] == "" and unsigned["X-Hub-Signature-256"] == "sha256="
    with pytest.raises(BadSignature, match="give the webhook a secret") as refused:
        gitea.verify(unsigned, body, now=0.0)
    assert refused.value.status == 401
    assert "CONVEYOR_GITEA_WEBHOOK_SECRET" in refused.value.message


def test_missing_signature_headers_are_refused(gitea: GiteaTracker) -> None:
    body = sample_body("issue_label_updated_stop.json")
    with pytest.raises(BadSignature, match="no signature"):
        gitea.verify(dict(DELIVERIES["issue_label_updated_stop.json"]), body, now=0.0)


@pytest.mark.parametrize("name", ["X-Gitea-Signature", "X-Hub-Signature-256"])
def test_a_signature_for_another_secret_is_refused(gitea: GiteaTracker, name: str) -> None:
    headers, body = delivery("issue_label_updated_stop.json")
    wrong = signed(body, dict(DELIVERIES["issue_label_updated_stop.json"]), secret="other")
    only = {k: v for k, v in headers.items() if "Signature" not in k} | {name: wrong[name]}
    with pytest.raises(BadSignature, match=f"{name} does not match the body"):
        gitea.verify(only, body, now=0.0)


async def test_no_secret_configured_refuses_everything(http: httpx.AsyncClient) -> None:
    headers, body = delivery("issue_label_updated_stop.json")
    with pytest.raises(BadSignature, match="no webhook secret is configured"):
        make(http, webhook_secret="").verify(headers, body, now=0.0)


def test_a_form_delivery_is_told_to_use_json_before_its_signature_is_checked(
    gitea: GiteaTracker,
) -> None:
    # Gitea signs the JSON inside the form, not the form: it could never verify.
    payload = sample_body("issue_label_updated_stop.json")
    form = urlencode({"payload": payload.decode()}).encode()
    headers = signed(payload, dict(DELIVERIES["issue_label_updated_stop.json"]))
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    with pytest.raises(BadPayload, match="content type to application/json") as refused:
        gitea.verify(headers, form, now=0.0)
    assert refused.value.status == 400 and "Gitea/Forgejo webhook settings" in refused.value.message
    with pytest.raises(BadPayload, match="form-encoded"):
        gitea.parse(headers, form)


# -- every recorded delivery -------------------------------------------------------------

EXPECTED = {
    # sample: (kind, signal, ignore, labels_to_diff)
    "issue_label_updated_start.json": (
        EventKind.STATE_CHANGE,
        None,
        None,
        ("bug", "conveyor:analyse"),
    ),
    "issue_label_updated_stop.json": (
        EventKind.STATE_CHANGE,
        None,
        None,
        ("bug", "conveyor:analyse", "conveyor:stop"),
    ),
    "forgejo_issue_label_updated_stop.json": (
        EventKind.STATE_CHANGE,
        None,
        None,
        ("bug", "conveyor:analyse", "conveyor:stop"),
    ),
    "issue_label_updated_removed.json": (EventKind.STATE_CHANGE, None, None, ("bug",)),
    "issue_label_updated_by_bot.json": (EventKind.STATE_CHANGE, None, "own_change", None),
    "issue_label_cleared.json": (EventKind.OTHER, None, "not_a_state_change", None),
    "issues_closed.json": (EventKind.STATE_CHANGE, None, "closed_not_stopping", None),
    "issues_reopened.json": (EventKind.OTHER, None, "not_a_state_change", None),
    "issues_opened_with_start_label.json": (EventKind.CREATED, Signal.START, None, None),
    "pull_request_label_updated.json": (EventKind.OTHER, None, "pull_request", None),
}


def test_every_recorded_delivery_has_an_expectation() -> None:
    assert set(EXPECTED) == set(DELIVERIES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_recorded_delivery_means_what_it_should(gitea: GiteaTracker, name: str) -> None:
    event = parse(gitea, name)
    assert (event.kind, event.signal, event.ignore, event.labels_to_diff) == EXPECTED[name]
    assert event.tracker == "gitea"
    assert event.delivery_id == DELIVERIES[name]["X-Gitea-Delivery"]
    assert event.delivery_key == f"gitea:{event.delivery_id}"


def test_a_label_update_carries_the_ticket_and_the_actor(gitea: GiteaTracker) -> None:
    event = parse(gitea, "issue_label_updated_stop.json")
    ticket = event.ticket
    assert ticket.ref == REF_42
    assert ticket.title == "Fix login redirect loop"
    assert ticket.description.endswith("after signing in & keep the session.")  # Go's \u0026
    assert ticket.url == "https://git.example.test/acme/web-app/issues/42"
    assert ticket.labels == ("bug", "conveyor:analyse", "conveyor:stop")
    assert ticket.signal is Signal.STOP and ticket.state is None
    assert ticket.updated_at == datetime(2026, 11, 21, 10, 2, 30, tzinfo=UTC)
    assert ticket.updated_at.utcoffset() == timedelta(hours=1)  # the server's zone, kept
    assert (event.actor, event.actor_id) == ("ada", "7")


def test_what_the_label_list_asks_is_left_to_signal_for_labels(gitea: GiteaTracker) -> None:
    event = parse(gitea, "issue_label_updated_start.json")
    assert event.signal is None  # a full list is not an edge: the intake diffs it
    assert gitea.signal_for_labels(frozenset({"conveyor:analyse"})) is Signal.START
    assert gitea.signal_for_labels(frozenset({"conveyor:analyse", "conveyor:stop"})) is Signal.STOP
    assert gitea.signal_for_labels(frozenset({"bug"})) is None


def test_a_cleared_list_shows_no_labels(gitea: GiteaTracker) -> None:
    assert parse(gitea, "issue_label_cleared.json").ticket.labels == ()


def test_null_labels_are_no_labels(gitea: GiteaTracker) -> None:
    body = edited("issue_label_updated_start.json", lambda d: d["issue"].update(labels=None))
    assert parse(gitea, "issue_label_updated_start.json", body).labels_to_diff == ()


async def test_closing_stops_only_when_stop_on_close_is_any(http: httpx.AsyncClient) -> None:
    event = parse(make(http, stop_on_close="any"), "issues_closed.json")
    assert (event.signal, event.ignore, event.state_after) == (Signal.STOP, None, "closed")
    assert event.ticket.signal is Signal.STOP
    assert parse(make(http), "issues_closed.json").ticket.signal is None


def test_an_opened_issue_with_a_start_label_starts(gitea: GiteaTracker) -> None:
    event = parse(gitea, "issues_opened_with_start_label.json")
    assert event.ticket.ref.key == "app#43"
    body = edited("issues_opened_with_start_label.json", lambda d: d["issue"].update(labels=[]))
    event = parse(gitea, "issues_opened_with_start_label.json", body)
    assert (event.kind, event.signal, event.ignore) == (
        EventKind.CREATED,
        None,
        "not_a_state_change",
    )


def test_forgejo_headers_alone_are_enough(gitea: GiteaTracker) -> None:
    headers, body = delivery("forgejo_issue_label_updated_stop.json")
    forgejo = {k: v for k, v in headers.items() if k.startswith(("X-Forgejo", "Content-Type"))}
    assert "X-Gitea-Delivery" not in forgejo
    gitea.verify(forgejo, body, now=0.0)
    event = gitea.parse(forgejo, body)
    assert event.delivery_key == "gitea:" + headers["X-Forgejo-Delivery"]
    assert event.ticket.url.startswith("https://code.example.test/")


def test_the_bots_own_changes_are_ignored(gitea: GiteaTracker) -> None:
    event = parse(gitea, "issue_label_updated_by_bot.json")
    assert (event.ignore, event.actor, event.ticket.ref) == ("own_change", "conveyor-bot", REF_42)


def test_an_unmapped_repository_is_ignored(gitea: GiteaTracker) -> None:
    body = edited(
        "issue_label_updated_stop.json", lambda d: d["repository"].update(full_name="other/x")
    )
    event = parse(gitea, "issue_label_updated_stop.json", body)
    assert (event.ignore, event.ticket, event.labels_to_diff) == ("unmapped_project", None, None)


def test_comments_on_pull_requests_and_other_events_are_not_tasks(gitea: GiteaTracker) -> None:
    headers, body = delivery("issue_label_updated_stop.json")
    comment = edited("issue_label_updated_stop.json", lambda d: d.update(is_pull=True))
    assert gitea.parse(headers | {"X-Gitea-Event": "issue_comment"}, comment).ignore == (
        "pull_request"
    )
    assert gitea.parse(headers | {"X-Gitea-Event": "push"}, body).ignore == "not_an_issue_event"
    pull = edited(
        "issue_label_updated_stop.json",
        lambda d: d["issue"].update(pull_request={"merged": False, "merged_at": None}),
    )
    assert gitea.parse(headers, pull).ignore == "pull_request"


# -- bad bodies -------------------------------------------------------------------------


def refused(gitea: GiteaTracker, body: bytes, **headers: str) -> BadPayload:
    base = dict(DELIVERIES["issue_label_updated_stop.json"]) | headers
    with pytest.raises(BadPayload) as caught:
        gitea.parse(base, body)
    return caught.value


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not JSON"),
        (b'"label_updated"', "not a JSON object"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    ],
)
def test_bodies_that_are_not_a_json_object(gitea: GiteaTracker, body: bytes, message: str) -> None:
    assert message in refused(gitea, body).message


def test_missing_delivery_and_event_headers_are_named(gitea: GiteaTracker) -> None:
    body = sample_body("issue_label_updated_stop.json")
    bare = {"Content-Type": "application/json", "X-Gitea-Event": "issues"}
    with pytest.raises(BadPayload, match="X-Gitea-Delivery"):
        gitea.parse(bare, body)
    with pytest.raises(BadPayload, match="X-Gitea-Event"):
        gitea.parse({"X-Gitea-Delivery": "d"}, body)


@pytest.mark.parametrize("number", ["42", False, 0, -1, 10**10, 1.5])
def test_an_issue_number_must_be_a_positive_integer(gitea: GiteaTracker, number: Any) -> None:
    body = edited("issue_label_updated_stop.json", lambda d: d["issue"].update(number=number))
    assert "issue.number" in refused(gitea, body).message


@pytest.mark.parametrize("name", ["acme", "acme/../x", "acme/..", "ac me/web-app", 3])
def test_a_repository_must_look_like_owner_slash_name(gitea: GiteaTracker, name: Any) -> None:
    body = edited("issue_label_updated_stop.json", lambda d: d["repository"].update(full_name=name))
    assert "repository.full_name" in refused(gitea, body).message


# -- the port and the settings ------------------------------------------------------------


async def test_it_is_a_tracker_built_by_its_adapter(http: httpx.AsyncClient) -> None:
    settings = ADAPTER.settings.model_validate({"webhook_secret": SECRET, "token": "t"})
    gitea: Tracker = ADAPTER.build(settings, http, PROJECTS)
    assert ADAPTER.name == gitea.name == "gitea"
    assert gitea.has_api is False  # a token without base_url has nowhere to go
    headers, body = delivery("issue_label_updated_stop.json")
    gitea.verify(headers, body, now=0.0)
    event = gitea.parse(headers, body)
    assert await gitea.complete(event) is event
    assert ADAPTER.env == {
        "CONVEYOR_GITEA_WEBHOOK_SECRET": "webhook_secret",
        "CONVEYOR_GITEA_TOKEN": "token",
        "CONVEYOR_GITEA_BASE_URL": "base_url",
    }


def test_settings_defaults_are_the_contracts() -> None:
    settings = GiteaSettings()
    assert (settings.base_url, settings.stop_on_close) == ("", "never")
    assert settings.start_labels == ("conveyor:analyse",)
    assert settings.stop_labels == ("conveyor:stop",)
    assert settings.confirm_deploy_labels == ("conveyor:deploy",)
    assert GiteaSettings(base_url="https://git.example.test/api/v1/").base_url == (
        "https://git.example.test"
    )
    assert GiteaSettings(base_url="https://example.test/gitea/").base_url == (
        "https://example.test/gitea"
    )


@pytest.mark.parametrize(
    "values",
    [{"stop_on_close": "not_planned"}, {"base_url": "git.example.test"}, {"api_url": "x"}],
)
def test_bad_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GiteaSettings(**values)


# -- `conveyor send gitea` --------------------------------------------------------------

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("action", "label", "labels", "kind", "diff"),
    [
        (
            "labeled",
            "conveyor:analyse",
            ("bug",),
            EventKind.STATE_CHANGE,
            ("bug", "conveyor:analyse"),
        ),
        (
            "unlabeled",
            "conveyor:analyse",
            ("bug", "conveyor:analyse"),
            EventKind.STATE_CHANGE,
            ("bug",),
        ),
        ("closed", None, ("bug",), EventKind.STATE_CHANGE, None),
    ],
)
@pytest.mark.parametrize("forgejo", [False, True])
def test_sent_deliveries_read_back(
    gitea: GiteaTracker,
    action: str,
    label: str | None,
    labels: tuple[str, ...],
    kind: EventKind,
    diff: tuple[str, ...] | None,
    forgejo: bool,
) -> None:
    headers, body = build_delivery(
        secret=SECRET,
        full_name="acme/web-app",
        number=42,
        label=label,
        action=action,
        labels=labels,
        delivery="d-7",
        now=NOW,
        forgejo=forgejo,
    )
    gitea.verify(headers, body, now=0.0)
    event = gitea.parse(headers, body)
    assert (event.kind, event.labels_to_diff, event.delivery_key) == (kind, diff, "gitea:d-7")
    assert event.ticket.ref == REF_42 and event.ticket.updated_at == NOW
    assert ("X-Forgejo-Signature" in headers) is forgejo


def test_a_sent_delivery_is_headed_and_encoded_as_gitea_does() -> None:
    headers, body = build_delivery(
        secret=SECRET,
        full_name="acme/web-app",
        number=42,
        label="conveyor:stop",
        title="Fish & <chips>",
        now=NOW,
    )
    recorded = DELIVERIES["issue_label_updated_stop.json"]
    assert set(headers) == set(recorded) - {"User-Agent"} | {
        "X-Gitea-Signature",
        "X-Gogs-Signature",
        "X-Hub-Signature",
        "X-Hub-Signature-256",
    }
    assert headers["X-Gitea-Event-Type"] == "issue_label"
    assert (
        headers["X-Gitea-Signature"] == headers["X-Gogs-Signature"] == hmac_sha256_hex(SECRET, body)
    )
    assert b'"title": "Fish \\u0026 \\u003cchips\\u003e"' in body and body.startswith(
        b'{\n  "action"'
    )
    sent, sample = json.loads(body), json.loads(sample_body("issue_label_updated_stop.json"))
    assert list(sent) == list(sample)
    assert set(sent["issue"]) <= set(sample["issue"])
    assert sent["issue"]["title"] == "Fish & <chips>"


def test_a_sent_delivery_without_a_secret_is_unsigned_like_gitea() -> None:
    headers, _ = build_delivery(secret="", full_name="a/b", number=1, label="x")
    assert headers["X-Gitea-Signature"] == "" and headers["X-Hub-Signature-256"] == "sha256="
