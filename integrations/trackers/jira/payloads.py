"""Jira Cloud issue webhooks as Jira's sender makes them, signed: for ``conveyor send
jira``, the demo and tests. The counterpart of ``webhook.parse``.

Jira renders the issue as REST v2 does (``self`` under ``/rest/api/2/``, the description
in wiki markup). Ids Jira would assign (the issue's, the statuses') are derived from the
key and the status names, so that two sends for ``PROJ-42`` speak of the same issue.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from integrations.trackers.jira.reading import issue_key, project_of
from integrations.trackers.signing import hmac_sha256_hex

SENDER_ACCOUNT_ID = "712020:5b6c0f3e-8a1d-4c2b-9e7f-3d4a5b6c7d8e"  # who `conveyor send` is
SENDER_NAME = "conveyor send"
DEFAULT_SITE = "https://acme.atlassian.net"


def issue_status_change(
    *,
    key: str,
    state: str,
    secret: str,
    now: float,
    before: str = "To Do",
    base_url: str = DEFAULT_SITE,
    title: str | None = None,
    delivery: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``jira:issue_updated`` moving ``key`` from ``before`` to ``state``."""
    doc = _envelope("jira:issue_updated", "issue_generic", key, state, title, base_url, now)
    doc["changelog"] = {
        "id": str(_number(key, "changelog", now)),
        "items": [
            {
                "field": "status",
                "fieldtype": "jira",
                "fieldId": "status",
                "from": str(_number(project_of(key), before)),
                "fromString": before,
                "to": str(_number(project_of(key), state)),
                "toString": state,
            }
        ],
    }
    return _signed(doc, secret, delivery)


def issue_deleted(
    *,
    key: str,
    state: str,
    secret: str,
    now: float,
    base_url: str = DEFAULT_SITE,
    delivery: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``jira:issue_deleted`` for ``key`` (last seen in ``state``)."""
    doc = _envelope("jira:issue_deleted", "issue_deleted", key, state, None, base_url, now)
    return _signed(doc, secret, delivery)


def issue_id_of(key: str) -> str:
    """The numeric issue id these payloads use for ``key``."""
    return str(_number(issue_key(key, ValueError), "issue"))


def _envelope(
    event: str,
    event_type: str,
    key: str,
    state: str,
    title: str | None,
    base_url: str,
    now: float,
) -> dict[str, Any]:
    site = base_url.rstrip("/")
    project = project_of(issue_key(key, ValueError))
    at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "000+0000"
    status = {
        "self": f"{site}/rest/api/2/status/{_number(project, state)}",
        "description": "",
        "name": state,
        "id": str(_number(project, state)),
        "statusCategory": {"id": 4, "key": "indeterminate", "name": "In Progress"},
    }
    fields: dict[str, Any] = {
        "summary": title or f"Ticket {key}",
        "description": None,
        "status": status,
        "labels": [],
        "updated": at,
        "created": at,
        "issuetype": {"id": "10001", "name": "Task", "subtask": False},
        "project": {
            "self": f"{site}/rest/api/2/project/{_number(project, 'project')}",
            "id": str(_number(project, "project")),
            "key": project,
            "name": project.title(),
            "projectTypeKey": "software",
        },
    }
    issue_id = issue_id_of(key)
    return {
        "timestamp": int(now * 1000),
        "webhookEvent": event,
        "issue_event_type_name": event_type,
        "user": {
            "self": f"{site}/rest/api/2/user?accountId={SENDER_ACCOUNT_ID}",
            "accountId": SENDER_ACCOUNT_ID,
            "displayName": SENDER_NAME,
            "active": True,
            "timeZone": "UTC",
            "accountType": "atlassian",
        },
        "issue": {
            "id": issue_id,
            "self": f"{site}/rest/api/2/{issue_id}",
            "key": key,
            "fields": fields,
        },
    }


def _signed(doc: dict[str, Any], secret: str, delivery: str | None) -> tuple[dict[str, str], bytes]:
    body = json.dumps(doc, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json; charset=UTF-8",
        "User-Agent": "Atlassian Webhook HTTP Client",
        "X-Atlassian-Webhook-Identifier": delivery or str(uuid.uuid4()),
        "X-Atlassian-Webhook-Flow": "Primary",
        "X-Hub-Signature": "sha256=" + hmac_sha256_hex(secret, body),
    }
    return headers, body


def _number(*parts: object) -> int:
    """A stable Jira-like numeric id (10000 and up) for these names."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return 10000 + int.from_bytes(digest[:4], "big") % 90000
