"""What an agent process sees of the world: an allowlist, never a copy of conveyor's
own environment (DESIGN "Agent process contract"). The base variables, the variables
`agents.pass_env` names (names or `PREFIX_*` globs), the fixed `agents.env` table, then
the task's `CONVEYOR_*` variables. No conveyor secret ever gets through, whatever
`pass_env` or `agents.env` says: no `CONVEYOR_*` variable of conveyor's own, and no
value that is or holds a configured secret (tokens, webhook secrets, API keys, the
database URL and its password)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bot.logs import secrets_of
from bot.settings import Settings

BASE_VARIABLES = frozenset({"PATH", "HOME", "USER", "LANG", "TERM", "TMPDIR", "SHELL"})


def base_environment(source: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted base variables (and LC_*) of `source`."""
    return {
        name: value
        for name, value in source.items()
        if name in BASE_VARIABLES or name.startswith("LC_")
    }


def passed(source: Mapping[str, str], patterns: Iterable[str]) -> dict[str, str]:
    """The variables of `source` that `pass_env` names: exact names or `PREFIX_*`."""
    exact = {p for p in patterns if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*") and len(p) > 1)
    return {
        name: value
        for name, value in source.items()
        if name in exact or (prefixes and name.startswith(prefixes))
    }


def agent_base(settings: Settings, source: Mapping[str, str]) -> dict[str, str]:
    """Everything an agent gets before its task's own `CONVEYOR_*` variables."""
    wanted = {
        **base_environment(source),
        **passed(source, settings.agents.pass_env),
        **settings.agents.env,
    }
    secrets = [*secrets_of(settings), settings.server.database_url]
    return {
        name: value
        for name, value in wanted.items()
        if not name.startswith("CONVEYOR_") and not _holds_secret(value, secrets)
    }


def _holds_secret(value: str, secrets: Iterable[str]) -> bool:
    return any(secret and secret in value for secret in secrets)
