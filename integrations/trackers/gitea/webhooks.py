"""Gitea and Forgejo webhooks without I/O: the signature, and what an ``issues`` delivery
means.

Gitea sends ``X-Gitea-*`` headers (Forgejo ``X-Forgejo-*`` as well) and signs the raw
body: ``X-Gitea-Signature`` / ``X-Forgejo-Signature`` carry the bare hex HMAC-SHA256,
``X-Hub-Signature-256`` the same with ``sha256=``. With no secret they come empty. A label
change is ``action: "label_updated"`` with the **full** list in ``issue.labels``: the
intake compares it with the labels it last saw. Facts: TRACKERS.md (Gitea / Forgejo);
go-gitea/gitea ``modules/structs/hook.go``, ``services/webhook/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.trackers.base import BadPayload, EventKind, Headers, Signal, TrackerEvent
from integrations.trackers.labels.delivery import (
    check_signature,
    delivery_id,
    header,
    load_object,
    refuse_form_encoded,
)
from integrations.trackers.labels.fields import is_pull_request
from integrations.trackers.labels.issues import (
    IssueDelivery,
    ProjectMap,
    ignored,
    is_own,
    read_issue_delivery,
)
from integrations.trackers.labels.rules import LabelRules

TRACKER = "gitea"
SECRET_SETTING = "[trackers.gitea] webhook_secret (CONVEYOR_GITEA_WEBHOOK_SECRET)"
SIGNATURE_HEADERS = ("X-Gitea-Signature", "X-Forgejo-Signature")
DELIVERY_HEADERS = ("X-Gitea-Delivery", "X-Forgejo-Delivery")
EVENT_HEADERS = ("X-Gitea-Event", "X-Forgejo-Event")

_KINDS = {"label_updated": EventKind.STATE_CHANGE, "closed": EventKind.STATE_CHANGE}
_KINDS |= {"opened": EventKind.CREATED, "deleted": EventKind.DELETED}


def verify(headers: Headers, body: bytes, secret: str) -> None:
    """Raise BadSignature unless a Gitea/Forgejo signature header matches the body."""
    refuse_form_encoded(headers, "Gitea/Forgejo")
    check_signature(
        headers, body, secret=secret, hex_headers=SIGNATURE_HEADERS, setting=SECRET_SETTING
    )


@dataclass(frozen=True)
class Reader:
    """What reading a delivery needs from the settings: repos, labels, the bot's login."""

    projects: ProjectMap
    rules: LabelRules
    bot_login: str = ""

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        """The normalised event; BadPayload saying what is wrong with the delivery."""
        delivery = delivery_id(headers, *DELIVERY_HEADERS)
        doc = load_object(headers, body, "Gitea/Forgejo")
        event = (header(headers, *EVENT_HEADERS) or "").strip()
        if not event:
            raise BadPayload(f"missing header: {EVENT_HEADERS[0]}")
        issue = doc.get("issue")
        # Pull requests have their own events; comments on one say is_pull.
        is_pull = doc.get("is_pull") is True or (isinstance(issue, dict) and is_pull_request(issue))
        if event.startswith("pull_request") or is_pull:
            return ignored(TRACKER, delivery, "pull_request")
        if event != "issues":
            return ignored(TRACKER, delivery, "not_an_issue_event")
        read = read_issue_delivery(TRACKER, doc, delivery, self.projects, self.rules)
        kind = _KINDS.get(read.action, EventKind.OTHER)
        if read.ticket is None:
            return read.event(kind, ignore="unmapped_project")
        if is_own(read.actor, self.bot_login):
            return read.event(kind, ignore="own_change")
        return self._meaning(read, kind)

    def _meaning(self, read: IssueDelivery, kind: EventKind) -> TrackerEvent:
        if read.action == "label_updated":
            # The full list, not what changed: the intake diffs it with the last seen.
            return read.event(kind, labels_to_diff=_labels_of(read))
        if read.action == "label_cleared":
            # ticket.labels is () now: the intake's "last seen" should follow it.
            return read.event(kind, ignore="not_a_state_change")
        if read.action == "closed":
            return self._closed(read, kind)
        if read.action == "opened":
            signal = self.rules.for_labels(_labels_of(read))
            return read.event(kind, signal=signal, ignore=None if signal else "not_a_state_change")
        if read.action == "deleted":
            return read.event(kind)  # the lifecycle decides what a deletion stops
        return read.event(kind, ignore="not_a_state_change")

    def _closed(self, read: IssueDelivery, kind: EventKind) -> TrackerEvent:
        """Gitea has no close reason: ``stop_on_close`` is ``any`` or ``never``."""
        if not self.rules.close_stops(None):
            return read.event(kind, state_after="closed", ignore="closed_not_stopping")
        return read.event(kind, signal=Signal.STOP, state_after="closed")


def _labels_of(read: IssueDelivery) -> tuple[str, ...]:
    return read.ticket.labels if read.ticket is not None else ()
