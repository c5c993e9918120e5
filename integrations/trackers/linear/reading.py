"""Reading Linear's JSON: its ids and keys here, the rest shared (``json_fields``)."""

from __future__ import annotations

import re
from typing import Any

from integrations.trackers import json_fields
from integrations.trackers.json_fields import Fail, header, mapping, shown, text, timestamp

__all__ = ["Fail", "header", "identifier", "issue_id", "load_object", "mapping", "text"]
__all__ += ["timestamp"]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A team key (uppercase letters and digits), a dash, the issue number: ENG-123.
_IDENTIFIER = re.compile(r"[A-Z0-9]{1,16}-[0-9]{1,12}")


def load_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BadPayload saying why not."""
    return json_fields.load_object(body, "a Linear webhook")


def issue_id(value: Any, fail: Fail) -> str:
    """Linear's issue id: a UUID."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise fail(f"data.id must be a Linear issue UUID, got {shown(value)}")
    return value.lower()


def identifier(value: Any, fail: Fail) -> str:
    """Linear's issue key: ``ENG-123``."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise fail(f"identifier must look like ENG-123, got {shown(value)}")
    return value
