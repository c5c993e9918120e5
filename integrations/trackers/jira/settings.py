"""The ``[trackers.jira]`` section and the env variables that override it."""

from __future__ import annotations

from pydantic import SecretStr, field_validator

from integrations.trackers.base import TrackerSettings

ENV = {
    "CONVEYOR_JIRA_BASE_URL": "base_url",
    "CONVEYOR_JIRA_WEBHOOK_SECRET": "webhook_secret",
    "CONVEYOR_JIRA_EMAIL": "email",
    "CONVEYOR_JIRA_API_TOKEN": "api_token",
}


class JiraSettings(TrackerSettings):
    """Jira Cloud: the site, the admin webhook's secret, an API token, the statuses."""

    base_url: str = ""  # https://SITE.atlassian.net
    email: str = ""  # the Atlassian account the API token belongs to
    api_token: SecretStr = SecretStr("")
    bot_account_id: str = ""  # events caused by this account (the token's) are ignored
    start_states: list[str] = ["To Analyse"]
    stop_states: list[str] = ["STOP"]
    confirm_deploy_states: list[str] = ["Confirm Deploy"]

    @field_validator("base_url")
    @classmethod
    def _site_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("base_url must be the site's URL, e.g. https://SITE.atlassian.net")
        return value
