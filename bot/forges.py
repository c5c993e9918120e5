"""The registry of forge adapters: the one place in `bot/` that names them.

A forge is built for every forge a `[[repos]]` entry names, from the credentials of the
tracker section of the same name (`[trackers.github]` token and api_url,
`[trackers.gitea]` token and base_url): one token per forge, whether it tracks tickets,
hosts pull requests, or both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from bot.errors import ConfigError
from bot.settings import RepoSettings, Settings
from integrations.forges.base import Forge
from integrations.forges.gitea import GiteaForge
from integrations.forges.github import GitHubForge
from integrations.trackers.gitea import GiteaSettings
from integrations.trackers.github import GitHubSettings

Builder = Callable[[Settings, httpx.AsyncClient], Forge | None]


def _github(settings: Settings, http: httpx.AsyncClient) -> Forge | None:
    section = settings.tracker("github")
    assert isinstance(section, GitHubSettings)
    token = section.token.get_secret_value()
    return GitHubForge(http, token=token, api_url=section.api_url) if token else None


def _gitea(settings: Settings, http: httpx.AsyncClient) -> Forge | None:
    section = settings.tracker("gitea")
    assert isinstance(section, GiteaSettings)
    token = section.token.get_secret_value()
    if not token or not section.base_url:
        return None
    return GiteaForge(http, token=token, base_url=section.base_url)


BUILDERS: Mapping[str, Builder] = {"github": _github, "gitea": _gitea}
_NEEDS = {
    "github": "[trackers.github] token (CONVEYOR_GITHUB_TOKEN)",
    "gitea": "[trackers.gitea] token and base_url (CONVEYOR_GITEA_TOKEN, CONVEYOR_GITEA_BASE_URL)",
}


def build_forges(settings: Settings, http: httpx.AsyncClient) -> dict[str, Forge]:
    """The forges the repos name, for those whose credentials are configured."""
    named = {repo.forge for repo in settings.repos if repo.forge}
    built = {name: BUILDERS[name](settings, http) for name in sorted(named) if name in BUILDERS}
    return {name: forge for name, forge in built.items() if forge is not None}


def credentials_missing(settings: Settings, repo: RepoSettings) -> str | None:
    """What the repo's forge lacks to be built (`conveyor check` says it before serving)."""
    if not repo.forge or repo.forge not in BUILDERS:
        return None
    section = settings.tracker(repo.forge)
    ready = bool(section.token.get_secret_value()) if isinstance(section, GitHubSettings) else False
    if isinstance(section, GiteaSettings):
        ready = bool(section.token.get_secret_value() and section.base_url)
    return None if ready else _needs(repo)


def _needs(repo: RepoSettings) -> str:
    why = (
        "merges through pull requests" if repo.merge == "pull_request" else "asks about protection"
    )
    return f"{why} on {repo.forge}, which needs {_NEEDS.get(repo.forge, 'a forge conveyor knows')}"


def check_repo_forges(settings: Settings, forges: Mapping[str, Forge]) -> None:
    """Every repo naming a forge has it (credentials set): it merges pull requests there,
    and branch protection is asked there before any deletion."""
    for repo in settings.repos:
        if repo.forge and repo.forge not in forges:
            raise ConfigError(f"repos.{repo.name} {_needs(repo)}")
