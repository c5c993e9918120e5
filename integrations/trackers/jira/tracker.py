"""Jira Cloud behind the tracker port: the sans-I/O webhook side and the REST v3 side."""

from __future__ import annotations

import asyncio
import time
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
    Tracker,
    TrackerError,
    TrackerEvent,
    TrackerSettings,
)
from integrations.trackers.http_api import Clock, Sleep
from integrations.trackers.jira import webhook
from integrations.trackers.jira.api import JiraApi
from integrations.trackers.jira.issues import TRACKER
from integrations.trackers.jira.settings import JiraSettings
from integrations.trackers.vocabulary import Vocabulary

NO_API = (
    "Jira has no API credentials: set [trackers.jira] base_url, email and api_token "
    "(CONVEYOR_JIRA_BASE_URL, CONVEYOR_JIRA_EMAIL, CONVEYOR_JIRA_API_TOKEN)"
)


class JiraTracker:
    """One Jira Cloud site; ``projects`` maps project keys (``PROJ``) to repo names."""

    def __init__(
        self,
        settings: JiraSettings,
        http: httpx.AsyncClient,
        projects: Projects,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.projects = dict(projects)
        self.vocabulary = Vocabulary.of(
            settings.start_states, settings.stop_states, settings.confirm_deploy_states
        )
        token = settings.api_token.get_secret_value()
        self._api = None
        if settings.base_url and settings.email and token:
            self._api = JiraApi(
                http,
                base_url=settings.base_url,
                email=settings.email,
                api_token=token,
                vocabulary=self.vocabulary,
                sleep=sleep,
                clock=clock,
            )

    def __repr__(self) -> str:
        return f"JiraTracker({self.settings.base_url!r}, projects={sorted(self.projects)})"

    @property
    def name(self) -> str:
        return TRACKER

    @property
    def has_api(self) -> bool:
        return self._api is not None

    def verify(self, headers: Headers, body: bytes, *, now: float) -> None:
        # Jira signs no timestamp: replays are caught by the delivery dedupe instead.
        webhook.verify(self.settings.webhook_secret.get_secret_value(), headers, body)

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        return webhook.parse(
            headers,
            body,
            vocabulary=self.vocabulary,
            projects=self.projects,
            base_url=self.settings.base_url,
            bot_account_id=self.settings.bot_account_id,
        )

    def signal_for_labels(self, added: frozenset[str]) -> Signal | None:
        return None  # Jira's statuses are the signal, not labels

    async def complete(self, event: TrackerEvent) -> TrackerEvent:
        return event  # Jira's issue webhooks carry the status names and the project key

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        return await self._require_api().read(ref)

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        return await self._require_api().changed_since(project, since)

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        await self._require_api().comment(ref, notice)

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """``CommentLookup``: whether a comment on the issue carries the Notice's marker."""
        return await self._require_api().has_comment(ref, marker)

    def _require_api(self) -> JiraApi:
        if self._api is None:
            raise TrackerError(NO_API)
        return self._api


def build(settings: TrackerSettings, http: httpx.AsyncClient, projects: Projects) -> Tracker:
    """The registry's constructor: ``[trackers.jira]``, the shared client, the projects."""
    if not isinstance(settings, JiraSettings):
        raise TypeError(f"the Jira adapter needs JiraSettings, not {type(settings).__name__}")
    return JiraTracker(settings, http, projects)
