"""Plane v1 webhook bodies as Plane's open-source sender makes them: for `conveyor send
plane`, the demo, tests and benchmarks. The counterpart of `webhook.parse_event`. Pure:
ids are stable uuid5s of names, and the time is passed in."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from integrations.errors import IntegrationError
from integrations.trackers.plane.settings import PlaneSettings
from integrations.trackers.plane.webhook import sign

# The workspace `build_v1_payload` puts events in unless told otherwise (demo, CLI).
DEMO_WORKSPACE_ID = "10c432d6-07c8-43c2-babc-92fdaed0485b"

_STATE_COLORS = {
    "backlog": "#60646c",
    "unstarted": "#60646c",
    "started": "#f59e0b",
    "completed": "#46a758",
    "cancelled": "#ef4444",
    "triage": "#4e5355",
}


def build_v1_payload(
    *,
    issue_id: str,
    project_id: str,
    sequence_id: int,
    title: str,
    state_id: str,
    state_name: str,
    state_group: str,
    old_state_id: str | None,
    actor_id: str,
    actor_name: str,
    updated_at: str,
    workspace_id: str = DEMO_WORKSPACE_ID,
    field: str = "state_id",
) -> dict[str, Any]:
    """A state-change delivery shaped like Plane's open-source sender (``webhook_send_task``).

    Plane signs and sends ``json.dumps(payload).encode()``; do the same to mimic it.
    """
    actor = {
        "id": actor_id,
        "first_name": actor_name,
        "last_name": "",
        "email": f"{actor_name}@example.com",
        "avatar": "",
        "avatar_url": None,
        "display_name": actor_name,
    }
    return {
        "event": "issue",
        "action": "updated",
        "webhook_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:plane:{workspace_id}")),
        "workspace_id": workspace_id,
        "data": _v1_issue_data(
            issue_id=issue_id,
            project_id=project_id,
            workspace_id=workspace_id,
            sequence_id=sequence_id,
            title=title,
            state={
                "id": state_id,
                "name": state_name,
                "color": _STATE_COLORS.get(state_group, "#60646c"),
                "group": state_group,
            },
            actor_id=actor_id,
            updated_at=updated_at,
        ),
        "activity": {
            "field": field,
            "new_value": state_id,
            "old_value": old_state_id,
            "actor": actor,
            "old_identifier": None,
            "new_identifier": None,
        },
    }


def _v1_issue_data(
    *,
    issue_id: str,
    project_id: str,
    workspace_id: str,
    sequence_id: int,
    title: str,
    state: dict[str, str],
    actor_id: str,
    updated_at: str,
) -> dict[str, Any]:
    """``data`` as Plane's IssueExpandSerializer renders a work item."""
    return {
        "id": issue_id,
        "cycle": None,
        "module": None,
        "labels": [],
        "assignees": [],
        "state": state,
        "description": {},
        "created_at": updated_at,
        "updated_at": updated_at,
        "deleted_at": None,
        "point": None,
        "name": title,
        "description_html": "<p></p>",
        "priority": "none",
        "start_date": None,
        "target_date": None,
        "sequence_id": sequence_id,
        "sort_order": 65535.0,
        "completed_at": None,
        "archived_at": None,
        "is_draft": False,
        "external_source": None,
        "external_id": None,
        "created_by": actor_id,
        "updated_by": actor_id,
        "project": project_id,
        "workspace": workspace_id,
        "parent": None,
        "estimate_point": None,
        "type": None,
    }


class DeliveryError(IntegrationError):
    """A simulated delivery cannot be built; the message says what to pass or set."""


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
        raise DeliveryError(BAD_KEY.format(key=key))
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


def build_delivery(
    plane: PlaneSettings,
    ticket: Ticket,
    now: datetime,
    delivery_id: str,
    *,
    default_project: str | None = None,
) -> Delivery:
    """Plane's body for `ticket` moving to its state at `now`, signed with the secret."""
    secret = plane.webhook_secret.get_secret_value()
    if not secret:
        raise DeliveryError(NO_SECRET)
    project = ticket.project_id or default_project
    if not project:
        raise DeliveryError(NO_PROJECT)
    payload = build_v1_payload(
        issue_id=ticket.issue_id or stable_id("issue", ticket.key),
        project_id=project,
        sequence_id=sequence_id(ticket.key),
        title=ticket.title or f"{ticket.key} (sent by conveyor)",
        state_id=stable_id("state", ticket.state),
        state_name=ticket.state,
        state_group=state_group(plane, ticket.state),
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
