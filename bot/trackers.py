"""The registry of tracker adapters: the one place in `bot/` that names them.

Adding a tracker adds its package under `integrations/trackers/` (webhook side, API
side, settings section) and one entry here; nothing else in `bot/` changes.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from integrations.trackers import gitea, github, jira, linear, plane
from integrations.trackers.base import Adapter, Tracker, TrackerSettings

ADAPTERS: Mapping[str, Adapter] = {
    adapter.name: adapter
    for adapter in (plane.ADAPTER, github.ADAPTER, gitea.ADAPTER, linear.ADAPTER, jira.ADAPTER)
}


def build_trackers(
    sections: Mapping[str, TrackerSettings],
    http: httpx.AsyncClient,
    projects: Mapping[str, Mapping[str, str]],
) -> dict[str, Tracker]:
    """Every registered tracker, built from its settings section and the projects that
    repos map to it (tracker → {tracker_project: repo name})."""
    return {
        name: adapter.build(sections[name], http, projects.get(name, {}))
        for name, adapter in ADAPTERS.items()
    }
