"""GitHub Issues behind the tracker port (``labels.tracker.LabelTracker``), built from
``[trackers.github]``."""

from __future__ import annotations

import asyncio
import time

import httpx

from integrations.trackers.base import Projects, TrackerSettings
from integrations.trackers.github import webhooks
from integrations.trackers.github.api import HINTS, IssuesApi, api_headers, rate_limited
from integrations.trackers.github.settings import GitHubSettings
from integrations.trackers.http_api import Clock, JsonApi, Sleep
from integrations.trackers.labels.issues import ProjectMap
from integrations.trackers.labels.rules import LabelRules
from integrations.trackers.labels.tracker import LabelTracker

GitHubTracker = LabelTracker

_NO_TOKEN = "no GitHub token is configured: set [trackers.github] token (CONVEYOR_GITHUB_TOKEN)"


def build(
    settings: TrackerSettings,
    http: httpx.AsyncClient,
    projects: Projects,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
) -> LabelTracker:
    """The tracker for ``[trackers.github]``; ``sleep`` and ``clock`` are ports for tests."""
    if not isinstance(settings, GitHubSettings):
        raise TypeError(f"GitHub needs GitHubSettings, not {type(settings).__name__}")
    rules = LabelRules(settings.vocabulary(), settings.stop_on_close)
    mapped = ProjectMap(webhooks.TRACKER, dict(projects))
    reader = webhooks.Reader(mapped, rules, settings.bot_login)
    token = settings.token.get_secret_value()
    issues = None
    if token:
        api = JsonApi(
            http,
            name="GitHub",
            base_url=settings.api_url,
            headers=api_headers(token),
            secrets=settings.secrets(),
            hints=HINTS,
            sleep=sleep,
            clock=clock,
            rate_limited=rate_limited,
        )
        issues = IssuesApi(api, mapped, rules)
    secret = settings.webhook_secret
    return LabelTracker(webhooks.TRACKER, secret, webhooks.verify, reader, issues, _NO_TOKEN)
