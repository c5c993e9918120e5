"""Gitea or Forgejo issues as a tracker: labels start and stop the work (DESIGN: Trackers)."""

from integrations.trackers.base import Adapter
from integrations.trackers.gitea.settings import ENV, GiteaSettings
from integrations.trackers.gitea.tracker import GiteaTracker, build

ADAPTER = Adapter(name="gitea", settings=GiteaSettings, build=build, env=ENV)

__all__ = ["ADAPTER", "GiteaSettings", "GiteaTracker", "build"]
