"""Settings: `conveyor.toml` plus env overrides, read once into a typed object.

Nothing here runs at import time; `load_settings()` is called by the CLI and the
result is handed to `create_app(settings)`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from bot.configfile import config_path, read_toml
from bot.errors import ConfigError
from bot.trackers import ADAPTERS
from integrations.trackers.base import TrackerSettings as TrackerSection
from integrations.trackers.plane import PlaneSettings

__all__ = ["PlaneSettings", "RepoSettings", "Settings", "load_settings", "settings_from_dict"]

MIN_SECRET = 16
SHORT_SECRET = (
    "{key} is shorter than {n} characters; use a long random value "
    "(python3 -c 'import secrets; print(secrets.token_hex(32))')"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    database_url: str = "sqlite:///.conveyor/conveyor.db"
    data_dir: Path = Path(".conveyor")
    admin_token: SecretStr = SecretStr("")
    read_token: SecretStr = SecretStr("")  # guards the read endpoints and the dashboard
    log_format: Literal["text", "json"] = "text"
    url: str = ""  # where CLI verbs find the server; empty: http://host:port
    # Slow or idle clients are dropped (a connection is never held open forever):
    header_timeout_seconds: Annotated[float, Field(ge=0.1, le=300)] = 10
    body_timeout_seconds: Annotated[float, Field(ge=0.1, le=600)] = 30
    keep_alive_seconds: Annotated[int, Field(ge=1, le=300)] = 5
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 200  # then 503

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (_hide_password(value) if name == "database_url" else value)


class WorkerSettings(_Section):
    concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    max_runtime_seconds: Annotated[float, Field(ge=1, le=7 * 86400)] = 3600
    retries: Annotated[int, Field(ge=0, le=20)] = 2
    retry_backoff_seconds: Annotated[float, Field(ge=0, le=3600)] = 5
    lease_seconds: Annotated[float, Field(ge=2, le=3600)] = 30
    poll_interval_seconds: Annotated[float, Field(ge=0.01, le=60)] = 0.2


class StopSettings(_Section):
    enabled: bool = True
    repos: list[str] = []
    grace_seconds: Annotated[float, Field(ge=1, le=600)] = 10
    finalizer_interval_seconds: Annotated[float, Field(ge=0.05, le=3600)] = 5

    @field_validator("repos", mode="before")
    @classmethod
    def _split_repos(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class ReconcileSettings(_Section):
    enabled: bool = True
    interval_seconds: Annotated[float, Field(ge=0.05, le=86400)] = 15
    startup_wait_seconds: Annotated[float, Field(ge=0, le=3600)] = 10
    stop_deleted: bool = True  # a ticket gone from the tracker stops its task


def _tracker_sections() -> type[BaseModel]:
    """`[trackers.*]`: one section per registered adapter, each with its own model."""
    fields: dict[str, Any] = {
        name: (adapter.settings, adapter.settings()) for name, adapter in ADAPTERS.items()
    }
    return create_model("TrackerSettings", __base__=_Section, **fields)


TrackerSettings = _tracker_sections()


class AgentSettings(_Section):
    analysis: str = ""
    implementation: str = ""
    review: str = ""
    pass_env: list[str] = []  # names or PREFIX_* globs of conveyor's env handed to agents
    env: dict[str, str] = {}  # fixed extra variables for agents

    @field_validator("pass_env", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class RepoSettings(_Section):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    path: Path
    remote: str = "origin"
    default_branch: str = "main"
    protected_branches: list[str] = []
    tracker: str = "plane"  # the tracker whose tickets this repo works
    tracker_project: str = ""
    self_hosting: bool = False
    deploy_command: str = ""
    remove_worktree_when_done: bool = True
    # DESIGN "Merging: push or pull request"; the forge's credentials are its tracker
    # section's ([trackers.github] token/api_url, [trackers.gitea] token/base_url).
    merge: Literal["push", "pull_request"] = "push"
    forge: Literal["", "github", "gitea"] = ""
    forge_repo: str = ""
    merge_method: Literal["merge", "squash", "rebase"] = "merge"
    merge_timeout_seconds: Annotated[float, Field(ge=1, le=7 * 86400)] = 3600

    @field_validator("forge_repo")
    @classmethod
    def _owner_name(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+", value):
            raise ValueError("forge_repo must be 'owner/name'")
        return value

    @model_validator(mode="after")
    def _pull_request_needs_a_forge(self) -> RepoSettings:
        if self.merge == "pull_request" and not (self.forge and self.forge_repo):
            raise ValueError(
                'merge = "pull_request" needs forge = "github" or "gitea" and '
                'forge_repo = "owner/name"'
            )
        if self.forge and not self.forge_repo:
            raise ValueError(f'forge = "{self.forge}" needs forge_repo = "owner/name"')
        return self


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    workers: WorkerSettings = WorkerSettings()
    stop: StopSettings = StopSettings()
    trackers: TrackerSettings = TrackerSettings()  # type: ignore[valid-type]
    reconcile: ReconcileSettings = ReconcileSettings()
    agents: AgentSettings = AgentSettings()
    repos: list[RepoSettings] = []

    @model_validator(mode="after")
    def _secrets_long_enough(self) -> Settings:
        short = next((key for key, value in self.chosen_secrets() if len(value) < MIN_SECRET), None)
        if short is not None:
            raise ValueError(SHORT_SECRET.format(key=short, n=MIN_SECRET))
        return self

    def chosen_secrets(self) -> list[tuple[str, str]]:
        """(key, value) of every configured secret that a person chooses: the admin and
        read tokens and every webhook secret (API keys are the trackers' to make)."""
        out = [("server.admin_token", self.server.admin_token.get_secret_value())]
        read_token = getattr(self.server, "read_token", None)
        if isinstance(read_token, SecretStr):
            out.append(("server.read_token", read_token.get_secret_value()))
        for name in ADAPTERS:
            out.append(
                (
                    f"trackers.{name}.webhook_secret",
                    self.tracker(name).webhook_secret.get_secret_value(),
                )
            )
        return [(key, value) for key, value in out if value]

    def repo_for_project(self, tracker: str, project: str | None) -> RepoSettings | None:
        """The repo mapped to a tracker's project, if any."""
        return next(
            (
                r
                for r in self.repos
                if project and r.tracker == tracker and r.tracker_project == project
            ),
            None,
        )

    def tracker(self, name: str) -> TrackerSection:
        """The `[trackers.<name>]` section."""
        section: TrackerSection = getattr(self.trackers, name)
        return section

    def projects(self) -> dict[str, dict[str, str]]:
        """tracker → {tracker_project: repo name}, for the adapters."""
        out: dict[str, dict[str, str]] = {}
        for repo in self.repos:
            if repo.tracker_project:
                out.setdefault(repo.tracker, {})[repo.tracker_project] = repo.name
        return out

    def secrets(self) -> list[str]:
        """Every configured secret value (for redaction and the agent environment)."""
        values = [
            self.server.admin_token.get_secret_value(),
            self.server.read_token.get_secret_value(),
        ]
        for name in ADAPTERS:
            values += self.tracker(name).secrets()
        return [v for v in values if v]

    def repo(self, name: str) -> RepoSettings | None:
        return next((r for r in self.repos if r.name == name), None)

    def server_url(self) -> str:
        return self.server.url or f"http://{self.server.host}:{self.server.port}"


# env var -> (section path..., key). Env wins over the file.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "CONVEYOR_HOST": ("server", "host"),
    "CONVEYOR_PORT": ("server", "port"),
    "CONVEYOR_DATABASE_URL": ("server", "database_url"),
    "CONVEYOR_DATA_DIR": ("server", "data_dir"),
    "CONVEYOR_ADMIN_TOKEN": ("server", "admin_token"),
    "CONVEYOR_READ_TOKEN": ("server", "read_token"),
    "CONVEYOR_LOG_FORMAT": ("server", "log_format"),
    "CONVEYOR_URL": ("server", "url"),
    "CONVEYOR_WORKERS_CONCURRENCY": ("workers", "concurrency"),
    "CONVEYOR_STOP_STATUS_ENABLED": ("stop", "enabled"),
    "CONVEYOR_STOP_STATUS_REPOS": ("stop", "repos"),
    "CONVEYOR_STOP_GRACE_SECONDS": ("stop", "grace_seconds"),
    "CONVEYOR_FINALIZER_INTERVAL_SECONDS": ("stop", "finalizer_interval_seconds"),
    "CONVEYOR_RECONCILE_ENABLED": ("reconcile", "enabled"),
    "CONVEYOR_RECONCILE_INTERVAL_SECONDS": ("reconcile", "interval_seconds"),
}
ENV_OVERRIDES.update(
    {
        var: ("trackers", name, key)
        for name, adapter in ADAPTERS.items()
        for var, key in adapter.env.items()
    }
)


def load_settings(env: Mapping[str, str] | None = None, path: str | Path | None = None) -> Settings:
    """Read the config file (`path`, else $CONVEYOR_CONFIG, else ./conveyor.toml when
    present) and env overrides; raise ConfigError on a bad value or a missing named file."""
    env = os.environ if env is None else env
    data = read_toml(config_path(path, env))
    for var, keys in ENV_OVERRIDES.items():
        if var in env:
            _put(data, keys, env[var])
    return settings_from_dict(data)


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Validate a plain dict (as read from TOML) into Settings."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None


def _put(data: dict[str, Any], keys: tuple[str, ...], value: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[:-1])} must be a table")
        node = child
    node[keys[-1]] = value


def _hide_password(url: Any) -> Any:
    """A database URL with its password masked, for reprs and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


_SECRET_KEYS = {"admin_token", "webhook_secret", "api_key", "token", "api_token", "read_token"}


def describe_error(exc: ValidationError) -> str:
    """One readable line for the first problem: key, what is allowed, what was given."""
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"])
    last = str(err["loc"][-1]) if err["loc"] else ""
    given = "<hidden>" if last in _SECRET_KEYS else repr(err.get("input"))
    kind = err["type"]
    if kind == "value_error" and not err["loc"]:  # a check over the whole settings
        return str(err.get("ctx", {}).get("error") or err["msg"])
    if kind == "extra_forbidden":
        return f"{loc} is not a known setting (check the spelling; see README's configuration)"
    if kind == "missing":
        return f"{loc} is required"
    if kind == "value_error":  # a validator's own sentence says what is allowed
        said = str(err.get("msg", "")).removeprefix("Value error, ")
        return (
            f"{loc}: {said}"
            if isinstance(err.get("input"), dict)
            else f"{loc}: {said}, got {given}"
        )
    allowed = _allowed(err)
    return f"{loc} must be {allowed}, got {given}"


def _allowed(err: Any) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    bounds = _BOUNDS.get(".".join(str(p) for p in err["loc"] if not isinstance(p, int)))
    if bounds and kind in {
        "float_parsing",
        "int_parsing",
        "greater_than_equal",
        "less_than_equal",
        "float_type",
        "int_type",
        "int_from_float",
    }:
        low, high, what = bounds
        return f"{what} from {low} to {high}"
    if kind.startswith("bool"):
        return "true or false"
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return "letters, digits, '.', '_' or '-' only"
    if kind == "string_type":
        return "a string"
    if kind in {"list_type", "dict_type"}:
        return "a list" if kind == "list_type" else "a table"
    return str(err.get("msg", "valid")).lower()


def _collect_bounds() -> dict[str, tuple[Any, Any, str]]:
    out: dict[str, tuple[Any, Any, str]] = {}
    sections: dict[str, type[BaseModel]] = {
        "server": ServerSettings,
        "workers": WorkerSettings,
        "stop": StopSettings,
        "reconcile": ReconcileSettings,
        "repos": RepoSettings,
    }
    for prefix, model in sections.items():
        for name, info in model.model_fields.items():
            low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
            high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
            if low is not None and high is not None:
                what = "an integer" if info.annotation is int else "a number"
                out[f"{prefix}.{name}"] = (low, high, what)
    return out


_BOUNDS = _collect_bounds()
