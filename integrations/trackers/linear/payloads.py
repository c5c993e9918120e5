"""Linear Issue webhooks as Linear's sender makes them, signed: for ``conveyor send
linear``, the demo and tests. The counterpart of ``webhook.parse``.

Ids Linear would invent (the issue's and the state's UUIDs) are derived from the key and
the state name, so that two sends for ``ENG-123`` speak of the same issue.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from integrations.trackers.linear.reading import identifier
from integrations.trackers.signing import hmac_sha256_hex

ORGANIZATION_ID = "5f2e4b8a-7c1d-4e3f-9a6b-2d8c0e1f3a5b"
WEBHOOK_ID = "0b8f2c6e-3d4a-4f1b-8e7c-9a5d6b3c2e1f"
SENDER_ID = "7d3b9e2f-1a4c-4b6d-8f0e-5c2a7b9d1e3f"  # the person `conveyor send` acts as
SENDER_NAME = "conveyor send"
_NAMESPACE = uuid.UUID("c0a7e1f2-5b3d-4e6f-8a9b-0c1d2e3f4a5b")


def issue_update(
    *,
    key: str,
    state: str,
    secret: str,
    now: float,
    state_type: str = "started",
    title: str | None = None,
    delivery: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an ``Issue``/``update`` moving ``key`` into ``state``."""
    doc = _envelope("update", key, state, state_type, title, now)
    doc["updatedFrom"] = {
        "updatedAt": doc["data"]["updatedAt"],
        "stateId": _id(key, "previous state"),
    }
    return _signed(_ordered(doc), secret, now, delivery)


def issue_remove(
    *, key: str, state: str, secret: str, now: float, delivery: str | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an ``Issue``/``remove`` (deleted or moved to the trash)."""
    doc = _envelope("remove", key, state, "started", None, now)
    doc["data"]["trashed"] = True
    doc["data"]["archivedAt"] = doc["data"]["updatedAt"]
    return _signed(_ordered(doc), secret, now, delivery)


def issue_id_of(key: str) -> str:
    """The issue UUID these payloads use for ``key``."""
    return _id(identifier(key, ValueError), "issue")


def _envelope(
    action: str, key: str, state: str, state_type: str, title: str | None, now: float
) -> dict[str, Any]:
    team, number = identifier(key, ValueError).split("-")
    at = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    url = f"https://linear.app/acme/issue/{key.lower()}"
    data = {
        "id": issue_id_of(key),
        "createdAt": at,
        "updatedAt": at,
        "number": int(number),
        "title": title or f"Ticket {key}",
        "priority": 0,
        "priorityLabel": "No priority",
        "boardOrder": 0,
        "sortOrder": -1000.0,
        "teamId": _id(team, "team"),
        "stateId": _id(team, state),
        "creatorId": SENDER_ID,
        "labelIds": [],
        "subscriberIds": [SENDER_ID],
        "previousIdentifiers": [],
        "identifier": key,
        "url": url,
        "description": "",
        "state": {"id": _id(team, state), "color": "#f2c94c", "name": state, "type": state_type},
        "team": {"id": _id(team, "team"), "key": team, "name": team.title()},
        "labels": [],
    }
    actor = {"id": SENDER_ID, "name": SENDER_NAME, "type": "user", "url": ""}
    return {"action": action, "actor": actor, "createdAt": at, "data": data, "url": url}


def _ordered(doc: dict[str, Any]) -> dict[str, Any]:
    # Linear's own key order: the entity first, then the envelope's bookkeeping.
    order = ("action", "actor", "createdAt", "data", "updatedFrom", "url")
    return {name: doc[name] for name in order if name in doc}


def _signed(
    doc: dict[str, Any], secret: str, now: float, delivery: str | None
) -> tuple[dict[str, str], bytes]:
    doc |= {
        "type": "Issue",
        "organizationId": ORGANIZATION_ID,
        "webhookTimestamp": int(now * 1000),
        "webhookId": WEBHOOK_ID,
    }
    body = json.dumps(doc, separators=(",", ":")).encode()  # JSON.stringify's shape
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Linear-Webhook",
        "Linear-Delivery": delivery or str(uuid.uuid4()),
        "Linear-Event": "Issue",
        "Linear-Timestamp": str(int(now * 1000)),
        "Linear-Signature": hmac_sha256_hex(secret, body),
    }
    return headers, body


def _id(scope: str, name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{scope}/{name}"))
