"""`[trackers.gitea]`: Gitea or Forgejo, the same keys as GitHub plus ``base_url``."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from integrations.trackers.labels.rules import LabelTrackerSettings, http_url

ENV = {
    "CONVEYOR_GITEA_WEBHOOK_SECRET": "webhook_secret",
    "CONVEYOR_GITEA_TOKEN": "token",
    "CONVEYOR_GITEA_BASE_URL": "base_url",
}


class GiteaSettings(LabelTrackerSettings):
    """Gitea has no close reason, so closing stops either always or never."""

    base_url: str = ""  # https://git.example.com (the API is under /api/v1)
    stop_on_close: Literal["never", "any"] = "never"

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = http_url(value, "base_url")
        return value.removesuffix("/api/v1")
