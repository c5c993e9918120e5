"""Reading Jira's JSON: its ids and keys here, the rest shared (``json_fields``)."""

from __future__ import annotations

import re
from typing import Any

from integrations.trackers import json_fields
from integrations.trackers.json_fields import (
    Fail,
    header,
    mapping,
    optional_mapping,
    shown,
    text,
    timestamp,
)

__all__ = ["Fail", "header", "is_issue_id", "is_project_key", "issue_id", "issue_key"]
__all__ += ["load_object", "mapping", "optional_mapping", "project_of", "text", "timestamp"]

_ISSUE_ID = re.compile(r"[0-9]{1,18}")
# A project key (an uppercase letter, then uppercase letters, digits or _), a dash, the
# issue number: PROJ-42.
_PROJECT_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_ISSUE_KEY = re.compile(r"([A-Z][A-Z0-9_]{0,31})-[0-9]{1,12}")


def load_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BadPayload saying why not."""
    return json_fields.load_object(body, "a Jira webhook")


def issue_id(value: Any, fail: Fail) -> str:
    """Jira's issue id: digits (``10042``)."""
    if not isinstance(value, str) or not _ISSUE_ID.fullmatch(value):
        raise fail(f"issue.id must be Jira's numeric issue id, got {shown(value)}")
    return value


def issue_key(value: Any, fail: Fail) -> str:
    """Jira's issue key: ``PROJ-42``."""
    if not isinstance(value, str) or not _ISSUE_KEY.fullmatch(value):
        raise fail(f"issue.key must look like PROJ-42, got {shown(value)}")
    return value


def project_of(key: str) -> str:
    """The project key of an issue key: ``PROJ`` of ``PROJ-42``."""
    return key.rsplit("-", 1)[0]


def is_issue_id(value: str) -> bool:
    return bool(_ISSUE_ID.fullmatch(value))


def is_project_key(value: str) -> bool:
    return bool(_PROJECT_KEY.fullmatch(value))
