"""`[trackers.github]`: the webhook secret, the token, the labels, and closing's meaning."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from integrations.trackers.labels.rules import LabelTrackerSettings, http_url

DEFAULT_API_URL = "https://api.github.com"

ENV = {
    "CONVEYOR_GITHUB_WEBHOOK_SECRET": "webhook_secret",
    "CONVEYOR_GITHUB_TOKEN": "token",
    "CONVEYOR_GITHUB_API_URL": "api_url",
}


class GitHubSettings(LabelTrackerSettings):
    """Also the forge credentials for ``merge = "pull_request"`` (DESIGN: Configuration)."""

    api_url: str = DEFAULT_API_URL  # GitHub Enterprise: https://HOST/api/v3
    stop_on_close: Literal["never", "not_planned", "any"] = "not_planned"

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return http_url(value, "api_url") or DEFAULT_API_URL
