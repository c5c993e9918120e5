"""`[trackers.plane]`: the Plane section of conveyor's settings."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.trackers.base import TrackerSettings


class PlaneSettings(TrackerSettings):
    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    workspace: str = ""
    bot_actor_id: str = ""  # events caused by this actor are conveyor's own: ignored
    start_states: list[str] = ["To Analyse"]
    stop_states: list[str] = ["STOP"]
    confirm_deploy_states: list[str] = ["Confirm Deploy"]
    project_identifiers: dict[str, str] = {}  # project id -> "PROJ", saves an API lookup


ENV = {
    "CONVEYOR_PLANE_WEBHOOK_SECRET": "webhook_secret",
    "CONVEYOR_PLANE_BASE_URL": "base_url",
    "CONVEYOR_PLANE_API_KEY": "api_key",
    "CONVEYOR_PLANE_WORKSPACE": "workspace",
    "CONVEYOR_PLANE_BOT_ACTOR_ID": "bot_actor_id",
}
