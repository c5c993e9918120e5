"""The GitHub adapter's webhook side: signatures, and every recorded delivery read back."""

from __future__ import annotations

import hashlib
import hmac
import json
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
    Signal,
    Ticket,
    TicketRef,
    Tracker,
)
from integrations.trackers.github import ADAPTER, GitHubSettings, GitHubTracker, build
from integrations.trackers.github.payloads import build_delivery
from integrations.trackers.signing import hmac_sha256_hex, signature_matches

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "github"
DELIVERIES: dict[str, dict[str, str]] = json.loads((SAMPLES / "deliveries.json").read_text())
SECRET = "gh-webhook-secret-3f9a0c2e7b"
PROJECTS = {"acme/web-app": "app"}
REF_42 = TicketRef("github", "acme/web-app", "acme/web-app#42", "app#42")


def sample_body(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def signed(body: bytes, headers: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return headers | {
        "X-Hub-Signature": f"sha1={sha1}",
        "X-Hub-Signature-256": f"sha256={hmac_sha256_hex(secret, body)}",
    }


def delivery(name: str, body: bytes | None = None) -> tuple[dict[str, str], bytes]:
    """A recorded delivery: its headers (signed) and body."""
    raw = sample_body(name) if body is None else body
    return signed(raw, dict(DELIVERIES[name])), raw


def edited(name: str, change: Any) -> bytes:
    doc = json.loads(sample_body(name))
    change(doc)
    return json.dumps(doc).encode()


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def github(http: httpx.AsyncClient) -> GitHubTracker:
    return make(http)


def make(http: httpx.AsyncClient, **settings: Any) -> GitHubTracker:
    values = {"webhook_secret": SECRET, "bot_login": "conveyor-bot"} | settings
    return build(GitHubSettings(**values), http, PROJECTS)


def parse(github: GitHubTracker, name: str, body: bytes | None = None) -> Any:
    headers, raw = delivery(name, body)
    github.verify(headers, raw, now=0.0)
    return github.parse(headers, raw)


# -- signatures -------------------------------------------------------------------------


def test_the_trackers_md_test_vector() -> None:
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    digest = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert hmac_sha256_hex(secret, body) == digest
    assert signature_matches(secret, body, f"sha256={digest}", prefix="sha256=")


async def test_the_test_vector_passes_verify(http: httpx.AsyncClient) -> None:
    github = make(http, webhook_secret="It's a Secret to Everybody")
    digest = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    github.verify({"X-Hub-Signature-256": f"sha256={digest}"}, b"Hello, World!", now=0.0)
    with pytest.raises(BadSignature):
        github.verify({"X-Hub-Signature-256": f"sha256={digest}"}, b"Hello, World?", now=0.0)


def test_a_signature_for_another_secret_is_refused(github: GitHubTracker) -> None:
    headers, body = delivery("issues_labeled_stop.json")
    headers = signed(body, headers, secret="someone-elses-secret")
    with pytest.raises(BadSignature, match="does not match the body") as refused:
        github.verify(headers, body, now=0.0)
    assert refused.value.status == 401
    assert "CONVEYOR_GITHUB_WEBHOOK_SECRET" in refused.value.message


def test_a_body_changed_after_signing_is_refused(github: GitHubTracker) -> None:
    headers, body = delivery("issues_labeled_start.json")
    with pytest.raises(BadSignature):
        github.verify(headers, body.replace(b"conveyor:analyse", b"conveyor:stop"), now=0.0)


@pytest.mark.parametrize("value", [None, "", "   ", "sha256=", "757107ea0eb2"])
def test_a_missing_empty_or_unprefixed_signature_is_refused(
    github: GitHubTracker, value: str | None
) -> None:
    headers, body = delivery("issues_labeled_stop.json")
    headers.pop("X-Hub-Signature-256")
    headers.pop("X-Hub-Signature")
    if value is not None:
        headers["X-Hub-Signature-256"] = value
    with pytest.raises(BadSignature) as refused:
        github.verify(headers, body, now=0.0)
    assert "X-Hub-Signature-256" in refused.value.message


def test_sha1_alone_is_not_enough(github: GitHubTracker) -> None:
    headers, body = delivery("issues_labeled_stop.json")
    headers.pop("X-Hub-Signature-256")
    with pytest.raises(BadSignature, match="only X-Hub-Signature"):
        github.verify(headers, body, now=0.0)


async def test_no_secret_configured_refuses_everything(http: httpx.AsyncClient) -> None:
    github = make(http, webhook_secret="")
    headers, body = delivery("issues_labeled_stop.json")
    with pytest.raises(BadSignature, match="CONVEYOR_GITHUB_WEBHOOK_SECRET"):
        github.verify(signed(body, headers, secret=""), body, now=0.0)


def test_header_names_are_case_insensitive(github: GitHubTracker) -> None:
    headers, body = delivery("issues_labeled_stop.json")
    lowered = {name.lower(): value for name, value in headers.items()}
    github.verify(lowered, body, now=0.0)
    assert github.parse(lowered, body).signal is Signal.STOP


# -- every recorded delivery -------------------------------------------------------------

EXPECTED = {
    # sample: (kind, signal, ignore, state_after)
    "issues_labeled_start.json": (EventKind.STATE_CHANGE, Signal.START, None, "conveyor:analyse"),
    "issues_labeled_stop.json": (EventKind.STATE_CHANGE, Signal.STOP, None, "conveyor:stop"),
    "issues_labeled_confirm_deploy.json": (
        EventKind.STATE_CHANGE,
        Signal.CONFIRM_DEPLOY,
        None,
        "conveyor:deploy",
    ),
    "issues_labeled_other.json": (EventKind.STATE_CHANGE, None, "label_not_handled", "bug"),
    "issues_labeled_by_bot.json": (EventKind.STATE_CHANGE, None, "own_change", None),
    "issues_unlabeled.json": (EventKind.OTHER, None, "not_a_state_change", None),
    "issues_edited.json": (EventKind.OTHER, None, "not_a_state_change", None),
    "issues_reopened.json": (EventKind.OTHER, None, "not_a_state_change", None),
    "issues_closed_not_planned.json": (EventKind.STATE_CHANGE, Signal.STOP, None, "closed"),
    "issues_closed_completed.json": (
        EventKind.STATE_CHANGE,
        None,
        "closed_not_stopping",
        "closed",
    ),
    "issues_opened_with_start_label.json": (EventKind.CREATED, Signal.START, None, None),
    "issues_deleted.json": (EventKind.DELETED, None, None, None),
    "ping.json": (EventKind.OTHER, None, "ping", None),
    "pull_request_labeled.json": (EventKind.OTHER, None, "pull_request", None),
    "issue_comment_on_pull_request.json": (EventKind.OTHER, None, "pull_request", None),
}


def test_every_recorded_delivery_has_an_expectation() -> None:
    assert set(EXPECTED) == set(DELIVERIES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_recorded_delivery_means_what_it_should(github: GitHubTracker, name: str) -> None:
    event = parse(github, name)
    assert (event.kind, event.signal, event.ignore, event.state_after) == EXPECTED[name]
    assert event.tracker == "github"
    assert event.delivery_id == DELIVERIES[name]["X-GitHub-Delivery"]
    assert event.delivery_key == f"github:{event.delivery_id}"
    assert event.labels_to_diff is None


def test_a_labeled_delivery_carries_the_ticket_and_the_actor(github: GitHubTracker) -> None:
    event = parse(github, "issues_labeled_start.json")
    assert event.ticket == Ticket(
        ref=REF_42,
        title="Fix login redirect loop",
        description=json.loads(sample_body("api_issue.json"))["body"],
        url="https://github.com/acme/web-app/issues/42",
        state=None,
        labels=("bug", "conveyor:analyse"),
        signal=Signal.START,
        updated_at=datetime(2026, 11, 21, 10, 15, 42, tzinfo=UTC),
    )
    assert (event.actor, event.actor_id) == ("grace-h", "7311902")


def test_the_ticket_level_is_stop_when_a_stop_label_is_on(github: GitHubTracker) -> None:
    ticket = parse(github, "issues_labeled_stop.json").ticket
    assert ticket.labels == ("bug", "conveyor:analyse", "conveyor:stop")
    assert ticket.signal is Signal.STOP  # STOP wins over the start label beside it


def test_an_opened_issue_keys_on_its_own_number(github: GitHubTracker) -> None:
    event = parse(github, "issues_opened_with_start_label.json")
    assert event.ticket.ref == TicketRef("github", "acme/web-app", "acme/web-app#43", "app#43")
    assert event.actor == "ada-l"


def test_an_issue_opened_without_a_start_label_is_not_a_start(github: GitHubTracker) -> None:
    body = edited("issues_opened_with_start_label.json", lambda d: d["issue"].update(labels=[]))
    event = parse(github, "issues_opened_with_start_label.json", body)
    assert (event.kind, event.signal, event.ignore) == (
        EventKind.CREATED,
        None,
        "not_a_state_change",
    )


@pytest.mark.parametrize(
    ("policy", "sample", "signal", "ignore"),
    [
        ("not_planned", "issues_closed_not_planned.json", Signal.STOP, None),
        ("not_planned", "issues_closed_completed.json", None, "closed_not_stopping"),
        ("any", "issues_closed_completed.json", Signal.STOP, None),
        ("any", "issues_closed_not_planned.json", Signal.STOP, None),
        ("never", "issues_closed_not_planned.json", None, "closed_not_stopping"),
    ],
)
async def test_closing_stops_as_stop_on_close_says(
    http: httpx.AsyncClient, policy: str, sample: str, signal: Signal | None, ignore: str | None
) -> None:
    event = parse(make(http, stop_on_close=policy), sample)
    assert (event.kind, event.signal, event.ignore) == (EventKind.STATE_CHANGE, signal, ignore)
    assert event.ticket.signal is signal  # the level agrees with the edge


def test_a_closed_issue_never_asks_to_start_again(github: GitHubTracker) -> None:
    # Completed, with the start label still on: reconciliation must not start it afresh.
    ticket = parse(github, "issues_closed_completed.json").ticket
    assert ticket.labels == ("bug", "conveyor:analyse")
    assert ticket.signal is None


def test_labels_match_case_insensitively(github: GitHubTracker) -> None:
    body = edited("issues_labeled_stop.json", lambda d: d["label"].update(name="  Conveyor:STOP "))
    assert parse(github, "issues_labeled_stop.json", body).signal is Signal.STOP


async def test_configured_labels_replace_the_defaults(http: httpx.AsyncClient) -> None:
    github = make(http, stop_labels=["bug"])
    assert parse(github, "issues_labeled_other.json").signal is Signal.STOP
    assert parse(github, "issues_labeled_stop.json").ignore == "label_not_handled"


# -- conveyor's own changes, unmapped repositories ----------------------------------------


def test_the_bots_own_changes_are_ignored_but_still_name_the_ticket(github: GitHubTracker) -> None:
    event = parse(github, "issues_labeled_by_bot.json")
    assert event.ignore == "own_change"
    assert event.ticket.ref == REF_42 and event.actor == "conveyor-bot"


async def test_the_bot_login_compares_case_insensitively(http: httpx.AsyncClient) -> None:
    assert parse(make(http, bot_login="Conveyor-Bot"), "issues_labeled_by_bot.json").ignore == (
        "own_change"
    )


async def test_without_a_bot_login_nobody_is_the_bot(http: httpx.AsyncClient) -> None:
    event = parse(make(http, bot_login=""), "issues_labeled_by_bot.json")
    assert (event.signal, event.ignore) == (Signal.STOP, None)


def test_an_unmapped_repository_is_ignored(github: GitHubTracker) -> None:
    body = edited(
        "issues_labeled_stop.json",
        lambda d: d["repository"].update(full_name="someone-else/web-app"),
    )
    event = parse(github, "issues_labeled_stop.json", body)
    assert (event.ignore, event.ticket, event.signal) == ("unmapped_project", None, None)


def test_the_repository_matches_whatever_case_github_uses(github: GitHubTracker) -> None:
    body = edited(
        "issues_labeled_stop.json", lambda d: d["repository"].update(full_name="ACME/Web-App")
    )
    assert parse(github, "issues_labeled_stop.json", body).ticket.ref == REF_42


def test_an_issues_delivery_for_a_pull_request_is_ignored(github: GitHubTracker) -> None:
    pull = json.loads(sample_body("issue_comment_on_pull_request.json"))["issue"]["pull_request"]
    body = edited("issues_labeled_start.json", lambda d: d["issue"].update(pull_request=pull))
    assert parse(github, "issues_labeled_start.json", body).ignore == "pull_request"


def test_other_events_are_not_issue_events(github: GitHubTracker) -> None:
    headers, body = delivery("issues_labeled_start.json")
    headers["X-GitHub-Event"] = "star"
    assert github.parse(headers, body).ignore == "not_an_issue_event"


# -- bad bodies -------------------------------------------------------------------------


def refused(github: GitHubTracker, body: bytes, **headers: str) -> BadPayload:
    base = dict(DELIVERIES["issues_labeled_stop.json"]) | headers
    with pytest.raises(BadPayload) as caught:
        github.parse(base, body)
    assert caught.value.status == 400
    return caught.value


def test_a_form_encoded_delivery_is_told_to_use_json(github: GitHubTracker) -> None:
    from urllib.parse import urlencode

    form = urlencode({"payload": sample_body("issues_labeled_stop.json").decode()}).encode()
    headers = signed(form, {"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(BadPayload, match="application/json"):
        github.verify(headers, form, now=0.0)
    form_type = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    assert "application/json" in refused(github, form, **form_type).message
    # The body alone gives it away too, whatever Content-Type says.
    assert "form-encoded" in refused(github, form, **{"Content-Type": ""}).message


def test_another_content_type_is_refused(github: GitHubTracker) -> None:
    message = refused(github, b"{}", **{"Content-Type": "text/plain"}).message
    assert "text/plain" in message and "application/json" in message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"a":' * 200_000 + b"1" + b"}" * 200_000, "nested too deeply"),
    ],
)
def test_bodies_that_are_not_a_json_object(
    github: GitHubTracker, body: bytes, message: str
) -> None:
    assert message in refused(github, body).message


def test_missing_or_oversized_delivery_headers_are_refused(github: GitHubTracker) -> None:
    body = sample_body("issues_labeled_stop.json")
    headers = dict(DELIVERIES["issues_labeled_stop.json"])
    del headers["X-GitHub-Delivery"]
    with pytest.raises(BadPayload, match="X-GitHub-Delivery"):
        github.parse(headers, body)
    assert "longer than 200" in refused(github, body, **{"X-GitHub-Delivery": "x" * 201}).message
    assert "NUL" in refused(github, body, **{"X-GitHub-Delivery": "abc\x00def"}).message
    assert "X-GitHub-Event" in refused(github, body, **{"X-GitHub-Event": " "}).message


@pytest.mark.parametrize("number", ["42", True, 0, -3, 12345678901, 4.2, None, [42], {"n": 42}])
def test_an_issue_number_must_be_a_positive_integer(github: GitHubTracker, number: Any) -> None:
    body = edited("issues_labeled_stop.json", lambda d: d["issue"].update(number=number))
    assert "issue.number" in refused(github, body).message


def test_ten_digit_issue_numbers_are_fine(github: GitHubTracker) -> None:
    body = edited("issues_labeled_stop.json", lambda d: d["issue"].update(number=9_999_999_999))
    assert parse(github, "issues_labeled_stop.json", body).ticket.ref.key == "app#9999999999"


@pytest.mark.parametrize(
    "name",
    [
        "acme",
        "acme/web app",
        "acme/web-app/x",
        "../web-app",
        "acme/..",
        "acme/.",
        7,
        "",
        None,
        "a" * 101 + "/b",
        "a" * 90 + "/" + "b" * 95,
        "acme/web-app\x00",
    ],
)
def test_a_repository_must_look_like_owner_slash_name(github: GitHubTracker, name: Any) -> None:
    body = edited("issues_labeled_stop.json", lambda d: d["repository"].update(full_name=name))
    assert "repository.full_name" in refused(github, body).message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("issue"), "issue"),
        (lambda d: d.update(issue=[]), "issue"),
        (lambda d: d.pop("repository"), "repository"),
        (lambda d: d.pop("action"), "action"),
        (lambda d: d.pop("label"), "label"),
        (lambda d: d["label"].update(name="x" * 201), "label.name"),
        (lambda d: d["label"].update(name="stop\x00"), "label.name"),
        (lambda d: d["issue"].update(labels="conveyor:stop"), "issue.labels"),
        (lambda d: d["issue"].update(labels=[{"name": 3}]), "issue.labels[].name"),
        (lambda d: d["issue"].update(updated_at="yesterday"), "issue.updated_at"),
        (lambda d: d["issue"].update(updated_at="2026-11-21T10:15:42"), "issue.updated_at"),
        (lambda d: d["issue"].update(title=["a"]), "issue.title"),
        (lambda d: d["issue"].update(html_url="https://x/" + "a" * 3000), "issue.html_url"),
    ],
)
def test_fields_that_are_missing_or_wrong_are_named(
    github: GitHubTracker, change: Any, field: str
) -> None:
    assert field in refused(github, edited("issues_labeled_stop.json", change)).message


def test_free_text_is_bounded_and_loses_its_nuls(github: GitHubTracker) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["issue"].update(title="Stop\x00 now" + "!" * 5000, body="a\x00b" * 200_000)

    ticket = parse(
        github, "issues_labeled_stop.json", edited("issues_labeled_stop.json", change)
    ).ticket
    assert ticket.title.startswith("Stop now!") and len(ticket.title) == 1024
    assert "\x00" not in ticket.description and len(ticket.description) == 256 * 1024
    assert ticket.signal is Signal.STOP  # a big body never costs the STOP


def test_a_null_body_is_an_empty_description(github: GitHubTracker) -> None:
    body = edited("issues_labeled_stop.json", lambda d: d["issue"].update(body=None))
    assert parse(github, "issues_labeled_stop.json", body).ticket.description == ""


# -- the port ---------------------------------------------------------------------------


async def test_it_is_a_tracker_built_by_its_adapter(http: httpx.AsyncClient) -> None:
    settings = ADAPTER.settings.model_validate({"webhook_secret": SECRET})
    github: Tracker = ADAPTER.build(settings, http, PROJECTS)
    assert ADAPTER.name == github.name == "github"
    assert github.has_api is False  # no token
    headers, body = delivery("issues_labeled_stop.json")
    github.verify(headers, body, now=0.0)
    event = github.parse(headers, body)
    assert await github.complete(event) is event
    assert ADAPTER.env == {
        "CONVEYOR_GITHUB_WEBHOOK_SECRET": "webhook_secret",
        "CONVEYOR_GITHUB_TOKEN": "token",
        "CONVEYOR_GITHUB_API_URL": "api_url",
    }


async def test_building_from_another_trackers_settings_is_a_type_error(
    http: httpx.AsyncClient,
) -> None:
    from integrations.trackers.gitea import GiteaSettings

    with pytest.raises(TypeError, match="GitHubSettings"):
        build(GiteaSettings(), http, PROJECTS)


@pytest.mark.parametrize(
    ("added", "signal"),
    [
        ({"conveyor:analyse"}, Signal.START),
        ({"conveyor:analyse", "conveyor:stop"}, Signal.STOP),
        ({"CONVEYOR:DEPLOY"}, Signal.CONFIRM_DEPLOY),
        ({"bug"}, None),
        (set(), None),
    ],
)
def test_signal_for_labels(github: GitHubTracker, added: set[str], signal: Signal | None) -> None:
    assert github.signal_for_labels(frozenset(added)) is signal


def test_settings_defaults_are_the_contracts() -> None:
    settings = GitHubSettings()
    assert settings.api_url == "https://api.github.com"
    assert settings.start_labels == ("conveyor:analyse",)
    assert settings.stop_labels == ("conveyor:stop",)
    assert settings.confirm_deploy_labels == ("conveyor:deploy",)
    assert settings.stop_on_close == "not_planned"
    assert settings.bot_login == "" and settings.secrets() == []
    with_secrets = GitHubSettings(webhook_secret="s3", token="ghp_t0k")
    assert sorted(with_secrets.secrets()) == ["ghp_t0k", "s3"]
    assert "ghp_t0k" not in repr(with_secrets)


@pytest.mark.parametrize(
    "values",
    [
        {"stop_on_close": "sometimes"},
        {"api_url": "ftp://ghe.example.test"},
        {"api_url": "api.github.com"},
        {"stop_labels": [""]},
        {"start_labels": ["x" * 201]},
        {"unknown_key": 1},
    ],
)
def test_bad_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GitHubSettings(**values)


def test_an_enterprise_api_url_keeps_its_path() -> None:
    assert GitHubSettings(api_url="https://ghe.example.test/api/v3/").api_url == (
        "https://ghe.example.test/api/v3"
    )


# -- `conveyor send github` -------------------------------------------------------------

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("action", "label", "labels", "expected"),
    [
        ("labeled", "conveyor:analyse", (), (Signal.START, None, ("conveyor:analyse",))),
        ("labeled", "conveyor:stop", ("conveyor:analyse",), (Signal.STOP, None, None)),
        ("unlabeled", "conveyor:analyse", ("bug",), (None, "not_a_state_change", ("bug",))),
        ("closed", None, ("conveyor:analyse",), (Signal.STOP, None, ("conveyor:analyse",))),
    ],
)
def test_sent_deliveries_read_back(
    github: GitHubTracker,
    action: str,
    label: str | None,
    labels: tuple[str, ...],
    expected: tuple[Any, ...],
) -> None:
    headers, body = build_delivery(
        secret=SECRET,
        full_name="acme/web-app",
        number=42,
        label=label,
        action=action,
        labels=labels,
        delivery="d-1",
        now=NOW,
    )
    github.verify(headers, body, now=0.0)
    event = github.parse(headers, body)
    signal, ignore, ticket_labels = expected
    assert (event.signal, event.ignore, event.delivery_key) == (signal, ignore, "github:d-1")
    assert event.ticket.ref == REF_42
    assert event.ticket.updated_at == NOW
    if ticket_labels is not None:
        assert event.ticket.labels == ticket_labels


def test_a_sent_delivery_is_signed_and_headed_as_github_does() -> None:
    headers, body = build_delivery(
        secret=SECRET, full_name="acme/web-app", number=42, label="conveyor:stop", now=NOW
    )
    recorded = DELIVERIES["issues_labeled_stop.json"]
    assert set(headers) == set(recorded) | {"X-Hub-Signature", "X-Hub-Signature-256"}
    sha1 = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    assert headers["X-Hub-Signature"] == f"sha1={sha1}"
    assert b"\n" not in body and b", " not in body  # compact, as GitHub posts it
    sent, sample = json.loads(body), json.loads(sample_body("issues_labeled_stop.json"))
    assert set(sent) <= set(sample)
    assert set(sent["issue"]) <= set(sample["issue"])
    assert set(sent["label"]) == set(sample["label"])


def test_two_sends_are_two_deliveries() -> None:
    first, _ = build_delivery(secret=SECRET, full_name="acme/web-app", number=1, label="x")
    again, _ = build_delivery(secret=SECRET, full_name="acme/web-app", number=1, label="x")
    assert first["X-GitHub-Delivery"] != again["X-GitHub-Delivery"]


@pytest.mark.parametrize(("action", "label"), [("reopened", "x"), ("labeled", None)])
def test_the_builder_refuses_what_github_never_sends(action: str, label: str | None) -> None:
    with pytest.raises(ValueError):
        build_delivery(secret=SECRET, full_name="a/b", number=1, label=label, action=action)
