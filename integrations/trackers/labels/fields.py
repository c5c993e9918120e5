"""Values read from a delivery or an API answer: checked, bounded, never trusted."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from integrations.trackers.base import BadPayload

MAX_ID_CHARS = 200
MAX_TITLE_CHARS = 1024
MAX_DESCRIPTION_CHARS = 256 * 1024
MAX_URL_CHARS = 2048
MAX_LABELS = 500
MAX_ISSUE_NUMBER = 9_999_999_999  # ten digits
# So that ``owner/name#<ten digits>`` stays within MAX_ID_CHARS (GitHub allows 39 + 100).
MAX_FULL_NAME_CHARS = 180

_SEGMENT = r"[A-Za-z0-9._-]{1,100}"
_FULL_NAME = re.compile(rf"({_SEGMENT})/({_SEGMENT})")
ISSUE_ID = re.compile(rf"({_SEGMENT}/{_SEGMENT})#([1-9][0-9]{{0,9}})")


def bounded_id(value: str, field: str, limit: int = MAX_ID_CHARS) -> str:
    if len(value) > limit:
        raise BadPayload(f"{field} is longer than {limit} characters")
    if "\x00" in value:
        raise BadPayload(f"{field} contains a NUL character")
    return value


def text(doc: Mapping[str, Any], name: str, field: str) -> str:
    """A required, non-empty string field, bounded."""
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadPayload(f"missing field: {field}")
    return bounded_id(value, field)


def optional_text(doc: Mapping[str, Any], name: str, field: str, limit: int = MAX_ID_CHARS) -> str:
    value = doc.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadPayload(f"field {field} is not a string")
    return bounded_id(value, field, limit)


def free_text(value: Any, field: str, limit: int) -> str:
    """Title and description: cut to ``limit``, NULs dropped (never refuse a STOP for a body)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadPayload(f"field {field} is not a string")
    return value.replace("\x00", "")[:limit]


def mapping(doc: Mapping[str, Any], name: str, field: str) -> dict[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise BadPayload(
            f"missing field: {field}" if value is None else f"field {field} is not an object"
        )
    return value


def full_name(value: Any, field: str = "repository.full_name") -> str:
    """``owner/name`` with letters, digits, ``.``, ``_``, ``-``; never ``..``; bounded."""
    if not isinstance(value, str) or not value:
        raise BadPayload(f"missing field: {field}")
    match = _FULL_NAME.fullmatch(value)
    if (
        match is None
        or len(value) > MAX_FULL_NAME_CHARS
        or any(set(part) == {"."} for part in match.groups())
    ):
        shown = json.dumps(value[:80])
        raise BadPayload(f"field {field} must look like owner/name, not {shown}")
    return value


def issue_number(value: Any, field: str = "issue.number") -> int:
    """A positive integer of at most ten digits (not a bool, not a string)."""
    if value is None:
        raise BadPayload(f"missing field: {field}")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ISSUE_NUMBER:
        raise BadPayload(f"field {field} must be a positive whole number of at most 10 digits")
    return value


def timestamp(value: Any, field: str) -> datetime | None:
    """An ISO 8601 time with an offset (``Z`` or ``+01:00``), as an aware datetime."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise BadPayload(f"field {field} is not a time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadPayload(f"field {field} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise BadPayload(f"field {field} has no UTC offset")
    return parsed


def label_names(value: Any, field: str) -> tuple[str, ...]:
    """Names from ``[{"name": …}, …]`` (Gitea sends ``null`` for no labels)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_LABELS:
        raise BadPayload(f"field {field} is not a list of labels")
    names = []
    for item in value:
        if not isinstance(item, dict):
            raise BadPayload(f"field {field} is not a list of labels")
        names.append(text(item, "name", f"{field}[].name"))
    return tuple(names)


def is_pull_request(issue: Mapping[str, Any]) -> bool:
    """GitHub omits ``pull_request`` on issues; Gitea sends it as ``null``."""
    return issue.get("pull_request") not in (None, {}, False)


def login(doc: Mapping[str, Any], field: str = "sender") -> tuple[str | None, str | None]:
    """(login, id) of a user object, both optional."""
    user = doc.get(field)
    if not isinstance(user, dict):
        return None, None
    name = optional_text(user, "login", f"{field}.login") or None
    raw_id = user.get("id")
    user_id = str(raw_id) if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
    return name, user_id
