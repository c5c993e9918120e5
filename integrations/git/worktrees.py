"""Task worktrees: add one per task from the fresh default branch; remove it, never
following a path out of the worktrees root."""

from __future__ import annotations

import shutil
from pathlib import Path

from git import Repo
from git.exc import GitCommandError

from integrations.git._core import (
    GitError,
    RepoSpec,
    UnsafePathError,
    Worktree,
    _checked_out,
    _describe,
    _failing,
    _fetch,
    _open,
    _refuse_protected,
    _repo_dir,
    _require_sha,
    _sha,
    logger,
    worktree_path,
)


def create_worktree(repo: RepoSpec, worktrees_root: Path, task_key: str, branch: str) -> Worktree:
    """Add the task's worktree on a new `branch` from the fresh remote default; idempotent."""
    _refuse_protected(repo, branch, "create a worktree on")
    path = worktree_path(worktrees_root, repo, task_key)
    with _open(repo.path) as git_repo:
        with _failing("could not prune worktrees"):
            git_repo.git.worktree("prune")
        if path.exists():
            return _existing_worktree(git_repo, repo, path, branch)
        base = _base_sha(git_repo, repo, fetch=True)
        _check_leftover_branch(git_repo, branch, base)
        path.parent.mkdir(parents=True, exist_ok=True)
        reuse = _sha(git_repo, f"refs/heads/{branch}") is not None
        args = (str(path), branch) if reuse else ("-b", branch, str(path), base)
        with _failing(f"could not add worktree {path} on {branch}"):
            git_repo.git.worktree("add", *args)
    return Worktree(path=path, branch=branch, base_sha=base)


def _existing_worktree(git_repo: Repo, repo: RepoSpec, path: Path, branch: str) -> Worktree:
    """The worktree already at `path` if it is on `branch`; its base is the fork point."""
    known = _checked_out(git_repo)
    if path.resolve() not in known:
        raise GitError(f"{path} exists but is not a worktree of {repo.name}; remove it first")
    if (on := known[path.resolve()]) != branch:
        raise GitError(f"worktree {path} is on {on or 'a detached HEAD'}, not {branch}; remove it")
    base = _base_sha(git_repo, repo, fetch=False)
    with _failing(f"could not find where {branch} forked from {repo.default_branch}"):
        fork = str(git_repo.git.merge_base(f"refs/heads/{branch}", base))
    return Worktree(path=path, branch=branch, base_sha=fork)


def _base_sha(git_repo: Repo, repo: RepoSpec, *, fetch: bool) -> str:
    """The default branch head: <remote>/<default> after a fetch, else the local branch."""
    tracking = f"refs/remotes/{repo.remote}/{repo.default_branch}"
    local = f"refs/heads/{repo.default_branch}"
    order = [tracking, local]
    if fetch:
        try:
            _fetch(git_repo, repo)
        except GitError:
            logger.warning(
                "fetch failed; basing worktree on local default", extra={"repo": repo.name}
            )
            order = [local, tracking]
    for ref in order:
        if sha := _sha(git_repo, ref):
            return sha
    raise GitError(f"neither {tracking} nor {local} exists in repo {repo.name}; fetch it first")


def _check_leftover_branch(git_repo: Repo, branch: str, base: str) -> None:
    """Refuse a left-over local `branch` unless it still points at `base`."""
    existing = _sha(git_repo, f"refs/heads/{branch}")
    if existing is not None and existing != base:
        raise GitError(
            f"local branch {branch} already exists at {existing}, not at the base {base}: "
            "it is left over from an earlier run; delete it or choose another branch name"
        )


def head_sha(path: Path) -> str:
    """The commit checked out in the repository or worktree at `path`."""
    with _open(path) as git_repo:
        return _require_sha(git_repo, "HEAD")


def remove_worktree(repo: RepoSpec, worktrees_root: Path, path: Path) -> bool:
    """Remove a task worktree and prune; False when it was already gone.

    `path` must resolve strictly inside <worktrees_root>/<repo name> (symlinks and ".."
    followed first); anything else raises UnsafePathError and nothing is touched.
    """
    target = _inside(worktrees_root / _repo_dir(repo), path)
    with _open(repo.path) as git_repo:
        if repo.path.resolve().is_relative_to(target):
            raise UnsafePathError(f"refusing to remove {path}: it holds the repo {repo.path}")
        existed = target.exists()
        if existed:
            _remove_dir(git_repo, target, known=target in _checked_out(git_repo))
        with _failing("could not prune worktrees"):
            git_repo.git.worktree("prune")
    return existed


def _inside(root: Path, path: Path) -> Path:
    """`path` resolved, if it lies strictly inside `root` resolved; else UnsafePathError."""
    try:
        base, target = root.resolve(), path.resolve()
    except (OSError, RuntimeError) as exc:
        raise UnsafePathError(f"cannot resolve {path}: {exc}") from exc
    if target == base or not target.is_relative_to(base):
        raise UnsafePathError(f"refusing to remove {path}: it resolves outside {base}")
    return target


def _remove_dir(git_repo: Repo, target: Path, *, known: bool) -> None:
    """`git worktree remove --force`, falling back to deleting the directory itself."""
    if known:
        try:
            git_repo.git.worktree("remove", "--force", str(target))
        except GitCommandError as exc:
            logger.warning(
                "worktree remove failed; deleting the directory", extra={"error": _describe(exc)}
            )
    try:
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    except OSError as exc:
        raise GitError(f"could not delete {target}: {exc}") from exc
