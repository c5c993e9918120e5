"""The ``[trackers.linear]`` section and the env variables that override it."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.trackers.base import TrackerSettings

API_URL = "https://api.linear.app/graphql"

ENV = {
    "CONVEYOR_LINEAR_WEBHOOK_SECRET": "webhook_secret",
    "CONVEYOR_LINEAR_API_KEY": "api_key",
}


class LinearSettings(TrackerSettings):
    """Linear: the webhook's signing secret, a personal API key, the workflow states."""

    api_key: SecretStr = SecretStr("")
    api_url: str = API_URL  # tests point it elsewhere
    bot_actor_id: str = ""  # events caused by this user (conveyor's API key) are ignored
    start_states: list[str] = ["To Analyse"]
    stop_states: list[str] = ["STOP"]
    confirm_deploy_states: list[str] = ["Confirm Deploy"]
