"""Throw-away git repositories for tests: a local clone with a bare remote, real git."""

from __future__ import annotations

import subprocess
from pathlib import Path

from integrations.git import RepoSpec

__all__ = ["commit_file", "git", "make_repo"]

IDENTITY = (("user.name", "Conveyor Tests"), ("user.email", "tests@conveyor.invalid"))


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its stripped stdout; fail loudly with its stderr."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def configure(path: Path) -> None:
    """Give a repository its own identity and no signing, whatever the global config says."""
    for key, value in (*IDENTITY, ("commit.gpgsign", "false")):
        git(path, "config", key, value)


def commit_file(path: Path, name: str, text: str, message: str) -> str:
    """Write `name` in the worktree at `path`, commit it, and return the new HEAD SHA."""
    target = path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(path, "add", "--", name)
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


def make_repo(
    tmp_path: Path, name: str = "app", *, protected: tuple[str, ...] = ()
) -> tuple[RepoSpec, Path]:
    """A clone at tmp_path/<name> with one commit pushed to a bare remote; (spec, bare path)."""
    bare = tmp_path / f"{name}-remote.git"
    clone = tmp_path / name
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "init", "-q", "-b", "main", str(clone))
    configure(clone)
    git(clone, "remote", "add", "origin", str(bare))
    commit_file(clone, "README.md", "hello\n", "initial commit")
    git(clone, "push", "-q", "-u", "origin", "main")
    spec = RepoSpec(name=name, path=clone, protected_branches=protected)
    return spec, bare
