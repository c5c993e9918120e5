"""GitHub webhooks without I/O: the signature, and what an ``issues`` delivery means.

Labels are the state: ``issues``/``labeled`` names the one label added (top-level
``label``), ``closed`` carries ``issue.state_reason``. Facts: TRACKERS.md (GitHub).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from integrations.trackers.base import (
    BadPayload,
    BadSignature,
    EventKind,
    Headers,
    Signal,
    TrackerEvent,
)
from integrations.trackers.labels.delivery import (
    delivery_id,
    header,
    load_object,
    refuse_form_encoded,
)
from integrations.trackers.labels.fields import is_pull_request, mapping, text
from integrations.trackers.labels.issues import (
    IssueDelivery,
    ProjectMap,
    ignored,
    is_own,
    read_issue_delivery,
)
from integrations.trackers.labels.rules import LabelRules
from integrations.trackers.signing import signature_matches

TRACKER = "github"
SECRET_SETTING = "[trackers.github] webhook_secret (CONVEYOR_GITHUB_WEBHOOK_SECRET)"
SIGNATURE_HEADER = "X-Hub-Signature-256"
DELIVERY_HEADER = "X-GitHub-Delivery"
EVENT_HEADER = "X-GitHub-Event"

_NO_SECRET = f"no webhook secret is configured: set {SECRET_SETTING}"
_NO_SIGNATURE = (
    f"missing {SIGNATURE_HEADER}: give the GitHub webhook a secret, the same as {SECRET_SETTING}"
)
_SHA1_ONLY = (
    f"only X-Hub-Signature (SHA-1) was sent; conveyor checks {SIGNATURE_HEADER}, which "
    "GitHub sends with every signed delivery"
)
_MISMATCH = f"{SIGNATURE_HEADER} does not match the body: is {SECRET_SETTING} the webhook's secret?"

_KINDS = {"labeled": EventKind.STATE_CHANGE, "closed": EventKind.STATE_CHANGE}
_KINDS |= {"opened": EventKind.CREATED, "deleted": EventKind.DELETED}


def verify(headers: Headers, body: bytes, secret: str) -> None:
    """Raise BadSignature unless ``X-Hub-Signature-256`` is ``sha256=`` + the body's HMAC."""
    refuse_form_encoded(headers, "GitHub")
    if not secret:
        raise BadSignature(_NO_SECRET)
    given = header(headers, SIGNATURE_HEADER)
    if not given or not given.strip():
        raise BadSignature(_SHA1_ONLY if header(headers, "X-Hub-Signature") else _NO_SIGNATURE)
    if not signature_matches(secret, body, given, prefix="sha256="):
        raise BadSignature(_MISMATCH)


@dataclass(frozen=True)
class Reader:
    """What reading a delivery needs from the settings: repos, labels, the bot's login."""

    projects: ProjectMap
    rules: LabelRules
    bot_login: str = ""

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        """The normalised event; BadPayload saying what is wrong with the delivery."""
        delivery = delivery_id(headers, DELIVERY_HEADER)
        doc = load_object(headers, body, "GitHub")
        event = (header(headers, EVENT_HEADER) or "").strip()
        if not event:
            raise BadPayload(f"missing header: {EVENT_HEADER}")
        if event == "ping":
            return ignored(TRACKER, delivery, "ping")
        issue = doc.get("issue")
        # issue_comment deliveries on a pull request carry the PR as an issue.
        if event.startswith("pull_request") or (isinstance(issue, dict) and is_pull_request(issue)):
            return ignored(TRACKER, delivery, "pull_request")
        if event != "issues":
            return ignored(TRACKER, delivery, "not_an_issue_event")
        read = read_issue_delivery(TRACKER, doc, delivery, self.projects, self.rules)
        kind = _KINDS.get(read.action, EventKind.OTHER)
        if read.ticket is None:
            return read.event(kind, ignore="unmapped_project")
        if is_own(read.actor, self.bot_login):
            return read.event(kind, ignore="own_change")
        return self._meaning(read, doc, kind)

    def _meaning(self, read: IssueDelivery, doc: dict[str, Any], kind: EventKind) -> TrackerEvent:
        if read.action == "labeled":
            return self._labeled(read, doc, kind)
        if read.action == "closed":
            return self._closed(read, doc, kind)
        if read.action == "opened":
            signal = self.rules.for_labels(read.ticket.labels if read.ticket else ())
            return read.event(kind, signal=signal, ignore=None if signal else "not_a_state_change")
        if read.action == "deleted":
            return read.event(kind)  # the lifecycle decides what a deletion stops
        return read.event(kind, ignore="not_a_state_change")

    def _labeled(self, read: IssueDelivery, doc: dict[str, Any], kind: EventKind) -> TrackerEvent:
        """The top-level ``label`` is the one just added."""
        name = text(mapping(doc, "label", "label"), "name", "label.name")
        signal = self.rules.for_labels([name])
        ignore = None if signal is not None else "label_not_handled"
        return read.event(kind, signal=signal, state_after=name, ignore=ignore)

    def _closed(self, read: IssueDelivery, doc: dict[str, Any], kind: EventKind) -> TrackerEvent:
        if not self.rules.close_stops(_state_reason(doc)):
            return read.event(kind, state_after="closed", ignore="closed_not_stopping")
        return read.event(kind, signal=Signal.STOP, state_after="closed")


def _state_reason(doc: dict[str, Any]) -> str | None:
    issue = doc.get("issue")
    reason = issue.get("state_reason") if isinstance(issue, dict) else None
    return reason if isinstance(reason, str) else None
