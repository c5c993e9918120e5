"""``issues`` deliveries as GitHub sends them: for ``conveyor send github``, the demo and
tests. The counterpart of ``webhooks.Reader.parse``.

GitHub posts compact JSON (``Content-Type: application/json``) signed twice over the raw
body: ``X-Hub-Signature`` (HMAC-SHA1) and ``X-Hub-Signature-256`` (HMAC-SHA256), with
``X-GitHub-Event``, ``X-GitHub-Delivery`` (a GUID, kept on redelivery) and the hook's ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from integrations.trackers.signing import hmac_sha256_hex

ACTIONS = ("labeled", "unlabeled", "closed")
_HOOK_ID = "512340001"


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
    state_reason: str = "not_planned",
    web_url: str = "https://github.com",
    api_url: str = "https://api.github.com",
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an ``issues`` delivery: ``label`` added (``labeled``) or removed
    (``unlabeled``), or the issue closed with ``state_reason``; ``labels`` are the issue's
    other labels."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    if action != "closed" and not label:
        raise ValueError(f"a {action} delivery needs a label")
    at = _stamp(now or datetime.now(UTC))
    current = [name for name in labels if name != label]
    if label and action != "unlabeled":
        current.append(label)
    repo = _Repo(full_name, web_url, api_url)
    doc: dict[str, Any] = {
        "action": action,
        "issue": repo.issue(
            number, title or f"Issue {number}", current, sender, at, action, state_reason
        ),
    }
    if label and action != "closed":
        doc["label"] = repo.label(label)
    doc |= {"repository": repo.repository(at), "sender": _user(sender, web_url, api_url)}
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _headers(secret, body, delivery or str(uuid.uuid4()), repo.id), body


def _headers(secret: str, body: bytes, delivery: str, repo_id: int) -> dict[str, str]:
    sha1 = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/8e4c2a1",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "issues",
        "X-GitHub-Hook-ID": _HOOK_ID,
        "X-GitHub-Hook-Installation-Target-ID": str(repo_id),
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-Hub-Signature": f"sha1={sha1}",
        "X-Hub-Signature-256": f"sha256={hmac_sha256_hex(secret, body)}",
    }


def stable_id(*parts: object) -> int:
    """A numeric id that stays the same for the same thing across runs."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode("utf-8")).digest()
    return 100_000_000 + int.from_bytes(digest[:4], "big") % 800_000_000


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Repo:
    def __init__(self, full_name: str, web_url: str, api_url: str) -> None:
        self.full_name, self.web, self.api = full_name, web_url.rstrip("/"), api_url.rstrip("/")
        self.owner, _, self.name = full_name.partition("/")
        self.id = stable_id("repo", full_name)
        self.api_repo = f"{self.api}/repos/{full_name}"

    def issue(
        self,
        number: int,
        title: str,
        labels: Sequence[str],
        sender: str,
        at: str,
        action: str,
        state_reason: str,
    ) -> dict[str, Any]:
        api_issue = f"{self.api_repo}/issues/{number}"
        closed = action == "closed"
        return {
            "url": api_issue,
            "repository_url": self.api_repo,
            "labels_url": f"{api_issue}/labels{{/name}}",
            "comments_url": f"{api_issue}/comments",
            "events_url": f"{api_issue}/events",
            "html_url": f"{self.web}/{self.full_name}/issues/{number}",
            "id": stable_id("issue", self.full_name, number),
            "node_id": f"I_kwDO{stable_id('node', self.full_name, number):x}",
            "number": number,
            "title": title,
            "user": _user(sender, self.web, self.api),
            "labels": [self.label(name) for name in labels],
            "state": "closed" if closed else "open",
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": 0,
            "created_at": at,
            "updated_at": at,
            "closed_at": at if closed else None,
            "author_association": "MEMBER",
            "active_lock_reason": None,
            "body": None,
            "timeline_url": f"{api_issue}/timeline",
            "performed_via_github_app": None,
            "state_reason": state_reason if closed else None,
        }

    def label(self, name: str) -> dict[str, Any]:
        return {
            "id": stable_id("label", self.full_name, name),
            "node_id": f"LA_kwDO{stable_id('label-node', self.full_name, name):x}",
            "url": f"{self.api_repo}/labels/{quote(name)}",
            "name": name,
            "color": "ededed",
            "default": False,
            "description": None,
        }

    def repository(self, at: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "node_id": f"R_kgDO{self.id:x}",
            "name": self.name,
            "full_name": self.full_name,
            "private": True,
            "owner": _user(self.owner, self.web, self.api),
            "html_url": f"{self.web}/{self.full_name}",
            "url": self.api_repo,
            "created_at": at,
            "updated_at": at,
            "default_branch": "main",
            "visibility": "private",
        }


def _user(login: str, web: str, api: str) -> dict[str, Any]:
    return {
        "login": login,
        "id": stable_id("user", login),
        "node_id": f"U_kgDO{stable_id('user-node', login):x}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{stable_id('user', login)}?v=4",
        "html_url": f"{web}/{login}",
        "url": f"{api}/users/{login}",
        "type": "User",
        "site_admin": False,
    }
