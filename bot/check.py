"""`conveyor check`: is this configuration usable, before a ticket depends on it?

Offline checks read only this machine: the data directory, the database URL (and whether
the database answers), each repo (a git clone with its remote and default branch, one
name each), the trackers the repos name. `conveyor serve` runs them before it binds and
refuses to start on a problem. Online checks also ask each remote and each tracker with
API credentials whether they answer. Each finding is one line that says what to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from bot.settings import RepoSettings, Settings
from bot.trackers import ADAPTERS

if TYPE_CHECKING:
    from integrations.forges.base import Forge
    from integrations.git import RepoSpec
    from integrations.trackers.base import Tracker

log = logging.getLogger(__name__)

ONLINE_TIMEOUT_SECONDS = 20.0


class Level(StrEnum):
    PROBLEM = "problem"  # conveyor would fail: serve refuses, check exits 2
    WARNING = "warning"  # conveyor runs, but something will be refused or skipped


@dataclass(frozen=True)
class Finding:
    level: Level
    where: str  # the setting it is about: "repos.app.path", "server.data_dir"
    message: str

    def line(self) -> str:
        return f"{self.level.value}: {self.where}: {self.message}"

    def as_json(self) -> dict[str, str]:
        return {"level": self.level.value, "where": self.where, "message": self.message}


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level is Level.PROBLEM]


# -- offline -------------------------------------------------------------------------------


def offline(settings: Settings) -> list[Finding]:
    """Every offline finding, problems and warnings, in the order of the config file."""
    return [
        *data_dir_findings(settings.server.data_dir),
        *database_url_findings(settings.server.database_url),
        *server_findings(settings),
        *agent_findings(settings),
        *repo_findings(settings),
    ]


def data_dir_findings(data_dir: Path) -> list[Finding]:
    """The data directory exists and is writable, or can be made (its nearest parent is)."""
    where = "server.data_dir"
    path = data_dir.expanduser().absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing == path and not path.is_dir():
        return [_problem(where, f"{path} is not a directory; point it at a directory")]
    if existing is None or not existing.is_dir():
        blocker = existing or path
        return [_problem(where, f"{path} cannot be made: {blocker} is not a directory")]
    if not os.access(existing, os.W_OK | os.X_OK):
        what = (
            "is not writable"
            if existing == path
            else f"cannot be made ({existing} is not writable)"
        )
        return [_problem(where, f"{path} {what}; choose a directory conveyor may write")]
    return []


def database_url_findings(url: str) -> list[Finding]:
    """A URL SQLAlchemy can read, of a dialect conveyor supports; SQLite's directory usable."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    where = "server.database_url"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return [_problem(where, "is not a database URL (e.g. sqlite:///.conveyor/conveyor.db)")]
    dialect = parsed.get_backend_name()
    if dialect not in ("sqlite", "postgresql"):
        return [_problem(where, f"uses {dialect!r}; conveyor supports sqlite and postgresql")]
    if dialect == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().absolute().parent
        found = data_dir_findings(folder)
        return [
            _problem(where, f.message.replace(str(folder), f"the folder {folder}")) for f in found
        ]
    return []


def server_findings(settings: Settings) -> list[Finding]:
    if settings.server.admin_token.get_secret_value():
        return []
    return [
        _warning(
            "server.admin_token",
            "is empty: `conveyor stop`, `conveyor retry` and POST /tasks/{ref}/stop answer 403",
        )
    ]


def agent_findings(settings: Settings) -> list[Finding]:
    return [
        _warning(f"agents.{stage}", "is empty: the stage passes without running an agent")
        for stage in ("analysis", "implementation", "review")
        if not getattr(settings.agents, stage).strip()
    ]


def repo_findings(settings: Settings) -> list[Finding]:
    if not settings.repos:
        return [_warning("repos", "none configured: no ticket can start a task")]
    counts = Counter(repo.name for repo in settings.repos)
    found = [
        _problem(f"repos.{name}", f"{count} repos are named {name!r}; give each its own name")
        for name, count in counts.items()
        if count > 1
    ]
    for repo in settings.repos:
        found += one_repo_findings(settings, repo)
    return found


def one_repo_findings(settings: Settings, repo: RepoSettings) -> list[Finding]:
    from integrations.git.inspect import repo_problems

    where = f"repos.{repo.name}"
    found = [_problem(f"{where}.path", text) for text in repo_problems(_spec(repo))]
    if repo.tracker not in ADAPTERS:
        known = ", ".join(sorted(ADAPTERS))
        found.append(_problem(f"{where}.tracker", f"{repo.tracker!r} is not a tracker ({known})"))
        return found
    if not repo.tracker_project:
        found.append(
            _warning(f"{where}.tracker_project", "is empty: no ticket of any project maps here")
        )
    found += forge_findings(settings, repo)
    if not settings.tracker(repo.tracker).webhook_secret.get_secret_value():
        found.append(
            _warning(
                f"trackers.{repo.tracker}.webhook_secret",
                f"is empty: {repo.tracker} webhooks are refused (401); reconciliation still works",
            )
        )
    return found


def forge_findings(settings: Settings, repo: RepoSettings) -> list[Finding]:
    """A repo naming a forge needs its credentials (pull requests, branch protection)."""
    from bot.forges import credentials_missing

    missing = credentials_missing(settings, repo)
    return [] if missing is None else [_problem(f"repos.{repo.name}.forge", missing)]


def _spec(repo: RepoSettings) -> RepoSpec:
    from integrations.git import RepoSpec

    return RepoSpec(
        name=repo.name,
        path=repo.path.expanduser().absolute(),
        remote=repo.remote,
        default_branch=repo.default_branch,
        protected_branches=tuple(repo.protected_branches),
    )


def _problem(where: str, message: str) -> Finding:
    return Finding(Level.PROBLEM, where, message)


def _warning(where: str, message: str) -> Finding:
    return Finding(Level.WARNING, where, message)


def dedupe(findings: list[Finding]) -> list[Finding]:
    """The same warning for two repos of one tracker is said once."""
    return list(dict.fromkeys(findings))


# -- the database answers ------------------------------------------------------------------


def database_finding(url: str) -> Finding | None:
    """Whether the database answers a `SELECT 1`, and a shared one is at the schema this
    conveyor needs (None: both hold)."""
    from bot.errors import ConfigError
    from bot.startup import DatabaseUnreachable, probe_database

    try:
        probe_database(url, schema=True)
    except (DatabaseUnreachable, ConfigError) as exc:
        return _problem("server.database_url", str(exc))
    return None


# -- online --------------------------------------------------------------------------------


def online(settings: Settings) -> list[Finding]:
    """Each repo's remote answers; each tracker with API credentials answers; each forge a
    repo names answers for that repo (its token reads the default branch's protection)."""
    from integrations.git.inspect import remote_problem

    found = [
        _problem(f"repos.{repo.name}.remote", text)
        for repo in settings.repos
        if (text := remote_problem(_spec(repo))) is not None
    ]
    return found + asyncio.run(_remote_findings(settings))


async def _remote_findings(settings: Settings) -> list[Finding]:
    return await _tracker_findings(settings) + await _forge_findings(settings)


async def _tracker_findings(settings: Settings) -> list[Finding]:
    import httpx

    from bot.trackers import build_trackers

    projects = settings.projects()
    sections = {name: settings.tracker(name) for name in ADAPTERS}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as http:
        trackers = build_trackers(sections, http, projects)
        found = []
        for name, tracker in trackers.items():
            if tracker.has_api and projects.get(name):
                for project in projects[name]:
                    found += await _ask_tracker(name, tracker, project)
    return found


async def _forge_findings(settings: Settings) -> list[Finding]:
    import httpx

    from bot.forges import build_forges

    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as http:
        forges = build_forges(settings, http)
        found = []
        for repo in settings.repos:
            if (forge := forges.get(repo.forge)) is not None:
                found += await _ask_forge(repo, forge)
    return found


async def _ask_forge(repo: RepoSettings, forge: Forge) -> list[Finding]:
    """Reading the default branch's protection proves the token, the repo and the right a
    reset needs before it deletes a branch (missing credentials are an offline finding)."""
    import httpx

    from integrations.errors import IntegrationError

    where = f"repos.{repo.name}.forge_repo"
    asking = forge.branch_protected(repo.forge_repo, repo.default_branch)
    try:
        await asyncio.wait_for(asking, ONLINE_TIMEOUT_SECONDS)
    except TimeoutError:
        return [_problem(where, f"{repo.forge} did not answer within {ONLINE_TIMEOUT_SECONDS:g} s")]
    except (IntegrationError, httpx.HTTPError) as exc:
        return [_problem(where, f"{repo.forge} {repo.forge_repo}: {exc}")]
    return []


async def _ask_tracker(name: str, tracker: Tracker, project: str) -> list[Finding]:
    """One change list (since now: nothing to read) proves the credentials answer."""
    import httpx

    from integrations.errors import IntegrationError

    asking = tracker.changed_since(project, datetime.now(UTC))
    try:
        await asyncio.wait_for(asking, ONLINE_TIMEOUT_SECONDS)
    except TimeoutError:
        late = f"did not answer within {ONLINE_TIMEOUT_SECONDS:g} s"
        return [_problem(f"trackers.{name}", late)]
    except (IntegrationError, httpx.HTTPError) as exc:
        return [_problem(f"trackers.{name}", f"project {project}: {exc}")]
    return []
