"""``issues`` deliveries as Gitea (or Forgejo) sends them: for ``conveyor send gitea``,
the demo and tests. The counterpart of ``webhooks.Reader.parse``.

Gitea posts ``json.MarshalIndent(payload, "", "  ")`` (Go's encoder: ``<``, ``>``, ``&``
escaped, other text as UTF-8) with ``X-Gitea-*``, ``X-Gogs-*`` and ``X-GitHub-*``
headers, ``X-Hub-Signature`` (``sha1=``) and ``X-Hub-Signature-256`` (``sha256=``);
Forgejo adds ``X-Forgejo-*``. A label change, added or removed, is ``label_updated``
with the full list (``services/webhook/notifier.go`` ``IssueChangeLabels``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from integrations.trackers.signing import hmac_sha256_hex

ACTIONS = ("labeled", "unlabeled", "closed")


def build_delivery(
    *,
    secret: str,
    full_name: str,
    number: int,
    label: str | None,
    action: str = "labeled",
    labels: Sequence[str] = (),
    sender: str = "ada",
    delivery: str | None = None,
    now: datetime | None = None,
    title: str = "",
    base_url: str = "https://gitea.example.com",
    forgejo: bool = False,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an ``issues`` delivery: ``label`` added to or removed from the
    issue's other ``labels`` (both ``label_updated``), or the issue closed."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    if action != "closed" and not label:
        raise ValueError(f"a {action} delivery needs a label")
    at = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    current = [name for name in labels if name != label]
    if label and action != "unlabeled":
        current.append(label)
    repo = _Repo(full_name, base_url.rstrip("/"))
    closed = action == "closed"
    doc = {
        "action": "closed" if closed else "label_updated",
        "number": number,
        "issue": repo.issue(number, title or f"Issue {number}", current, sender, at, closed),
        "repository": repo.repository(at),
        "sender": repo.user(sender),
        "commit_id": "",
    }
    body = _go_json(doc)
    event_type = "issues" if closed else "issue_label"
    return _headers(secret, body, delivery or str(uuid.uuid4()), event_type, forgejo), body


def _go_json(doc: dict[str, Any]) -> bytes:
    text = json.dumps(doc, ensure_ascii=False, indent=2)
    # Go escapes these for HTML safety; they only ever occur inside strings here.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("utf-8")


def _headers(
    secret: str, body: bytes, delivery: str, event_type: str, forgejo: bool
) -> dict[str, str]:
    sha256 = hmac_sha256_hex(secret, body) if secret else ""
    sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest() if secret else ""
    headers = {"Content-Type": "application/json"}
    prefixes = ("X-Forgejo", "X-Gitea", "X-Gogs") if forgejo else ("X-Gitea", "X-Gogs")
    for prefix in prefixes:
        headers |= {
            f"{prefix}-Delivery": delivery,
            f"{prefix}-Event": "issues",
            f"{prefix}-Event-Type": event_type,
            f"{prefix}-Signature": sha256,
        }
    return headers | {
        "X-Hub-Signature": f"sha1={sha1}",
        "X-Hub-Signature-256": f"sha256={sha256}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "issues",
        "X-GitHub-Event-Type": event_type,
    }


def stable_id(*parts: object) -> int:
    """A small numeric id that stays the same for the same thing across runs."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode("utf-8")).digest()
    return 1 + int.from_bytes(digest[:3], "big") % 900_000


class _Repo:
    def __init__(self, full_name: str, base_url: str) -> None:
        self.full_name, self.base = full_name, base_url
        self.owner, _, self.name = full_name.partition("/")
        self.api = f"{base_url}/api/v1/repos/{full_name}"

    def issue(
        self, number: int, title: str, labels: Sequence[str], sender: str, at: str, closed: bool
    ) -> dict[str, Any]:
        return {
            "id": stable_id("issue", self.full_name, number),
            "url": f"{self.api}/issues/{number}",
            "html_url": f"{self.base}/{self.full_name}/issues/{number}",
            "number": number,
            "user": self.user(sender),
            "original_author": "",
            "original_author_id": 0,
            "title": title,
            "body": "",
            "ref": "",
            "assets": [],
            "labels": [self.label(name) for name in labels],
            "milestone": None,
            "assignee": None,
            "assignees": None,
            "state": "closed" if closed else "open",
            "is_locked": False,
            "comments": 0,
            "created_at": at,
            "updated_at": at,
            "closed_at": at if closed else None,
            "due_date": None,
            "pull_request": None,
            "repository": {
                "id": stable_id("repo", self.full_name),
                "name": self.name,
                "owner": self.owner,
                "full_name": self.full_name,
            },
            "pin_order": 0,
        }

    def label(self, name: str) -> dict[str, Any]:
        label_id = stable_id("label", self.full_name, name)
        return {
            "id": label_id,
            "name": name,
            "exclusive": False,
            "is_archived": False,
            "color": "e11d21",
            "description": "",
            "url": f"{self.api}/labels/{label_id}",
        }

    def repository(self, at: str) -> dict[str, Any]:
        return {
            "id": stable_id("repo", self.full_name),
            "owner": self.user(self.owner),
            "name": self.name,
            "full_name": self.full_name,
            "description": "",
            "empty": False,
            "private": True,
            "fork": False,
            "html_url": f"{self.base}/{self.full_name}",
            "url": self.api,
            "clone_url": f"{self.base}/{self.full_name}.git",
            "default_branch": "main",
            "created_at": at,
            "updated_at": at,
            "has_issues": True,
        }

    def user(self, login: str) -> dict[str, Any]:
        return {
            "id": stable_id("user", login),
            "login": login,
            "login_name": "",
            "source_id": 0,
            "full_name": "",
            "email": f"{login}@noreply.{self.base.split('://')[-1].split('/')[0]}",
            "avatar_url": f"{self.base}/avatars/{stable_id('avatar', login):x}",
            "html_url": f"{self.base}/{login}",
            "language": "",
            "is_admin": False,
            "restricted": False,
            "active": False,
            "prohibit_login": False,
            "visibility": "public",
            "username": login,
        }
