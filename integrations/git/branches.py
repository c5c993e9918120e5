"""Task branches: push (never forced), look up, and delete behind every guard."""

from __future__ import annotations

from pathlib import Path

from git.exc import GitCommandError

from integrations.git._core import (
    DeleteOutcome,
    DeleteResult,
    GitError,
    RepoSpec,
    UnsafeBranchError,
    _deletion_refusal,
    _describe,
    _failing,
    _network,
    _open,
    _refuse_protected,
    _remote,
    _require_sha,
    _sha,
)


def push_branch(repo: RepoSpec, worktree: Path, branch: str) -> str:
    """Push `branch` to the same name on the remote (never forced); the SHA pushed."""
    _refuse_protected(repo, branch, "push")
    with _open(worktree) as git_repo:
        sha = _require_sha(git_repo, f"refs/heads/{branch}")
        with _failing(
            f"could not push {branch} to {repo.remote} (fetch and integrate, never force)"
        ):
            _network(git_repo, "push", _remote(repo), f"{sha}:refs/heads/{branch}")
    return sha


def delete_local_branch(repo: RepoSpec, branch: str) -> bool:
    """`git branch -D` a task branch; False when it does not exist."""
    if (refusal := _deletion_refusal(repo, branch, branch)) is not None:
        raise UnsafeBranchError(f"refusing to delete local branch {branch!r}: {refusal}")
    with _open(repo.path) as git_repo:
        if _sha(git_repo, f"refs/heads/{branch}") is None:
            return False
        with _failing(f"could not delete local branch {branch} (remove its worktree first)"):
            git_repo.git.branch("-D", branch)
    return True


def remote_branch_sha(repo: RepoSpec, branch: str) -> str | None:
    """The head of `branch` on the remote, None when absent; GitError when unreachable."""
    ref = f"refs/heads/{branch}"
    with _open(repo.path) as git_repo, _failing(f"could not reach {repo.remote} for {repo.name}"):
        listing = _network(git_repo, "ls_remote", "--heads", _remote(repo), ref)
    for line in listing.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def delete_remote_branch(
    repo: RepoSpec, branch: str, *, task_branch: str, recorded_sha: str | None
) -> DeleteResult:
    """Delete the task's remote branch if it is safe and still at `recorded_sha`.

    Git offers no compare-and-delete without a force option, so a push landing between
    the SHA check and the delete is a known (narrow) window.
    """
    if (refusal := _deletion_refusal(repo, branch, task_branch)) is not None:
        return DeleteResult(DeleteOutcome.REFUSED, refusal)
    remote_sha = remote_branch_sha(repo, branch)
    if remote_sha is None:
        return DeleteResult(DeleteOutcome.MISSING, f"{branch} is not on {repo.remote}")
    if remote_sha != recorded_sha:
        return DeleteResult(
            DeleteOutcome.CONFLICT, f"remote head moved: {remote_sha} != recorded {recorded_sha}"
        )
    return _push_delete(repo, branch, remote_sha)


def _push_delete(repo: RepoSpec, branch: str, sha: str) -> DeleteResult:
    """`git push <remote> --delete refs/heads/<branch>`; a vanished branch is MISSING."""
    with _open(repo.path) as git_repo:
        try:
            _network(git_repo, "push", _remote(repo), "--delete", f"refs/heads/{branch}")
        except GitCommandError as exc:
            if "remote ref does not exist" in str(exc.stderr):
                return DeleteResult(DeleteOutcome.MISSING, f"{branch} vanished from {repo.remote}")
            raise GitError(f"could not delete {branch} on {repo.remote}: {_describe(exc)}") from exc
    return DeleteResult(DeleteOutcome.DELETED, f"deleted {branch} at {sha}")
