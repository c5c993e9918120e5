"""Merge a task branch into the default branch in a scratch worktree and push it
(never forced); a conflict leaves the default branch untouched."""

from __future__ import annotations

import secrets
import shutil
from contextlib import suppress
from pathlib import Path

from git import Repo
from git.exc import GitCommandError

from integrations.git._core import (
    GitError,
    MergeResult,
    RepoSpec,
    _checked_out,
    _describe,
    _failing,
    _fetch,
    _network,
    _open,
    _refuse_protected,
    _remote,
    _repo_dir,
    _require_sha,
    _sha,
    logger,
)


def merge_branch(repo: RepoSpec, branch: str, message: str, scratch_root: Path) -> MergeResult:
    """Merge `branch` into the default branch and push it (never forced).

    The merge happens in a throw-away detached worktree under `scratch_root`, so the
    checkout in `repo.path` is never disturbed. Afterwards the local default branch is
    fast-forwarded only if no worktree has it checked out; when it is checked out in
    `repo.path` it is left as it is (the user's next pull brings it up to date).
    """
    _refuse_protected(repo, branch, "merge")
    with _open(repo.path) as git_repo:
        _fetch(git_repo, repo)
        base = _require_sha(git_repo, f"refs/remotes/{repo.remote}/{repo.default_branch}")
        head = _task_head(git_repo, repo, branch)
        scratch = scratch_root / _repo_dir(repo) / f".merge-{secrets.token_hex(6)}"
        if _contains(git_repo, base, head):  # an earlier run's push landed it already
            return MergeResult(merged=True, sha=base, conflict=None)
        try:
            result = _merge_in_scratch(git_repo, scratch, base, head, message)
            if result.merged and result.sha != base:
                try:
                    _push_default(git_repo, repo, str(result.sha))
                except GitError:
                    # The default branch moved under us. When what moved it was an earlier
                    # run's own push (a crash mid-merge, then this re-run), the task is
                    # merged: say so, rather than a failure that hides a merge.
                    landed = _landed(git_repo, repo, head)
                    if landed is None:
                        raise
                    return MergeResult(merged=True, sha=landed, conflict=None)
                _advance_local_default(git_repo, repo, str(result.sha))
        finally:
            _discard_scratch(git_repo, scratch)
    return result


def _contains(git_repo: Repo, tip: str, commit: str) -> bool:
    """Whether `commit` is reachable from `tip` (already part of that history)."""
    try:
        git_repo.git.merge_base("--is-ancestor", commit, tip)
    except GitCommandError:
        return False
    return True


def _landed(git_repo: Repo, repo: RepoSpec, head: str) -> str | None:
    """The remote default branch's head once it holds `head`, else None."""
    try:
        _fetch(git_repo, repo)
    except GitError:
        return None
    now = _sha(git_repo, f"refs/remotes/{repo.remote}/{repo.default_branch}")
    return now if now and _contains(git_repo, now, head) else None


def _task_head(git_repo: Repo, repo: RepoSpec, branch: str) -> str:
    """The task branch head: the local branch, else the fetched remote one."""
    for ref in (f"refs/heads/{branch}", f"refs/remotes/{repo.remote}/{branch}"):
        if sha := _sha(git_repo, ref):
            return sha
    raise GitError(f"branch {branch} exists neither locally nor on {repo.remote}; nothing to merge")


def _merge_in_scratch(
    git_repo: Repo, scratch: Path, base: str, head: str, message: str
) -> MergeResult:
    """Merge `head` onto `base` in a new detached worktree at `scratch`."""
    scratch.parent.mkdir(parents=True, exist_ok=True)
    with _failing(f"could not add scratch worktree {scratch}"):
        git_repo.git.worktree("add", "--detach", str(scratch), base)
    with _open(scratch) as work:
        try:
            work.git.merge("--no-ff", "--no-edit", "-m", message, head)
        except GitCommandError as exc:
            return _abandon_merge(work, exc)
        return MergeResult(merged=True, sha=_require_sha(work, "HEAD"), conflict=None)


def _abandon_merge(work: Repo, exc: GitCommandError) -> MergeResult:
    """Abort a failed merge: a conflict is a result, anything else a GitError."""
    with _failing("could not list conflicting files"):
        files = str(work.git.diff("--name-only", "--diff-filter=U")).split()
    with suppress(GitCommandError):
        work.git.merge("--abort")
    if not files:
        raise GitError(f"merge failed without a conflict: {_describe(exc)}") from exc
    return MergeResult(merged=False, sha=None, conflict=f"conflict in {', '.join(files)}")


def _push_default(git_repo: Repo, repo: RepoSpec, sha: str) -> None:
    """Push `sha` as the new default branch head; a rejection is never retried with force."""
    target = f"{sha}:refs/heads/{repo.default_branch}"
    where = f"{repo.remote}/{repo.default_branch}"
    with _failing(f"could not push the merge to {where} (did it move? merge again)"):
        _network(git_repo, "push", _remote(repo), target)


def _advance_local_default(git_repo: Repo, repo: RepoSpec, sha: str) -> None:
    """Fast-forward the local default branch to `sha` unless a worktree has it checked out."""
    ref = f"refs/heads/{repo.default_branch}"
    old = _sha(git_repo, ref)
    if old is None or repo.default_branch in _checked_out(git_repo).values():
        return
    try:
        git_repo.git.merge_base("--is-ancestor", old, sha)
        git_repo.git.update_ref(ref, sha, old)
    except GitCommandError:
        # Diverged local commits, or a concurrent update: the remote is right, leave ours be.
        logger.info("local default branch not fast-forwarded", extra={"repo": repo.name})


def _discard_scratch(git_repo: Repo, scratch: Path) -> None:
    """Remove the scratch worktree whatever happened; never raises over the real error."""
    with suppress(GitCommandError):
        git_repo.git.worktree("remove", "--force", str(scratch))
    shutil.rmtree(scratch, ignore_errors=True)
    with suppress(GitCommandError):
        git_repo.git.worktree("prune")
