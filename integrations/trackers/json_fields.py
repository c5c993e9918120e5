"""Reading a webhook's JSON without trusting it: the pieces Linear's and Jira's readers
share (each keeps its own ids and keys). One place turns a malformed body or field into
a message."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from integrations.trackers.base import BadPayload, Headers

Fail = Callable[[str], Exception]


def header(headers: Headers, name: str) -> str | None:
    """A header by name, whatever its case; None when absent or blank."""
    lowered = name.lower()
    value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value.strip() if value and value.strip() else None


def load_object(body: bytes, what: str) -> dict[str, Any]:
    """The body as a JSON object, or BadPayload saying why not (``what``: "a Jira webhook")."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise BadPayload(f"body is nested too deeply to be {what}") from None
    except ValueError:  # includes UnicodeDecodeError
        raise BadPayload("body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadPayload("body is not a JSON object")
    return doc


def mapping(doc: dict[str, Any], name: str, fail: Fail) -> dict[str, Any]:
    """A required object field."""
    value = doc.get(name)
    if not isinstance(value, dict):
        raise fail(f"missing field: {name} (an object)")
    return value


def optional_mapping(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def text(doc: dict[str, Any], name: str) -> str | None:
    """A string field with something in it, else None."""
    value = doc.get(name)
    return value if isinstance(value, str) and value.strip() else None


def timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time (``…Z``, ``…+0000``) as an aware datetime; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def shown(value: Any) -> str:
    """A bad value as a message shows it: its repr, cut short."""
    return repr(value)[:60]
