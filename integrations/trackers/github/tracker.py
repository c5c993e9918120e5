"""GitHub Issues behind the tracker port: webhooks read without I/O, the API on demand."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import httpx

from integrations.trackers.base import (
    Gone,
    Headers,
    Notice,
    Projects,
    Signal,
    Ticket,
    TicketRef,
    TrackerError,
    TrackerEvent,
    TrackerSettings,
)
from integrations.trackers.github import webhooks
from integrations.trackers.github.api import HINTS, IssuesApi, api_headers, rate_limited
from integrations.trackers.github.settings import GitHubSettings
from integrations.trackers.http_api import Clock, JsonApi, Sleep
from integrations.trackers.labels.issues import ProjectMap
from integrations.trackers.labels.rules import LabelRules

_NO_TOKEN = "no GitHub token is configured: set [trackers.github] token (CONVEYOR_GITHUB_TOKEN)"


@dataclass
class GitHubTracker:
    """One GitHub (or GitHub Enterprise) instance and the repositories mapped to conveyor."""

    settings: GitHubSettings
    reader: webhooks.Reader
    issues: IssuesApi | None  # None without a token

    @property
    def name(self) -> str:
        return webhooks.TRACKER

    @property
    def has_api(self) -> bool:
        return self.issues is not None

    def verify(self, headers: Headers, body: bytes, *, now: float) -> None:
        webhooks.verify(headers, body, self.settings.webhook_secret.get_secret_value())

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        return self.reader.parse(headers, body)

    def signal_for_labels(self, added: frozenset[str]) -> Signal | None:
        return self.reader.rules.for_labels(added)

    async def complete(self, event: TrackerEvent) -> TrackerEvent:
        return event  # a GitHub delivery carries the whole issue

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        return await self._api().read(ref)

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        return await self._api().changed_since(project, since)

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        await self._api().comment(ref, notice)

    def _api(self) -> IssuesApi:
        if self.issues is None:
            raise TrackerError(_NO_TOKEN)
        return self.issues


def build(
    settings: TrackerSettings,
    http: httpx.AsyncClient,
    projects: Projects,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
) -> GitHubTracker:
    """The tracker for ``[trackers.github]``; ``sleep`` and ``clock`` are ports for tests."""
    if not isinstance(settings, GitHubSettings):
        raise TypeError(f"GitHub needs GitHubSettings, not {type(settings).__name__}")
    rules = LabelRules(settings.vocabulary(), settings.stop_on_close)
    mapped = ProjectMap(webhooks.TRACKER, dict(projects))
    reader = webhooks.Reader(mapped, rules, settings.bot_login)
    token = settings.token.get_secret_value()
    if not token:
        return GitHubTracker(settings, reader, None)
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
    return GitHubTracker(settings, reader, IssuesApi(api, mapped, rules))
