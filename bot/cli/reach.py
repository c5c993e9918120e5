"""How the operator verbs reach a running server: its URL and the tokens, read from the
`[server]` section of the same config file and the same env vars as `conveyor serve`,
without validating (or importing) the rest of the settings: a quick verb stays quick.
`conveyor check` validates everything."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.configfile import config_path, read_toml
from bot.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# [server] key -> the env var that overrides it (as bot.settings.ENV_OVERRIDES says)
ENV = {
    "url": "CONVEYOR_URL",
    "host": "CONVEYOR_HOST",
    "port": "CONVEYOR_PORT",
    "admin_token": "CONVEYOR_ADMIN_TOKEN",
    "read_token": "CONVEYOR_READ_TOKEN",
}
BAD_PORT = "server.port must be an integer from 1 to 65535, got {given!r}"


@dataclass(frozen=True)
class Reach:
    url: str
    admin_token: str = ""
    read_token: str = ""

    def __repr__(self) -> str:  # never a token in a traceback or a debug print
        return f"Reach(url={self.url!r})"


def load_reach(
    path: str | Path | None = None, env: Mapping[str, str] | None = None, *, url: str | None = None
) -> Reach:
    """The server's URL (`url` wins, e.g. `--url`) and tokens; ConfigError on a bad value."""
    env = os.environ if env is None else env
    server = read_toml(config_path(path, env)).get("server", {})
    if not isinstance(server, dict):
        raise ConfigError("server must be a table")
    values: dict[str, Any] = {**server, **{k: env[v] for k, v in ENV.items() if v in env}}
    return Reach(
        url=url or _text(values, "url") or f"http://{_host(values)}:{_port(values)}",
        admin_token=_text(values, "admin_token"),
        read_token=_text(values, "read_token"),
    )


def _text(values: Mapping[str, Any], key: str) -> str:
    value = values.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"server.{key} must be a string")
    return value.strip()


def _host(values: Mapping[str, Any]) -> str:
    host = _text(values, "host") or DEFAULT_HOST
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _port(values: Mapping[str, Any]) -> int:
    given = values.get("port", DEFAULT_PORT)
    text = str(given).strip()
    if isinstance(given, bool) or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(BAD_PORT.format(given=given))
    return int(text)
