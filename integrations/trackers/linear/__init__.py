"""Linear as a tracker: workflow states start and stop the work (DESIGN "Trackers")."""

from integrations.trackers.base import Adapter
from integrations.trackers.linear.settings import ENV, LinearSettings
from integrations.trackers.linear.tracker import LinearTracker, build

ADAPTER = Adapter(name="linear", settings=LinearSettings, build=build, env=ENV)

__all__ = ["ADAPTER", "LinearSettings", "LinearTracker"]
