"""Gitea or Forgejo behind the tracker port (``labels.tracker.LabelTracker``), built from
``[trackers.gitea]``."""

from __future__ import annotations

import asyncio
import time

import httpx

from integrations.trackers.base import Projects, TrackerSettings
from integrations.trackers.gitea import webhooks
from integrations.trackers.gitea.api import HINTS, GiteaIssuesApi, api_headers
from integrations.trackers.gitea.settings import GiteaSettings
from integrations.trackers.http_api import Clock, JsonApi, Sleep
from integrations.trackers.labels.issues import ProjectMap
from integrations.trackers.labels.rules import LabelRules
from integrations.trackers.labels.tracker import LabelTracker

GiteaTracker = LabelTracker

_NO_API = (
    "no Gitea API is configured: set [trackers.gitea] base_url and token "
    "(CONVEYOR_GITEA_BASE_URL, CONVEYOR_GITEA_TOKEN)"
)


def build(
    settings: TrackerSettings,
    http: httpx.AsyncClient,
    projects: Projects,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
) -> LabelTracker:
    """The tracker for ``[trackers.gitea]``; ``sleep`` and ``clock`` are ports for tests."""
    if not isinstance(settings, GiteaSettings):
        raise TypeError(f"Gitea needs GiteaSettings, not {type(settings).__name__}")
    rules = LabelRules(settings.vocabulary(), settings.stop_on_close)
    mapped = ProjectMap(webhooks.TRACKER, dict(projects))
    reader = webhooks.Reader(mapped, rules, settings.bot_login)
    token = settings.token.get_secret_value()
    issues = None
    if token and settings.base_url:
        api = JsonApi(
            http,
            name="Gitea",
            base_url=settings.base_url + "/api/v1",
            headers=api_headers(token),
            secrets=settings.secrets(),
            hints=HINTS,
            sleep=sleep,
            clock=clock,
        )
        issues = GiteaIssuesApi(api, mapped, rules)
    secret = settings.webhook_secret
    return LabelTracker(webhooks.TRACKER, secret, webhooks.verify, reader, issues, _NO_API)
