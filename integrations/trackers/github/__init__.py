"""GitHub Issues as a tracker: labels start and stop the work (DESIGN: Trackers)."""

from integrations.trackers.base import Adapter
from integrations.trackers.github.settings import ENV, GitHubSettings
from integrations.trackers.github.tracker import GitHubTracker, build

ADAPTER = Adapter(name="github", settings=GitHubSettings, build=build, env=ENV)

__all__ = ["ADAPTER", "GitHubSettings", "GitHubTracker", "build"]
