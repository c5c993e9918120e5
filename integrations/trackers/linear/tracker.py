"""Linear behind the tracker port: the sans-I/O webhook side and the GraphQL API side."""

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
from integrations.trackers.linear import webhook
from integrations.trackers.linear.api import LinearApi
from integrations.trackers.linear.graphql import LinearGraphQL
from integrations.trackers.linear.issues import TRACKER
from integrations.trackers.linear.settings import LinearSettings
from integrations.trackers.vocabulary import Vocabulary

NO_API_KEY = (
    "Linear has no API key: set [trackers.linear] api_key (CONVEYOR_LINEAR_API_KEY) "
    "to a personal API key"
)


class LinearTracker:
    """One Linear workspace; ``projects`` maps team keys (``ENG``) to repo names."""

    def __init__(
        self,
        settings: LinearSettings,
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
        key = settings.api_key.get_secret_value()
        graphql = LinearGraphQL(
            http, api_url=settings.api_url, api_key=key, sleep=sleep, clock=clock
        )
        self._api = LinearApi(graphql, self.vocabulary) if key else None

    def __repr__(self) -> str:
        return f"LinearTracker(teams={sorted(self.projects)})"

    @property
    def name(self) -> str:
        return TRACKER

    @property
    def has_api(self) -> bool:
        return self._api is not None

    def verify(self, headers: Headers, body: bytes, *, now: float) -> None:
        secret = self.settings.webhook_secret.get_secret_value()
        webhook.verify(secret, headers, body, now=now)

    def parse(self, headers: Headers, body: bytes) -> TrackerEvent:
        return webhook.parse(
            headers,
            body,
            vocabulary=self.vocabulary,
            projects=self.projects,
            bot_actor_id=self.settings.bot_actor_id,
        )

    def signal_for_labels(self, added: frozenset[str]) -> Signal | None:
        return None  # Linear's workflow states are the signal, not labels

    async def complete(self, event: TrackerEvent) -> TrackerEvent:
        return event  # Linear's Issue webhooks carry the state name and the team key

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        return await self._require_api().read(ref)

    async def changed_since(self, project: str, since: datetime) -> list[Ticket]:
        return await self._require_api().changed_since(project, since)

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        await self._require_api().comment(ref, notice)

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """``CommentLookup``: whether a comment on the issue carries the Notice's marker."""
        return await self._require_api().has_comment(ref, marker)

    def _require_api(self) -> LinearApi:
        if self._api is None:
            raise TrackerError(NO_API_KEY)
        return self._api


def build(settings: TrackerSettings, http: httpx.AsyncClient, projects: Projects) -> Tracker:
    """The registry's constructor: ``[trackers.linear]``, the shared client, the teams."""
    if not isinstance(settings, LinearSettings):
        raise TypeError(f"the Linear adapter needs LinearSettings, not {type(settings).__name__}")
    return LinearTracker(settings, http, projects)
