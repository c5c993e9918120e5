"""Reading Linear's JSON: one place that turns a malformed body into a message."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from integrations.trackers.base import BadPayload, Headers

Fail = Callable[[str], Exception]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A team key (uppercase letters and digits), a dash, the issue number: ENG-123.
_IDENTIFIER = re.compile(r"[A-Z0-9]{1,16}-[0-9]{1,12}")


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
        raise BadPayload("body is nested too deeply to be a Linear webhook") from None
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


def text(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value.strip() else None


def issue_id(value: Any, fail: Fail) -> str:
    """Linear's issue id: a UUID."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise fail(f"data.id must be a Linear issue UUID, got {_shown(value)}")
    return value.lower()


def identifier(value: Any, fail: Fail) -> str:
    """Linear's issue key: ``ENG-123``."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise fail(f"identifier must look like ENG-123, got {_shown(value)}")
    return value


def timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time as an aware datetime; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _shown(value: Any) -> str:
    return repr(value)[:60]
