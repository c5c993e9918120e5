"""Jira Cloud's webhook side (no I/O): `X-Hub-Signature`, every recorded sample read into
the port's event, ADF and wiki markup to Markdown, the comment document, and the signed
bodies `conveyor send jira` builds."""

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
from integrations.trackers.jira import ADAPTER, JiraSettings, JiraTracker, adf, payloads, wiki
from integrations.trackers.linear import LinearSettings

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "jira"
SECRET = "jira-webhook-secret-5e1d7c3b9a"
SITE = "https://acme.atlassian.net"
ADA = "5b10ac8d82e05b22cc7d4ef5"
BOT = "712020:3f2a9c4e-5b7d-4e1f-8a3c-6d9e2b4f7a1c"
DELIVERY = "7c3e9b1a-5d2f-4a6c-8e0b-1d3f5a7c9e2b"


def raw(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(raw(name))
    return doc


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers_for(body: bytes, **extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=UTF-8",
        "X-Atlassian-Webhook-Identifier": DELIVERY,
        "X-Atlassian-Webhook-Flow": "Primary",
        "X-Hub-Signature": sign(body),
        **extra,
    }


def encoded(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def make(http: httpx.AsyncClient, projects: dict[str, str] | None = None, **kw: Any) -> JiraTracker:
    settings = JiraSettings(webhook_secret=SECRET, base_url=SITE, bot_account_id=BOT, **kw)
    return JiraTracker(settings, http, {"PROJ": "app"} if projects is None else projects)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def jira(http: httpx.AsyncClient) -> JiraTracker:
    return make(http)


def parse(tracker: JiraTracker, body: bytes, **headers: str) -> TrackerEvent:
    return tracker.parse(headers_for(body, **headers), body)


# -- every recorded sample ---------------------------------------------------------------

CASES = [
    # sample, kind, signal, before, after, state id, key, ignore
    (
        "issue_updated_status",
        EventKind.STATE_CHANGE,
        Signal.START,
        "To Do",
        "To Analyse",
        "10005",
        "PROJ-42",
        None,
    ),
    (
        "issue_updated_stop",
        EventKind.STATE_CHANGE,
        Signal.STOP,
        "To Analyse",
        "STOP",
        "10007",
        "PROJ-42",
        None,
    ),
    (
        "issue_updated_summary",
        EventKind.OTHER,
        None,
        None,
        None,
        None,
        "PROJ-42",
        "not_a_state_change",
    ),
    (
        "issue_created",
        EventKind.CREATED,
        Signal.START,
        None,
        "To Analyse",
        "10005",
        "PROJ-43",
        None,
    ),
    ("issue_deleted", EventKind.DELETED, None, None, None, None, "PROJ-42", None),
]


@pytest.mark.parametrize(
    ("name", "kind", "signal", "before", "after", "state_id", "key", "ignore"), CASES
)
def test_every_issue_sample_is_read(
    jira: JiraTracker,
    name: str,
    kind: EventKind,
    signal: Signal | None,
    before: str | None,
    after: str | None,
    state_id: str | None,
    key: str,
    ignore: str | None,
) -> None:
    body = raw(name)
    jira.verify(headers_for(body), body, now=0.0)
    event = parse(jira, body)
    assert (event.kind, event.signal, event.ignore) == (kind, signal, ignore)
    assert (event.state_before, event.state_after, event.state_id) == (before, after, state_id)
    assert event.ticket is not None
    assert (event.ticket.ref.key, event.ticket.ref.project) == (key, "PROJ")
    assert (event.actor, event.actor_id) == ("Ada Lovelace", ADA)
    assert event.delivery_key == f"jira:{DELIVERY}"
    assert event.tracker == "jira"


def test_a_comment_is_not_an_issue_event(jira: JiraTracker) -> None:
    body = raw("comment_created")
    jira.verify(headers_for(body), body, now=0.0)
    event = parse(jira, body)
    assert (event.kind, event.ignore, event.ticket) == (EventKind.OTHER, "not_an_issue_event", None)


def test_a_state_change_carries_the_ticket_an_agent_starts_from(jira: JiraTracker) -> None:
    ticket = parse(jira, raw("issue_updated_status")).ticket
    assert ticket is not None
    assert ticket.ref == TicketRef("jira", "PROJ", "10042", "PROJ-42")
    assert ticket.title == "Fix login redirect loop"
    assert ticket.url == "https://acme.atlassian.net/browse/PROJ-42"
    assert (ticket.state, ticket.signal) == ("To Analyse", Signal.START)
    assert ticket.labels == ("bug", "sso")
    assert ticket.updated_at == datetime(2026, 11, 30, 10, 15, 2, 118000, tzinfo=UTC)
    # Webhooks carry the description in wiki markup: it arrives as Markdown.
    assert ticket.description == (
        "Users who sign in with SSO land back on `/login` after the callback.\n"
        "\n"
        "## Steps to reproduce\n"
        "1. Open [the login page](https://app.acme.example/login)\n"
        "1. Choose **Sign in with SSO**\n"
        "1. Complete the provider's form\n"
        "\n"
        "Expected: the dashboard. Actual: `/login` again, *forever*.\n"
        "\n"
        "```none\n"
        "GET /auth/callback?code=... 302 -> /login\n"
        "```"
    )


def test_the_status_item_is_found_among_others_and_by_field_name(jira: JiraTracker) -> None:
    doc = sample("issue_updated_stop")  # resolution first, then status
    assert parse(jira, encoded(doc)).state_after == "STOP"
    doc["changelog"]["items"][1]["field"] = "Statut"  # a display name; the id is what counts
    assert parse(jira, encoded(doc)).state_after == "STOP"
    for item in doc["changelog"]["items"]:
        item.pop("fieldId")
    doc["changelog"]["items"][1]["field"] = "Status"
    assert parse(jira, encoded(doc)).state_after == "STOP"


def test_without_base_url_the_link_comes_from_the_issues_self(http: httpx.AsyncClient) -> None:
    tracker = JiraTracker(JiraSettings(webhook_secret=SECRET), http, {"PROJ": "app"})
    ticket = parse(tracker, raw("issue_created")).ticket
    assert ticket is not None and ticket.url == "https://acme.atlassian.net/browse/PROJ-43"


def test_stop_wins_when_a_status_is_in_both_lists(http: httpx.AsyncClient) -> None:
    tracker = make(http, start_states=["stop"], stop_states=["STOP"])
    assert parse(tracker, raw("issue_updated_stop")).signal is Signal.STOP


def test_a_retry_keeps_the_dedupe_key_and_marks_the_attempt(jira: JiraTracker) -> None:
    body = raw("issue_updated_stop")
    first = parse(jira, body)
    retry = parse(jira, body, **{"X-Atlassian-Webhook-Retry": "2"})
    assert first.delivery_key == retry.delivery_key == f"jira:{DELIVERY}"
    assert (first.delivery_id, retry.delivery_id) == (DELIVERY, f"{DELIVERY}#2")


# -- verify --------------------------------------------------------------------------------


def test_a_signed_delivery_is_accepted_whatever_the_header_case(jira: JiraTracker) -> None:
    body = raw("issue_updated_stop")
    headers = {k.lower(): v for k, v in headers_for(body).items()}
    headers["x-hub-signature"] = headers["x-hub-signature"].replace("sha256=", "SHA256=")
    jira.verify(headers, body, now=0.0)


def test_no_secret_configured_refuses_even_an_unsigned_webhook(http: httpx.AsyncClient) -> None:
    tracker = JiraTracker(JiraSettings(base_url=SITE), http, {"PROJ": "app"})
    body = raw("issue_updated_stop")
    headers = headers_for(body)
    del headers["X-Hub-Signature"]  # a webhook registered without a secret
    with pytest.raises(BadSignature) as refused:
        tracker.verify(headers, body, now=0.0)
    assert refused.value.status == 401
    assert "[trackers.jira] webhook_secret" in refused.value.message
    assert "CONVEYOR_JIRA_WEBHOOK_SECRET" in refused.value.message


@pytest.mark.parametrize("signature", [None, "", "  "])
def test_a_missing_or_empty_signature_is_refused(jira: JiraTracker, signature: str | None) -> None:
    body = raw("issue_updated_stop")
    headers = headers_for(body)
    if signature is None:
        del headers["X-Hub-Signature"]
    else:
        headers["X-Hub-Signature"] = signature
    with pytest.raises(BadSignature, match="missing: register the Jira webhook with a secret"):
        jira.verify(headers, body, now=0.0)


@pytest.mark.parametrize(
    "signature",
    [
        sign(b"other body"),
        sign(raw("issue_updated_stop"), "another-secret"),
        sign(raw("issue_updated_stop")).removeprefix("sha256="),  # hex without the prefix
        sign(raw("issue_updated_stop")).replace("sha256=", "sha1="),
    ],
)
def test_a_wrong_signature_is_refused(jira: JiraTracker, signature: str) -> None:
    body = raw("issue_updated_stop")
    with pytest.raises(BadSignature, match="does not match"):
        jira.verify({**headers_for(body), "X-Hub-Signature": signature}, body, now=0.0)


def test_the_signature_covers_the_raw_bytes_not_the_json(jira: JiraTracker) -> None:
    body = raw("issue_updated_stop")
    reserialised = json.dumps(json.loads(body)).encode()
    with pytest.raises(BadSignature):
        jira.verify(headers_for(body), reserialised, now=0.0)


# -- parse: what is ignored, what is refused ------------------------------------------------


def test_an_unmapped_project_is_ignored(http: httpx.AsyncClient) -> None:
    event = parse(make(http, {"OPS": "ops"}), raw("issue_updated_stop"))
    assert (event.kind, event.signal, event.ignore) == (
        EventKind.STATE_CHANGE,
        Signal.STOP,
        "unmapped_project",
    )


def test_conveyors_own_change_is_ignored(jira: JiraTracker) -> None:
    doc = sample("issue_updated_stop")
    doc["user"] = {"accountId": BOT, "displayName": "conveyor-bot"}
    assert parse(jira, encoded(doc)).ignore == "own_change"


def test_the_project_falls_back_to_the_keys_prefix(jira: JiraTracker) -> None:
    doc = sample("issue_updated_stop")
    del doc["issue"]["fields"]["project"]
    event = parse(jira, encoded(doc))
    assert event.ticket is not None and event.ticket.ref.project == "PROJ"
    assert event.ignore is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b'"a string"', "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"issue": {}}', "missing field: webhookEvent"),
        (b'{"webhookEvent": "jira:issue_updated"}', "missing field: issue"),
    ],
)
def test_a_body_that_is_not_a_jira_event_is_a_bad_payload(
    jira: JiraTracker, body: bytes, message: str
) -> None:
    with pytest.raises(BadPayload, match=message) as refused:
        parse(jira, body)
    assert refused.value.status == 400


def test_a_delivery_without_its_identifier_is_a_bad_payload(jira: JiraTracker) -> None:
    body = raw("issue_updated_stop")
    headers = headers_for(body)
    del headers["X-Atlassian-Webhook-Identifier"]
    with pytest.raises(BadPayload, match="X-Atlassian-Webhook-Identifier"):
        jira.parse(headers, body)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", "PROJ-42", "numeric issue id"),
        ("id", "10042/../1", "numeric issue id"),
        ("id", 10042, "numeric issue id"),
        ("key", "proj-42", "PROJ-42"),
        ("key", "PROJ-42/comment", "PROJ-42"),
        ("key", "42", "PROJ-42"),
        ("key", None, "PROJ-42"),
    ],
)
def test_an_issue_id_or_key_of_the_wrong_shape_is_refused(
    jira: JiraTracker, field: str, value: Any, message: str
) -> None:
    doc = sample("issue_updated_stop")
    doc["issue"][field] = value
    with pytest.raises(BadPayload, match=message):
        parse(jira, encoded(doc))


def test_a_status_item_without_its_new_status_is_refused(jira: JiraTracker) -> None:
    doc = sample("issue_updated_status")
    del doc["changelog"]["items"][0]["toString"]
    with pytest.raises(BadPayload, match="toString"):
        parse(jira, encoded(doc))


def test_other_events_are_ignored(jira: JiraTracker) -> None:
    for name in ("comment_updated", "worklog_updated", "sprint_started", "jira:version_released"):
        assert parse(jira, encoded({"webhookEvent": name})).ignore == "not_an_issue_event"


# -- Atlassian Document Format and wiki markup ---------------------------------------------


def test_a_realistic_adf_description_becomes_markdown() -> None:
    description = sample("api_issue")["fields"]["description"]
    assert adf.to_markdown(description) == (
        "Users who sign in with SSO land back on `/login` after the callback. "
        "Reported by @Ada Lovelace.\n"
        "\n"
        "## Steps to reproduce\n"
        "\n"
        "1. Open [the login page](https://app.acme.example/login)\n"
        "2. Choose **Sign in with SSO**\n"
        "3. Complete the provider's form\n"
        "   - Okta and Entra ID both do it\n"
        "\n"
        "Expected: the dashboard.  \n"
        "Actual: `/login` again, *forever*.\n"
        "\n"
        "```http\n"
        "GET /auth/callback?code=... 302\n"
        "Location: /login\n"
        "```\n"
        "\n"
        "Started after the 2026-11 identity provider upgrade."
    )


def test_adf_marks_quotes_rules_tables_and_unknown_nodes() -> None:
    doc = {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "blockquote",
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": "quoted"}]}],
            },
            {"type": "rule"},
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "gone", "marks": [{"type": "strike"}]},
                    {"type": "text", "text": " "},
                    {"type": "text", "text": "both", "marks": [{"type": "strong"}, {"type": "em"}]},
                    {"type": "text", "text": " "},
                    {"type": "inlineCard", "attrs": {"url": "https://acme.example/x"}},
                    {"type": "text", "text": " "},
                    {"type": "emoji", "attrs": {"shortName": ":tada:", "text": "🎉"}},
                ],
            },
            {
                "type": "orderedList",
                "attrs": {"order": 3},
                "content": [
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "third"}]}
                        ],
                    },
                ],
            },
            {
                "type": "table",
                "content": [
                    {
                        "type": "tableRow",
                        "content": [
                            {
                                "type": "tableHeader",
                                "content": [
                                    {
                                        "type": "paragraph",
                                        "content": [{"type": "text", "text": "k"}],
                                    }
                                ],
                            },
                            {
                                "type": "tableHeader",
                                "content": [
                                    {
                                        "type": "paragraph",
                                        "content": [{"type": "text", "text": "v"}],
                                    }
                                ],
                            },
                        ],
                    },
                    {
                        "type": "tableRow",
                        "content": [
                            {
                                "type": "tableCell",
                                "content": [
                                    {
                                        "type": "paragraph",
                                        "content": [{"type": "text", "text": "a|b"}],
                                    }
                                ],
                            },
                            {
                                "type": "tableCell",
                                "content": [
                                    {
                                        "type": "paragraph",
                                        "content": [{"type": "text", "text": "1"}],
                                    }
                                ],
                            },
                        ],
                    },
                ],
            },
            {"type": "someFutureNode", "content": [{"type": "text", "text": "kept as text"}]},
        ],
    }
    assert adf.to_markdown(doc) == (
        "> quoted\n\n---\n\n~~gone~~ ***both*** <https://acme.example/x> 🎉\n\n3. third\n\n"
        "| k | v |\n| --- | --- |\n| a\\|b | 1 |\n\nkept as text"
    )


def test_adf_nested_absurdly_deep_keeps_its_words() -> None:
    node: dict[str, Any] = {"type": "paragraph", "content": [{"type": "text", "text": "deep"}]}
    for _ in range(5000):
        node = {"type": "blockquote", "content": [node]}
    assert adf.to_markdown({"type": "doc", "content": [node]}) == "deep"


def test_adf_of_something_else_is_empty() -> None:
    assert adf.to_markdown(None) == adf.to_markdown("text") == ""
    assert adf.to_markdown({"type": "doc", "content": "nope"}) == ""


def test_a_code_block_with_backticks_gets_a_longer_fence() -> None:
    doc = {"type": "codeBlock", "content": [{"type": "text", "text": "```\nx\n```"}]}
    assert adf.to_markdown(doc) == "````\n```\nx\n```\n````"


def test_wiki_markup_lists_code_and_links() -> None:
    text = "* one\n** nested\n- dash\n{noformat}\n*not bold*\n{noformat}\nbq. said\nsee [https://acme.example]"
    assert wiki.to_markdown(text) == (
        "- one\n   - nested\n- dash\n```\n*not bold*\n```\n> said\nsee <https://acme.example>"
    )


def test_a_notice_becomes_an_adf_comment() -> None:
    notice = Notice(
        headline="conveyor stopped the work on PROJ-42.",
        items=("1 agent process stopped", "", "worktree removed"),
        closing="Move the ticket to To Analyse\nto start again.",
        marker="conveyor:stop:9",
    )
    assert adf.notice_document(notice) == {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "paragraph",
                "content": [{"type": "text", "text": "conveyor stopped the work on PROJ-42."}],
            },
            {
                "type": "bulletList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [
                            {
                                "type": "paragraph",
                                "content": [{"type": "text", "text": "1 agent process stopped"}],
                            }
                        ],
                    },
                    {
                        "type": "listItem",
                        "content": [
                            {
                                "type": "paragraph",
                                "content": [{"type": "text", "text": "worktree removed"}],
                            }
                        ],
                    },
                ],
            },
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "Move the ticket to To Analyse"},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "to start again."},
                ],
            },
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "conveyor:stop:9", "marks": [{"type": "code"}]}
                ],
            },
        ],
    }
    assert adf.notice_document(Notice(headline="")) == {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph"}],
    }


# -- what `conveyor send jira` sends ------------------------------------------------------

NOW = 1_796_035_297.702


def test_a_sent_status_change_verifies_and_reads_back(jira: JiraTracker) -> None:
    headers, body = payloads.issue_status_change(
        key="PROJ-42", state="STOP", secret=SECRET, now=NOW
    )
    jira.verify(headers, body, now=NOW)
    event = jira.parse(headers, body)
    assert (event.kind, event.signal) == (EventKind.STATE_CHANGE, Signal.STOP)
    assert (event.state_before, event.state_after) == ("To Do", "STOP")
    assert event.ticket is not None
    assert event.ticket.ref == TicketRef("jira", "PROJ", payloads.issue_id_of("PROJ-42"), "PROJ-42")
    assert event.delivery_key == f"jira:{headers['X-Atlassian-Webhook-Identifier']}"
    assert headers["X-Hub-Signature"] == sign(body)
    assert json.loads(body)["timestamp"] == 1_796_035_297_702


def test_repeated_sends_are_one_issue_but_fresh_deliveries(jira: JiraTracker) -> None:
    first = jira.parse(
        *payloads.issue_status_change(key="PROJ-7", state="To Analyse", secret=SECRET, now=NOW)
    )
    again = jira.parse(
        *payloads.issue_status_change(
            key="PROJ-7", state="STOP", before="To Analyse", secret=SECRET, now=NOW
        )
    )
    assert first.ticket is not None and again.ticket is not None
    assert first.ticket.ref == again.ticket.ref
    assert first.delivery_key != again.delivery_key
    assert (first.signal, again.signal, again.state_before) == (
        Signal.START,
        Signal.STOP,
        "To Analyse",
    )


def test_a_sent_deletion_reads_back(jira: JiraTracker) -> None:
    headers, body = payloads.issue_deleted(
        key="PROJ-42", state="To Analyse", secret=SECRET, now=NOW, delivery="d-1"
    )
    jira.verify(headers, body, now=NOW)
    event = jira.parse(headers, body)
    assert (event.kind, event.delivery_key) == (EventKind.DELETED, "jira:d-1")


def test_a_send_with_a_bad_key_is_refused() -> None:
    with pytest.raises(ValueError, match="PROJ-42"):
        payloads.issue_status_change(key="proj 42", state="STOP", secret=SECRET, now=NOW)


# -- the adapter entry and its settings --------------------------------------------------


def test_the_adapter_entry_names_its_settings_and_env() -> None:
    assert ADAPTER.name == "jira"
    assert ADAPTER.settings is JiraSettings
    assert dict(ADAPTER.env) == {
        "CONVEYOR_JIRA_BASE_URL": "base_url",
        "CONVEYOR_JIRA_WEBHOOK_SECRET": "webhook_secret",
        "CONVEYOR_JIRA_EMAIL": "email",
        "CONVEYOR_JIRA_API_TOKEN": "api_token",
    }


def test_settings_take_designs_keys_and_refuse_others() -> None:
    settings = JiraSettings.model_validate(
        {
            "base_url": "https://acme.atlassian.net/",
            "webhook_secret": SECRET,
            "email": "conveyor-bot@acme.example",
            "api_token": "ATATT3xFfGF0token",
            "bot_account_id": BOT,
            "start_states": ["Ready"],
            "stop_states": ["Halt"],
            "confirm_deploy_states": ["Ship it"],
        }
    )
    assert settings.base_url == "https://acme.atlassian.net"
    assert sorted(settings.secrets()) == sorted([SECRET, "ATATT3xFfGF0token"])
    assert "ATATT3xFfGF0token" not in repr(settings)
    with pytest.raises(ValidationError, match="atlassian.net"):
        JiraSettings(base_url="acme.atlassian.net")
    with pytest.raises(ValidationError):
        JiraSettings.model_validate({"token": "x"})


async def test_build_makes_a_tracker_and_refuses_other_settings(http: httpx.AsyncClient) -> None:
    full = JiraSettings(base_url=SITE, email="bot@acme.example", api_token="t")
    tracker = ADAPTER.build(full, http, {"PROJ": "app"})
    assert (tracker.name, tracker.has_api) == ("jira", True)
    assert tracker.signal_for_labels(frozenset({"STOP"})) is None
    assert not ADAPTER.build(JiraSettings(base_url=SITE, api_token="t"), http, {}).has_api
    with pytest.raises(TypeError, match="JiraSettings"):
        ADAPTER.build(LinearSettings(), http, {})


async def test_the_api_side_without_credentials_says_which_settings(jira: JiraTracker) -> None:
    ref = TicketRef("jira", "PROJ", "10042", "PROJ-42")
    for call in (
        jira.comment(ref, Notice(headline="stopped")),
        jira.read(ref),
        jira.changed_since("PROJ", datetime(2026, 11, 30, tzinfo=UTC)),
    ):
        with pytest.raises(TrackerError, match="CONVEYOR_JIRA_API_TOKEN"):
            await call
