"""Plane webhooks without I/O: signatures, payload parsing, dedup keys.

Modelled on gidgethub's ``sansio.py``: every function takes bytes or plain data and
returns plain data, so the webhook route, the CLI and the demo share one reading of
Plane's payloads, and the tests need no server. Protocol facts: TRACKERS.md (Plane).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from integrations.trackers.base import BadPayload
from integrations.trackers.signing import hmac_sha256_hex, signature_matches

MAX_BODY_BYTES = 1024 * 1024

_STATE_FIELDS = frozenset({"state_id", "state"})
_ACTIONS = {
    "create": "created",
    "created": "created",
    "update": "updated",
    "updated": "updated",
    "delete": "deleted",
    "deleted": "deleted",
}
# After _squash: v1 names the entity ("issue"); v2 names entity and action
# ("workitem.updated", or "WebhookScope.ScopeChoices.WORK_ITEM_UPDATED" in Plane's docs).
_V1_ISSUE_EVENTS = frozenset({"issue", "workitem"})
_V2_ISSUE_EVENT = re.compile(
    r"(?:webhookscopescopechoices)?(?:workitem|issue)(created|updated|deleted)"
)


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_SEQUENCE_ID = 999_999_999


class PayloadError(BadPayload):
    """The body is not a Plane webhook conveyor can read; the message says what is wrong."""


class EventKind(StrEnum):
    STATE_CHANGE = "state_change"
    OTHER_FIELD = "other_field"
    DELETED = "deleted"
    CREATED = "created"
    NOT_AN_ISSUE = "not_an_issue"


@dataclass(frozen=True)
class PlaneEvent:
    """One Plane delivery, read. State fields are set for STATE_CHANGE and CREATED only."""

    kind: EventKind
    version: str
    issue_id: str
    project_id: str | None
    sequence_id: int | None
    title: str
    field: str | None
    state_id: str | None
    state_name: str | None
    state_group: str | None
    actor_id: str | None
    actor_name: str | None
    updated_at: str | None
    dedup_key: str
    description_html: str = ""
    labels: tuple[str, ...] = ()
    # `data.state` as sent, which can be newer than the change itself (Plane reads `data`
    # when it sends): a name for its id, never the state this event moved to.
    sent_state_id: str | None = None
    sent_state_name: str | None = None


def sign(secret: str, body: bytes) -> str:
    """Return Plane's ``X-Plane-Signature`` for body: lowercase hex HMAC-SHA256."""
    return hmac_sha256_hex(secret, body)


def verify_signature(secret: str, body: bytes, signature: str | None) -> bool:
    """Check ``X-Plane-Signature`` over the raw body, in constant time."""
    # An empty secret never verifies: an unconfigured webhook is refused, never open.
    return signature_matches(secret, body, signature)


def task_key(
    identifier: str | None, sequence_id: int | None, issue_id: str, project_tag: str = ""
) -> str:
    """Human key of a ticket: ``PROJ-42``, ``plane-42`` (``plane-<project tag>-42`` when
    several projects have no identifier, as sequence ids repeat per project) or
    ``plane-<issue id>``. The last is the whole UUID, never a prefix: a prefix of digits
    would be another ticket's ``plane-<sequence id>``."""
    if identifier and sequence_id is not None:
        return f"{identifier}-{sequence_id}"
    if sequence_id is not None:
        return f"plane-{project_tag}-{sequence_id}" if project_tag else f"plane-{sequence_id}"
    return f"plane-{issue_id.lower()}"


def project_tags(projects: list[str], identifiers: dict[str, str]) -> dict[str, str]:
    """A tag per mapped project that has no identifier, when there are two or more such:
    the project id's first 8 characters, or the whole id where two share that prefix."""
    bare = sorted({p.lower() for p in projects if p and not identifiers.get(p)})
    if len(bare) < 2:
        return {}
    short = [p[:8] for p in bare]
    return {p: p[:8] if short.count(p[:8]) == 1 else p for p in bare}


def parse_event(body: bytes, *, event_header: str | None = None) -> PlaneEvent:
    """Read a Plane v1 or v2 webhook body; raise PayloadError naming what is missing.

    ``event_header`` (``X-Plane-Event``) is only a fallback: it is not signed.
    """
    payload = _load(body)
    event_name = _text_or_none(payload.get("event")) or event_header
    if not event_name:
        raise PayloadError("missing field: event")
    declared_v2 = str(payload.get("version", "")).strip().lower() == "v2"
    squashed = _squash(event_name)
    v2_match = _V2_ISSUE_EVENT.fullmatch(squashed)
    if v2_match:
        return _parse_issue(payload, "v2", v2_match.group(1))
    if squashed not in _V1_ISSUE_EVENTS:
        return _not_an_issue(payload, "v2" if declared_v2 else "v1")
    raw_action = _text_or_none(payload.get("action"))
    if raw_action is None:
        raise PayloadError("missing field: action")
    action = _ACTIONS.get(raw_action.strip().lower(), raw_action.strip().lower())
    return _parse_issue(payload, "v2" if declared_v2 else "v1", action)


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadError(f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("body is not JSON") from exc
    except RecursionError:
        raise PayloadError("body is nested too deeply to be a Plane event") from None
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    return payload


def _squash(name: str) -> str:
    return re.sub(r"[\s_.\-]", "", name.lower())


def _parse_issue(payload: dict[str, Any], version: str, action: str) -> PlaneEvent:
    data = _mapping(payload, "data")
    activity = _optional_mapping(payload.get("activity"))
    previous = _optional_mapping(payload.get("previous_attributes"))
    field = _changed_field(activity, previous)
    kind = _issue_kind(action, field)
    # A v2 delete sends `data: {}` and the last record in previous_attributes.
    record = (data or previous) if kind is EventKind.DELETED else data
    fallback_id = payload.get("entity_id") if version == "v2" else None
    state_id = _event_state_id(kind, activity, data)
    issue_id = _require(
        version,
        action,
        kind,
        issue_id=_text_or_none(record.get("id")) or _text_or_none(fallback_id),
        project_id=_project_id(record),
        field=field,
        state_id=state_id,
    )
    updated_at = _text_or_none(record.get("updated_at"))
    if kind is EventKind.STATE_CHANGE:
        new_value = state_id
    else:
        new_value = _other_new_value(activity, data, field)
    return _event(
        payload,
        kind=kind,
        version=version,
        issue_id=issue_id,
        record=record,
        field=field,
        state_id=state_id,
        dedup_key=_dedup_key(payload, version, issue_id, field, new_value, updated_at, action),
    )


def _event(
    payload: dict[str, Any],
    *,
    kind: EventKind,
    version: str,
    issue_id: str,
    record: dict[str, Any],
    field: str | None,
    state_id: str | None,
    dedup_key: str,
) -> PlaneEvent:
    activity = _optional_mapping(payload.get("activity"))
    actor_id, actor_name = _actor(payload, activity, record)
    state_name, state_group = _state_label(record, state_id)
    return PlaneEvent(
        kind=kind,
        version=version,
        issue_id=issue_id,
        project_id=_project_id(record),
        sequence_id=_sequence_id(record.get("sequence_id")),
        title=_text_or_none(record.get("name")) or "",
        field=field,
        state_id=state_id,
        state_name=state_name,
        state_group=state_group,
        actor_id=actor_id,
        actor_name=actor_name,
        updated_at=_text_or_none(record.get("updated_at")),
        dedup_key=dedup_key,
        description_html=_text_or_none(record.get("description_html")) or "",
        labels=_label_names(record.get("labels")),
        sent_state_id=_sent_state(record)[0],
        sent_state_name=_sent_state(record)[1],
    )


def _not_an_issue(payload: dict[str, Any], version: str) -> PlaneEvent:
    """Comments, projects, cycles…: read what is there, require nothing."""
    data = _optional_mapping(payload.get("data"))
    issue_id = _text_or_none(data.get("id")) or ""
    action = _text_or_none(payload.get("action")) or ""
    updated_at = _text_or_none(data.get("updated_at"))
    return _event(
        payload,
        kind=EventKind.NOT_AN_ISSUE,
        version=version,
        issue_id=issue_id,
        record=data,
        field=None,
        state_id=None,
        dedup_key=_dedup_key(payload, version, issue_id, None, None, updated_at, action),
    )


def _issue_kind(action: str, field: str | None) -> EventKind:
    if action == "deleted":
        return EventKind.DELETED
    if action == "created":
        return EventKind.CREATED
    if action == "updated" and field in _STATE_FIELDS:
        return EventKind.STATE_CHANGE
    return EventKind.OTHER_FIELD


def _changed_field(activity: dict[str, Any], previous: dict[str, Any]) -> str | None:
    """v1 names the field in ``activity``; v2 lists the old values of what changed."""
    field = _text_or_none(activity.get("field"))
    if field is not None:
        return field
    for name in ("state_id", "state"):
        if name in previous:
            return name
    return next(iter(previous), None)


def _event_state_id(kind: EventKind, activity: dict[str, Any], data: dict[str, Any]) -> str | None:
    """The state the event moves the ticket to (or creates it in); None for other kinds."""
    if kind is EventKind.STATE_CHANGE:
        # `data` is read when Plane sends, so it can be newer than `activity`: prefer activity.
        return _text_or_none(activity.get("new_value")) or _current_state_id(data)
    if kind is EventKind.CREATED:
        return _current_state_id(data)
    return None


def _project_id(record: dict[str, Any]) -> str | None:
    return _ref_id(record.get("project")) or _ref_id(record.get("project_id"))


def _current_state_id(data: dict[str, Any]) -> str | None:
    return _ref_id(data.get("state_id")) or _ref_id(data.get("state"))


def _state_label(data: dict[str, Any], state_id: str | None) -> tuple[str | None, str | None]:
    """Name and group from ``data.state``, only when it is the state the event is about."""
    state = data.get("state")
    if state_id is None or not isinstance(state, dict) or state.get("id") != state_id:
        return None, None
    return _text_or_none(state.get("name")), _text_or_none(state.get("group"))


def _require(
    version: str,
    action: str,
    kind: EventKind,
    *,
    issue_id: str | None,
    project_id: str | None,
    field: str | None,
    state_id: str | None,
) -> str:
    """Raise PayloadError naming every missing field; return the issue id."""
    missing = []
    if issue_id is None:
        missing.append("data.id")
    if project_id is None and kind is not EventKind.DELETED:
        missing.append("data.project")
    if version == "v1" and action == "updated" and field is None:
        missing.append("activity.field")
    if kind is EventKind.STATE_CHANGE and state_id is None:
        missing.append("activity.new_value" if version == "v1" else "data.state_id")
    if len(missing) == 1:
        raise PayloadError(f"missing field: {missing[0]}")
    if missing:
        raise PayloadError(f"missing fields: {', '.join(missing)}")
    assert issue_id is not None  # narrowed: "data.id" would be missing otherwise
    for name, value in (("data.id", issue_id), ("data.project", project_id)):
        if value is not None and not _UUID.match(value):
            raise PayloadError(f"field {name} is not a Plane id (a UUID), got {_shown(value)}")
    return issue_id


def _shown(value: str) -> str:
    """A bounded, printable rendering of a value for an error message."""
    return repr(value[:40] + ("…" if len(value) > 40 else ""))


def _actor(
    payload: dict[str, Any], activity: dict[str, Any], data: dict[str, Any]
) -> tuple[str | None, str | None]:
    for candidate in (payload.get("actor"), activity.get("actor"), data.get("updated_by")):
        if isinstance(candidate, dict) and _text_or_none(candidate.get("id")):
            return str(candidate["id"]), _text_or_none(candidate.get("display_name"))
        if isinstance(candidate, str) and candidate:
            return candidate, None
    return None, None


def _other_new_value(activity: dict[str, Any], data: dict[str, Any], field: str | None) -> Any:
    if "new_value" in activity:
        return activity["new_value"]
    return data.get(field) if field else None


def _dedup_key(
    payload: dict[str, Any],
    version: str,
    issue_id: str,
    field: str | None,
    new_value: Any,
    updated_at: str | None,
    action: str,
) -> str:
    """v2 event_id when there is one, else a hash of the content.

    Never X-Plane-Delivery or delivery_id: Plane makes a new one on every retry.
    """
    event_id = _text_or_none(payload.get("event_id"))
    if version == "v2" and event_id:
        return f"plane:v2:{event_id}"
    parts = ["plane", issue_id, field, new_value, updated_at, action]
    content = "|".join(_canonical(part) for part in parts)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _canonical(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _mapping(payload: dict[str, Any], name: str) -> dict[str, Any]:
    value = payload.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"field {name} is not an object")
    return value


def _optional_mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _ref_id(value: Any) -> str | None:
    """A foreign key as Plane sends it: a UUID string, or an expanded object with an id."""
    if isinstance(value, dict):
        return _text_or_none(value.get("id"))
    return _text_or_none(value)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _sent_state(record: dict[str, Any]) -> tuple[str | None, str | None]:
    state = record.get("state")
    if not isinstance(state, dict):
        return None, None
    return _text_or_none(state.get("id")), _text_or_none(state.get("name"))


def _sequence_id(value: Any) -> int | None:
    """Plane's ticket number, or None when absent; PayloadError when it is not one."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SEQUENCE_ID:
        return value
    raise PayloadError(f"field data.sequence_id must be a whole number from 1 to {MAX_SEQUENCE_ID}")


def _label_names(value: Any) -> tuple[str, ...]:
    """Label names where Plane expanded them (``{id, name, color}``); bare ids are skipped."""
    if not isinstance(value, list):
        return ()
    return tuple(
        item["name"][:100]
        for item in value
        if isinstance(item, dict) and _text_or_none(item.get("name"))
    )
