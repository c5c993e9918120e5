"""What `conveyor check` asks of a configured repo before any ticket depends on it: is
the path a git clone, does the remote exist, does the default branch exist; and, online,
does the remote answer. Each problem is one sentence that says what to do."""

from __future__ import annotations

from git import Repo
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from integrations.git._core import NETWORK_TIMEOUT_SECONDS, RepoSpec, _describe, _sha

LS_REMOTE_TIMEOUT_SECONDS = min(30.0, NETWORK_TIMEOUT_SECONDS)


def repo_problems(repo: RepoSpec) -> list[str]:
    """Offline: the path, the remote and the default branch (local or remote-tracking)."""
    if not repo.path.exists():
        return [f"{repo.path} does not exist (clone the repo there, or fix the path)"]
    try:
        git_repo = Repo(repo.path)
    except (InvalidGitRepositoryError, NoSuchPathError):
        return [f"{repo.path} is not a git clone (git clone <url> {repo.path})"]
    try:
        return _ref_problems(git_repo, repo)
    finally:
        git_repo.close()


def _ref_problems(git_repo: Repo, repo: RepoSpec) -> list[str]:
    names = [remote.name for remote in git_repo.remotes]
    problems = []
    if repo.remote not in names:
        known = ", ".join(names) or "none"
        problems.append(
            f"has no remote {repo.remote!r} (its remotes: {known}); "
            f"git -C {repo.path} remote add {repo.remote} <url>, or set remote"
        )
    tracking = f"refs/remotes/{repo.remote}/{repo.default_branch}"
    local = f"refs/heads/{repo.default_branch}"
    if not (_sha(git_repo, tracking) or _sha(git_repo, local)):
        problems.append(
            f"has no branch {repo.default_branch!r} (neither {local} nor {tracking}); "
            "fetch it, or set default_branch"
        )
    return problems


def remote_problem(repo: RepoSpec) -> str | None:
    """Online: the remote answers and has the default branch (`git ls-remote`)."""
    try:
        git_repo = Repo(repo.path)
    except (InvalidGitRepositoryError, NoSuchPathError):
        return None  # the offline check says so already
    git_repo.git.update_environment(GIT_TERMINAL_PROMPT="0")
    try:
        heads = git_repo.git.ls_remote(
            "--heads",
            repo.remote,
            repo.default_branch,
            kill_after_timeout=LS_REMOTE_TIMEOUT_SECONDS,
        )
    except GitCommandError as exc:
        return f"remote {repo.remote!r} does not answer: {_describe(exc)}"
    finally:
        git_repo.close()
    if not str(heads).strip():
        return f"remote {repo.remote!r} has no branch {repo.default_branch!r}"
    return None
