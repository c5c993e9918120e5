"""The git port's shared part: errors, records, names, and the plumbing every git call
goes through (timeouts, no prompts, errors translated at the boundary)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from git import Repo
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from integrations.branch_guard import (
    BRANCH_PREFIX,
    deletion_refusal,
    is_protected,
    ref_format_problem,
)
from integrations.errors import IntegrationError
from integrations.names import safe_name

logger = logging.getLogger(__name__)

NETWORK_TIMEOUT_SECONDS = 120.0
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class GitError(IntegrationError):
    """A git command failed; the message says which one and why."""


class UnsafePathError(GitError):
    """A path resolves outside the directory conveyor is allowed to delete from."""


class UnsafeBranchError(GitError):
    """A branch conveyor must never change: default, protected, or not a task branch."""


@dataclass(frozen=True)
class RepoSpec:
    name: str
    path: Path
    remote: str = "origin"
    default_branch: str = "main"
    protected_branches: tuple[str, ...] = ()


@dataclass(frozen=True)
class Worktree:
    path: Path
    branch: str
    base_sha: str


@dataclass(frozen=True)
class MergeResult:
    merged: bool
    sha: str | None
    conflict: str | None


class DeleteOutcome(StrEnum):
    DELETED = "deleted"
    MISSING = "missing"
    REFUSED = "refused"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class DeleteResult:
    outcome: DeleteOutcome
    reason: str


# --- names ------------------------------------------------------------------------


def branch_name(task_key: str, suffix: str | None = None) -> str:
    """The task branch "conveyor/<key>[-<suffix>]" through the one sanitiser: a valid
    ref name for any input."""
    return BRANCH_PREFIX + safe_name(task_key, suffix or "")


def worktree_path(worktrees_root: Path, repo: RepoSpec, name: str) -> Path:
    """Where a worktree lives: <root>/<repo name>/<name made safe>."""
    return worktrees_root / _repo_dir(repo) / safe_name(name)


def _repo_dir(repo: RepoSpec) -> str:
    """The repo's name as one directory component, refusing anything that could escape."""
    if repo.name in ("", ".", "..") or "/" in repo.name or "\\" in repo.name or "\0" in repo.name:
        raise UnsafePathError(f"repo name {repo.name!r} is not a plain directory name; rename it")
    return repo.name


# --- plumbing -----------------------------------------------------------------------


@contextmanager
def _open(path: Path) -> Iterator[Repo]:
    """Open the repository (or worktree) at `path`, never prompting for credentials."""
    try:
        repo = Repo(path)
    except (InvalidGitRepositoryError, NoSuchPathError) as exc:
        raise GitError(f"{path} is not a git repository or worktree") from exc
    repo.git.update_environment(GIT_TERMINAL_PROMPT="0", GIT_MERGE_AUTOEDIT="no")
    try:
        yield repo
    finally:
        repo.close()


@contextmanager
def _failing(what: str) -> Iterator[None]:
    """Translate a failed git command into a GitError that says `what` failed and why."""
    try:
        yield
    except GitCommandError as exc:
        raise GitError(f"{what}: {_describe(exc)}") from exc


def _describe(exc: GitCommandError) -> str:
    """Git's own complaint, one line, with any credentials in URLs masked."""
    text = str(exc.stderr).strip().removeprefix("stderr: '").removesuffix("'")
    detail = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    return _CREDENTIALS.sub("***@", detail or f"git exited with status {exc.status}")


def _remote(repo: RepoSpec) -> str:
    """The remote name, refusing one git would read as an option."""
    if not repo.remote or repo.remote.startswith("-"):
        raise GitError(f"remote {repo.remote!r} of repo {repo.name} is not a remote name")
    return repo.remote


def _network(git_repo: Repo, command: str, *args: str) -> str:
    """Run a git command that talks to the remote, killed after NETWORK_TIMEOUT_SECONDS."""
    run = getattr(git_repo.git, command)
    return str(run(*args, kill_after_timeout=NETWORK_TIMEOUT_SECONDS))


def _sha(git_repo: Repo, ref: str) -> str | None:
    """The commit `ref` points at, or None when it does not exist."""
    try:
        return str(git_repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}"))
    except GitCommandError:
        return None


def _require_sha(git_repo: Repo, ref: str) -> str:
    """The commit `ref` points at; GitError when it does not exist."""
    sha = _sha(git_repo, ref)
    if sha is None:
        raise GitError(f"{ref} does not exist in {git_repo.git_dir}")
    return sha


def _fetch(git_repo: Repo, repo: RepoSpec) -> None:
    """Fetch the remote; GitError when it cannot be reached."""
    with _failing(f"could not fetch {repo.remote} for repo {repo.name}"):
        _network(git_repo, "fetch", _remote(repo))


def _checked_out(git_repo: Repo) -> dict[Path, str | None]:
    """Every worktree of the repository, resolved, with its branch (None when detached)."""
    with _failing("could not list worktrees"):
        listing = str(git_repo.git.worktree("list", "--porcelain"))
    found: dict[Path, str | None] = {}
    current: Path | None = None
    for line in listing.splitlines():
        if line.startswith("worktree "):
            current = Path(line.removeprefix("worktree ")).resolve()
            found[current] = None
        elif line.startswith("branch refs/heads/") and current is not None:
            found[current] = line.removeprefix("branch refs/heads/")
    return found


def _deletion_refusal(repo: RepoSpec, branch: str, task_branch: str) -> str | None:
    """The branch guard's verdict for `branch` in `repo`."""
    return deletion_refusal(
        branch,
        task_branch=task_branch,
        default_branch=repo.default_branch,
        protected=repo.protected_branches,
    )


def _refuse_protected(repo: RepoSpec, branch: str, action: str) -> None:
    """Refuse to `action` a branch that is invalid, default or protected."""
    problem = ref_format_problem(branch)
    if problem is None and is_protected(
        branch, default_branch=repo.default_branch, protected=repo.protected_branches
    ):
        problem = "it is the default or a protected branch"
    if problem is not None:
        raise UnsafeBranchError(f"refusing to {action} {branch!r} in {repo.name}: {problem}")
