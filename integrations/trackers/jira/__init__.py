"""Jira Cloud as a tracker: statuses start and stop the work (DESIGN "Trackers")."""

from integrations.trackers.base import Adapter
from integrations.trackers.jira.settings import ENV, JiraSettings
from integrations.trackers.jira.tracker import JiraTracker, build

ADAPTER = Adapter(name="jira", settings=JiraSettings, build=build, env=ENV)

__all__ = ["ADAPTER", "JiraSettings", "JiraTracker"]
