"""Reading Jira's JSON: one place that turns a malformed body into a message."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from integrations.trackers.base import BadPayload, Headers

Fail = Callable[[str], Exception]

_ISSUE_ID = re.compile(r"[0-9]{1,18}")
# A project key (an uppercase letter, then uppercase letters, digits or _), a dash, the
# issue number: PROJ-42.
_PROJECT_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_ISSUE_KEY = re.compile(r"([A-Z][A-Z0-9_]{0,31})-[0-9]{1,12}")


def header(headers: Headers, name: str) -> str | None:
    """A header by name, whatever its case; None when absent or blank."""
    lowered = name.lower()
    value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value.strip() if value and value.strip() else None


def load_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BadPayload saying why not."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise BadPayload("body is nested too deeply to be a Jira webhook") from None
    except ValueError:  # includes UnicodeDecodeError
        raise BadPayload("body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadPayload("body is not a JSON object")
    return doc


def mapping(doc: dict[str, Any], name: str, fail: Fail) -> dict[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise fail(f"missing field: {name} (an object)")
    return value


def optional_mapping(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def text(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value.strip() else None


def issue_id(value: Any, fail: Fail) -> str:
    """Jira's issue id: digits (``10042``)."""
    if not isinstance(value, str) or not _ISSUE_ID.fullmatch(value):
        raise fail(f"issue.id must be Jira's numeric issue id, got {_shown(value)}")
    return value


def issue_key(value: Any, fail: Fail) -> str:
    """Jira's issue key: ``PROJ-42``."""
    if not isinstance(value, str) or not _ISSUE_KEY.fullmatch(value):
        raise fail(f"issue.key must look like PROJ-42, got {_shown(value)}")
    return value


def project_of(key: str) -> str:
    """The project key of an issue key: ``PROJ`` of ``PROJ-42``."""
    return key.rsplit("-", 1)[0]


def is_issue_id(value: str) -> bool:
    return bool(_ISSUE_ID.fullmatch(value))


def is_project_key(value: str) -> bool:
    return bool(_PROJECT_KEY.fullmatch(value))


def timestamp(value: Any) -> datetime | None:
    """Jira's ``2026-11-30T10:15:02.123+0000`` as an aware datetime; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _shown(value: Any) -> str:
    return repr(value)[:60]
