"""Which `conveyor.toml` is in use, and its TOML, read with the standard library only.

Shared by the full settings (`bot.settings`) and the CLI's light reader of the server's
address and tokens, so that both find the same file and refuse the same mistakes: a file
named by `--config` or `CONVEYOR_CONFIG` that does not exist is an error, never the
defaults served in silence.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.errors import ConfigError

DEFAULT_CONFIG_PATH = "conveyor.toml"
MISSING_NAMED = "{path} does not exist (named by {source}); check the path"


def config_path(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: `path` (`--config`), else `CONVEYOR_CONFIG`, else
    `./conveyor.toml` when present; None when there is none (the defaults apply)."""
    if path is not None:
        return _named(str(path), "--config")
    if env.get("CONVEYOR_CONFIG"):
        return _named(env["CONVEYOR_CONFIG"], "CONVEYOR_CONFIG")
    default = Path(DEFAULT_CONFIG_PATH)
    return default if default.exists() else None


def _named(given: str, source: str) -> Path:
    path = Path(given)
    if not path.is_file():  # said as the user wrote it
        raise ConfigError(MISSING_NAMED.format(path=given, source=source))
    return path


def read_toml(path: Path | None) -> dict[str, Any]:
    """The file's TOML as a dict ({} for no file); ConfigError saying what is wrong."""
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
