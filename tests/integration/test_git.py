"""The git port against real repositories: a clone and a bare remote in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from integrations.git import (
    DeleteOutcome,
    GitError,
    RepoSpec,
    UnsafeBranchError,
    UnsafePathError,
    Worktree,
    branch_name,
    create_worktree,
    delete_local_branch,
    delete_remote_branch,
    head_sha,
    merge_branch,
    push_branch,
    remote_branch_sha,
    remove_worktree,
    worktree_path,
)
from tests.gitrepo import commit_file, configure, git, make_repo

KEY = "PROJ-42"
BRANCH = branch_name(KEY)


@pytest.fixture(autouse=True)
def _no_user_git_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's global and system git config out of these tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def remote_repo(tmp_path: Path) -> tuple[RepoSpec, Path]:
    return make_repo(tmp_path, protected=("release/*",))


@pytest.fixture
def repo(remote_repo: tuple[RepoSpec, Path]) -> RepoSpec:
    return remote_repo[0]


@pytest.fixture
def bare(remote_repo: tuple[RepoSpec, Path]) -> Path:
    return remote_repo[1]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "worktrees"


@pytest.fixture
def worktree(repo: RepoSpec, root: Path) -> Worktree:
    return create_worktree(repo, root, KEY, BRANCH)


def push_from_elsewhere(bare: Path, tmp_path: Path, name: str, text: str) -> str:
    """Someone else's clone commits `name` on main and pushes it; the new remote SHA."""
    other = tmp_path / "someone-else"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    configure(other)
    sha = commit_file(other, name, text, f"someone else changes {name}")
    git(other, "push", "-q", "origin", "main")
    return sha


def remote_sha(bare: Path, ref: str) -> str:
    return git(bare, "rev-parse", ref)


# --- create_worktree ------------------------------------------------------------------


def test_create_worktree_checks_out_a_new_branch_at_the_remote_default(
    repo: RepoSpec, root: Path, bare: Path, worktree: Worktree
) -> None:
    assert worktree.path == worktree_path(root, repo, KEY) == root / "app" / "proj-42"
    assert worktree.branch == BRANCH == "conveyor/proj-42"
    assert worktree.base_sha == remote_sha(bare, "main") == head_sha(worktree.path)
    assert git(worktree.path, "symbolic-ref", "HEAD") == f"refs/heads/{BRANCH}"


def test_create_worktree_is_idempotent(repo: RepoSpec, root: Path, worktree: Worktree) -> None:
    commit_file(worktree.path, "work.txt", "work\n", "agent work")
    assert create_worktree(repo, root, KEY, BRANCH) == worktree


def test_create_worktree_starts_from_a_fresh_fetch(
    repo: RepoSpec, root: Path, bare: Path, tmp_path: Path
) -> None:
    newer = push_from_elsewhere(bare, tmp_path, "other.txt", "x\n")
    assert create_worktree(repo, root, KEY, BRANCH).base_sha == newer


def test_create_worktree_falls_back_to_the_local_default_when_offline(
    repo: RepoSpec, root: Path
) -> None:
    local_only = commit_file(repo.path, "local.txt", "x\n", "not pushed")
    git(repo.path, "remote", "set-url", "origin", str(root.parent / "gone.git"))
    assert create_worktree(repo, root, KEY, BRANCH).base_sha == local_only


def test_create_worktree_refuses_a_leftover_branch_elsewhere(repo: RepoSpec, root: Path) -> None:
    git(repo.path, "branch", BRANCH)
    commit_file(repo.path, "moved.txt", "x\n", "main moves on")
    git(repo.path, "push", "-q", "origin", "main")
    with pytest.raises(GitError, match="already exists"):
        create_worktree(repo, root, KEY, BRANCH)


def test_create_worktree_reuses_a_leftover_branch_at_the_base(repo: RepoSpec, root: Path) -> None:
    git(repo.path, "branch", BRANCH)
    assert create_worktree(repo, root, KEY, BRANCH).base_sha == head_sha(repo.path)


def test_create_worktree_refuses_the_default_branch(repo: RepoSpec, root: Path) -> None:
    with pytest.raises(UnsafeBranchError):
        create_worktree(repo, root, KEY, "main")


# --- push_branch / remote_branch_sha --------------------------------------------------


def test_push_branch_publishes_the_branch_head(repo: RepoSpec, worktree: Worktree) -> None:
    assert remote_branch_sha(repo, BRANCH) is None
    sha = commit_file(worktree.path, "work.txt", "work\n", "agent work")
    assert push_branch(repo, worktree.path, BRANCH) == sha
    assert remote_branch_sha(repo, BRANCH) == sha


def test_push_branch_never_forces_over_someone_elses_push(
    repo: RepoSpec, worktree: Worktree, bare: Path
) -> None:
    commit_file(worktree.path, "work.txt", "one\n", "agent work")
    push_branch(repo, worktree.path, BRANCH)
    git(worktree.path, "reset", "-q", "--hard", "HEAD~1")
    commit_file(worktree.path, "work.txt", "two\n", "rewritten history")
    before = remote_sha(bare, BRANCH)
    with pytest.raises(GitError, match="could not push"):
        push_branch(repo, worktree.path, BRANCH)
    assert remote_sha(bare, BRANCH) == before


def test_push_branch_refuses_main(repo: RepoSpec) -> None:
    with pytest.raises(UnsafeBranchError):
        push_branch(repo, repo.path, "main")


def test_remote_branch_sha_fails_when_the_remote_is_unreachable(
    repo: RepoSpec, tmp_path: Path
) -> None:
    git(repo.path, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    with pytest.raises(GitError, match="could not reach origin"):
        remote_branch_sha(repo, BRANCH)


# --- remove_worktree ------------------------------------------------------------------


def test_remove_worktree_removes_it_and_then_reports_done(
    repo: RepoSpec, root: Path, worktree: Worktree
) -> None:
    assert remove_worktree(repo, root, worktree.path) is True
    assert not worktree.path.exists()
    assert str(worktree.path) not in git(repo.path, "worktree", "list")
    assert remove_worktree(repo, root, worktree.path) is False


def test_remove_worktree_deletes_a_directory_git_forgot(repo: RepoSpec, root: Path) -> None:
    stray = root / "app" / "stray"
    (stray / "sub").mkdir(parents=True)
    assert remove_worktree(repo, root, stray) is True
    assert not stray.exists()


@pytest.mark.parametrize("escape", ["dotdot", "symlink", "absolute", "root", "repo_dir"])
def test_remove_worktree_refuses_paths_outside_the_root(
    repo: RepoSpec, root: Path, tmp_path: Path, escape: str
) -> None:
    outside = tmp_path / "precious"
    (outside / "data").mkdir(parents=True)
    (root / "app").mkdir(parents=True)
    (root / "app" / "link").symlink_to(outside)
    path = {
        "dotdot": root / "app" / ".." / ".." / "precious",
        "symlink": root / "app" / "link",
        "absolute": outside,
        "root": root,
        "repo_dir": root / "app",
    }[escape]
    with pytest.raises(UnsafePathError):
        remove_worktree(repo, root, path)
    assert (outside / "data").is_dir()
    assert (root / "app" / "link").is_symlink()


# --- merge_branch ---------------------------------------------------------------------


def test_merge_branch_merges_and_pushes_the_default_branch(
    repo: RepoSpec, worktree: Worktree, bare: Path, tmp_path: Path
) -> None:
    commit_file(worktree.path, "feature.txt", "feature\n", "agent work")
    scratch = tmp_path / "scratch"
    local_main = head_sha(repo.path)

    result = merge_branch(repo, BRANCH, "Merge PROJ-42", scratch)

    assert result.merged and result.conflict is None
    assert result.sha == remote_sha(bare, "main")
    assert git(bare, "show", "main:feature.txt") == "feature"
    assert git(bare, "rev-list", "--merges", "main").splitlines() == [result.sha]
    assert git(bare, "log", "-1", "--format=%s", "main") == "Merge PROJ-42"
    # The user's checkout in repo.path is not disturbed: main stays where it was.
    assert head_sha(repo.path) == local_main
    assert git(repo.path, "status", "--porcelain") == ""
    assert list((scratch / "app").iterdir()) == []


def test_merge_branch_fast_forwards_a_local_default_nobody_has_checked_out(
    repo: RepoSpec, worktree: Worktree, tmp_path: Path
) -> None:
    git(repo.path, "checkout", "-q", "--detach")
    commit_file(worktree.path, "feature.txt", "feature\n", "agent work")
    result = merge_branch(repo, BRANCH, "Merge PROJ-42", tmp_path / "scratch")
    assert git(repo.path, "rev-parse", "refs/heads/main") == result.sha


def test_merge_branch_reports_a_conflict_and_changes_nothing(
    repo: RepoSpec, worktree: Worktree, bare: Path, tmp_path: Path
) -> None:
    commit_file(worktree.path, "README.md", "ours\n", "agent edits README")
    push_from_elsewhere(bare, tmp_path, "README.md", "theirs\n")
    remote_before, local_before = remote_sha(bare, "main"), head_sha(repo.path)
    scratch = tmp_path / "scratch"

    result = merge_branch(repo, BRANCH, "Merge PROJ-42", scratch)

    assert result == type(result)(merged=False, sha=None, conflict="conflict in README.md")
    assert remote_sha(bare, "main") == remote_before
    assert head_sha(repo.path) == local_before
    assert list((scratch / "app").iterdir()) == []
    assert "detached" not in git(repo.path, "worktree", "list")


def test_merge_branch_rejected_push_is_an_error_and_leaves_no_scratch(
    repo: RepoSpec, worktree: Worktree, bare: Path, tmp_path: Path
) -> None:
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected by the forge' >&2\nexit 1\n")
    hook.chmod(0o755)
    commit_file(worktree.path, "feature.txt", "feature\n", "agent work")
    before = remote_sha(bare, "main")
    with pytest.raises(GitError, match="could not push the merge"):
        merge_branch(repo, BRANCH, "Merge PROJ-42", tmp_path / "scratch")
    assert remote_sha(bare, "main") == before
    assert list((tmp_path / "scratch" / "app").iterdir()) == []


def test_merge_branch_again_after_success_is_a_no_op(
    repo: RepoSpec, worktree: Worktree, bare: Path, tmp_path: Path
) -> None:
    commit_file(worktree.path, "feature.txt", "feature\n", "agent work")
    first = merge_branch(repo, BRANCH, "Merge PROJ-42", tmp_path / "scratch")
    again = merge_branch(repo, BRANCH, "Merge PROJ-42", tmp_path / "scratch")
    assert again == first
    assert git(bare, "rev-list", "--merges", "main").splitlines() == [first.sha]


# --- delete_remote_branch / delete_local_branch ---------------------------------------


def pushed(repo: RepoSpec, worktree: Worktree) -> str:
    commit_file(worktree.path, "work.txt", "work\n", "agent work")
    return push_branch(repo, worktree.path, BRANCH)


def test_delete_remote_branch_deletes_the_recorded_head(repo: RepoSpec, worktree: Worktree) -> None:
    sha = pushed(repo, worktree)
    result = delete_remote_branch(repo, BRANCH, task_branch=BRANCH, recorded_sha=sha)
    assert result.outcome is DeleteOutcome.DELETED
    assert remote_branch_sha(repo, BRANCH) is None
    again = delete_remote_branch(repo, BRANCH, task_branch=BRANCH, recorded_sha=sha)
    assert again.outcome is DeleteOutcome.MISSING


def test_delete_remote_branch_leaves_a_moved_head_alone(repo: RepoSpec, worktree: Worktree) -> None:
    recorded = pushed(repo, worktree)
    newer = commit_file(worktree.path, "more.txt", "more\n", "someone else's push")
    push_branch(repo, worktree.path, BRANCH)
    result = delete_remote_branch(repo, BRANCH, task_branch=BRANCH, recorded_sha=recorded)
    assert result.outcome is DeleteOutcome.CONFLICT
    assert result.reason == f"remote head moved: {newer} != recorded {recorded}"
    assert remote_branch_sha(repo, BRANCH) == newer


def test_delete_remote_branch_lease_refuses_a_push_from_another_clone(
    repo: RepoSpec, worktree: Worktree, bare: Path, tmp_path: Path
) -> None:
    # The clone's own view (its remote-tracking ref) still says the recorded SHA: only
    # the lease on the remote itself can see the other clone's push.
    recorded = pushed(repo, worktree)
    other = tmp_path / "someone-else"
    git(tmp_path, "clone", "-q", "-b", BRANCH, str(bare), str(other))
    configure(other)
    newer = commit_file(other, "theirs.txt", "theirs\n", "someone else's push")
    git(other, "push", "-q", "origin", BRANCH)
    result = delete_remote_branch(repo, BRANCH, task_branch=BRANCH, recorded_sha=recorded)
    assert result.outcome is DeleteOutcome.CONFLICT
    assert result.reason == f"remote head moved: {newer} != recorded {recorded}"
    assert remote_sha(bare, BRANCH) == newer


def test_delete_remote_branch_without_a_recorded_sha_keeps_the_branch(
    repo: RepoSpec, worktree: Worktree, bare: Path
) -> None:
    sha = pushed(repo, worktree)
    result = delete_remote_branch(repo, BRANCH, task_branch=BRANCH, recorded_sha=None)
    assert result.outcome is DeleteOutcome.CONFLICT
    assert remote_sha(bare, BRANCH) == sha


@pytest.mark.parametrize("hostile", ["main", "refs/heads/main", "Main", "release/1.0"])
def test_delete_remote_branch_refuses_protected_branches(
    repo: RepoSpec, bare: Path, hostile: str
) -> None:
    git(repo.path, "push", "-q", "origin", "main:refs/heads/release/1.0")
    main = remote_sha(bare, "main")
    result = delete_remote_branch(repo, hostile, task_branch=hostile, recorded_sha=main)
    assert result.outcome is DeleteOutcome.REFUSED
    assert remote_sha(bare, "main") == main
    assert remote_sha(bare, "release/1.0") == main


def test_delete_remote_branch_fails_when_the_remote_is_unreachable(
    repo: RepoSpec, worktree: Worktree, tmp_path: Path
) -> None:
    sha = pushed(repo, worktree)
    git(repo.path, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    with pytest.raises(GitError):
        delete_remote_branch(repo, BRANCH, task_branch=BRANCH, recorded_sha=sha)


def test_delete_local_branch(repo: RepoSpec, root: Path, worktree: Worktree) -> None:
    with pytest.raises(UnsafeBranchError):
        delete_local_branch(repo, "main")
    with pytest.raises(GitError, match="remove its worktree first"):
        delete_local_branch(repo, BRANCH)
    remove_worktree(repo, root, worktree.path)
    assert delete_local_branch(repo, BRANCH) is True
    assert delete_local_branch(repo, BRANCH) is False
    assert head_sha(repo.path) == git(repo.path, "rev-parse", "refs/heads/main")
