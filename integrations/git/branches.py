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
        try:
            git_repo.git.branch("-D", "--", branch)
        except GitCommandError as exc:
            if "not found" in str(exc.stderr):  # one command, not a look-up first
                return False
            raise GitError(
                f"could not delete local branch {branch} (remove its worktree first): "
                f"{_describe(exc)}"
            ) from exc
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

    One push: `--force-with-lease=refs/heads/<branch>:<recorded_sha>` with `--delete` is
    git's compare-and-delete (the remote refuses if its head is anything else), so the
    SHA check and the deletion are one atomic step and nothing is ever pushed. Only a
    refused lease (or no recorded SHA) reads the remote head, to say why.
    """
    if (refusal := _deletion_refusal(repo, branch, task_branch)) is not None:
        return DeleteResult(DeleteOutcome.REFUSED, refusal)
    if recorded_sha is None or not _is_sha(recorded_sha):
        return _classify(repo, branch, recorded_sha)
    ref = f"refs/heads/{branch}"
    with _open(repo.path) as git_repo:
        try:
            _network(
                git_repo,
                "push",
                "--porcelain",
                f"--force-with-lease={ref}:{recorded_sha}",
                _remote(repo),
                "--delete",
                ref,
            )
        except GitCommandError as exc:
            if _lease_refused(exc):
                return _classify(repo, branch, recorded_sha)
            raise GitError(f"could not delete {branch} on {repo.remote}: {_describe(exc)}") from exc
    return DeleteResult(DeleteOutcome.DELETED, f"deleted {branch} at {recorded_sha}")


def _is_sha(value: str) -> bool:
    return len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value)


def _lease_refused(exc: GitCommandError) -> bool:
    """The remote head was not the recorded SHA (moved, or gone): git's "stale info"."""
    text = f"{exc.stdout}\n{exc.stderr}"
    return "stale info" in text or "remote ref does not exist" in text


def _classify(repo: RepoSpec, branch: str, recorded_sha: str | None) -> DeleteResult:
    """Why the branch was not deleted: gone from the remote, or moved past `recorded_sha`."""
    remote_sha = remote_branch_sha(repo, branch)
    if remote_sha is None:
        return DeleteResult(DeleteOutcome.MISSING, f"{branch} is not on {repo.remote}")
    return DeleteResult(
        DeleteOutcome.CONFLICT, f"remote head moved: {remote_sha} != recorded {recorded_sha}"
    )
