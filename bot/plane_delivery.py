"""A signed Plane state-change delivery, as Plane would send it: for `conveyor send plane`
and the demo. Pure: ids are stable uuid5s of names, and the time is passed in.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.errors import ConfigError, UsageError
from bot.settings import PlaneSettings, Settings
from integrations.trackers.plane import sign
from integrations.trackers.plane_payloads import build_v1_payload

NO_SECRET = (
    "no Plane webhook secret is configured "
    "(trackers.plane.webhook_secret / CONVEYOR_PLANE_WEBHOOK_SECRET); cannot sign"
)
NO_PROJECT = (
    "no repo has a tracker_project to send for; pass --project <plane project id> "
    "or set tracker_project under [[repos]]"
)
BAD_KEY = "issue key must look like PROJ-42 (a name, a dash and the ticket number), got {key!r}"
_KEY = re.compile(r"^[A-Za-z0-9_.]+-(\d{1,9})$")
# Names are turned into ids under this namespace, so a key always names the same ticket.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://conveyor.invalid/plane")


@dataclass(frozen=True)
class Ticket:
    """What a state change is about and who made it."""

    key: str
    state: str
    project_id: str | None = None  # None: the first configured repo's project
    issue_id: str | None = None
    actor: str = "conveyor-cli"
    title: str | None = None


@dataclass(frozen=True)
class Delivery:
    """The raw body and the headers Plane sends with it."""

    body: bytes
    headers: dict[str, str]


def sequence_id(key: str) -> int:
    """The ticket number of a key: PROJ-42 → 42."""
    match = _KEY.match(key.strip())
    if match is None:
        raise UsageError(BAD_KEY.format(key=key))
    return int(match.group(1))


def stable_id(kind: str, name: str) -> str:
    """A uuid5 for a name, the same on every run: repeated sends hit the same ticket."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{name}"))


def state_group(plane: PlaneSettings, state: str) -> str:
    """Plane's group for a state: cancelled for STOP, unstarted for start, else started."""
    folded = state.strip().casefold()
    if folded in {name.casefold() for name in plane.stop_states}:
        return "cancelled"
    if folded in {name.casefold() for name in plane.start_states}:
        return "unstarted"
    return "started"


def default_project(settings: Settings) -> str:
    """The first configured repo's tracker project."""
    project = next((r.tracker_project for r in settings.repos if r.tracker_project), None)
    if project is None:
        raise UsageError(NO_PROJECT)
    return project


def webhook_secret(settings: Settings) -> str:
    secret = settings.trackers.plane.webhook_secret.get_secret_value()
    if not secret:
        raise ConfigError(NO_SECRET)
    return secret


def build_delivery(settings: Settings, ticket: Ticket, now: datetime, delivery_id: str) -> Delivery:
    """Plane's body for `ticket` moving to its state at `now`, signed with the secret."""
    secret = webhook_secret(settings)
    payload = build_v1_payload(
        issue_id=ticket.issue_id or stable_id("issue", ticket.key),
        project_id=ticket.project_id or default_project(settings),
        sequence_id=sequence_id(ticket.key),
        title=ticket.title or f"{ticket.key} (sent by conveyor)",
        state_id=stable_id("state", ticket.state),
        state_name=ticket.state,
        state_group=state_group(settings.trackers.plane, ticket.state),
        old_state_id=None,
        actor_id=stable_id("actor", ticket.actor),
        actor_name=ticket.actor,
        updated_at=_iso(now),
    )
    body = json.dumps(payload).encode()  # what Plane's sender signs and sends
    headers = {
        "Content-Type": "application/json",
        "X-Plane-Signature": sign(secret, body),
        "X-Plane-Event": "issue",
        "X-Plane-Delivery": delivery_id,
    }
    return Delivery(body=body, headers=headers)


def _iso(now: datetime) -> str:
    """Plane's timestamp form; microseconds make each send a new delivery."""
    return now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def describe_answer(status: int, doc: dict[str, object]) -> str:
    """One line for a webhook answer: `202 started PROJ-42` (+ reason, stop id)."""
    parts = [str(status), str(doc.get("outcome", "?")), str(doc.get("task") or "-")]
    for name in ("reason", "stop_id"):
        if doc.get(name):
            parts.append(f"{name}={doc[name]}")
    return " ".join(parts)
