"""Plane: webhooks (v1 from the open-source sender, v2 from Plane's hosted service) and
the REST API, behind the tracker port."""

from __future__ import annotations

from typing import cast

import httpx

from integrations.trackers.base import Adapter, Projects, Tracker, TrackerSettings
from integrations.trackers.plane.settings import ENV, PlaneSettings
from integrations.trackers.plane.tracker import PlaneTracker


def build(settings: TrackerSettings, http: httpx.AsyncClient, projects: Projects) -> Tracker:
    return PlaneTracker(cast(PlaneSettings, settings), http, projects)


ADAPTER = Adapter(name="plane", settings=PlaneSettings, build=build, env=ENV)

__all__ = ["ADAPTER", "PlaneSettings", "PlaneTracker"]
