"""The git port: task worktrees, task branches, merges and remote branch deletion.

Synchronous GitPython calls; the service runs them through `anyio.to_thread`. Nothing
here ever force-pushes: a rejected push is a `GitError`, never retried with force.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import shutil
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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

__all__ = [
    "DeleteOutcome",
    "DeleteResult",
    "GitError",
    "MergeResult",
    "RepoSpec",
    "UnsafeBranchError",
    "UnsafePathError",
    "Worktree",
    "branch_name",
    "create_worktree",
    "delete_local_branch",
    "delete_remote_branch",
    "head_sha",
    "merge_branch",
    "push_branch",
    "remote_branch_sha",
    "remove_worktree",
    "worktree_path",
]

logger = logging.getLogger(__name__)

NETWORK_TIMEOUT_SECONDS = 120.0
_MAX_SLUG = 64
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
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
    """The task branch "conveyor/<key>[-<suffix>]", a valid ref name for any input."""
    name = BRANCH_PREFIX + _slug(task_key)
    return f"{name}-{_slug(suffix)}" if suffix else name


def worktree_path(worktrees_root: Path, repo: RepoSpec, task_key: str) -> Path:
    """Where the task's worktree lives: <root>/<repo name>/<sanitised key>."""
    return worktrees_root / _repo_dir(repo) / _slug(task_key)


def _slug(text: str) -> str:
    """`text` as one safe ref component and directory name; a hash keeps altered keys apart."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _UNSAFE_RUN.sub("-", ascii_text)
    slug = re.sub(r"\.{2,}", ".", slug)[:_MAX_SLUG].strip("-.")
    if slug.endswith(".lock"):
        slug = slug.removesuffix(".lock") + "-lock"
    if slug and slug == text:
        return slug
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else f"task-{digest}"


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


# --- worktrees ----------------------------------------------------------------------


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


# --- branches -----------------------------------------------------------------------


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


# --- merge --------------------------------------------------------------------------


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
        try:
            result = _merge_in_scratch(git_repo, scratch, base, head, message)
            if result.merged and result.sha != base:
                _push_default(git_repo, repo, str(result.sha))
                _advance_local_default(git_repo, repo, str(result.sha))
        finally:
            _discard_scratch(git_repo, scratch)
    return result


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
