"""The demo's world: a git repository with a bare remote, and the agent scripts it runs.

Plain `git` in subprocesses with the repository's own identity, so the demo runs the same
whatever the user's global git configuration says.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConveyorError

IDENTITY = (("user.name", "Conveyor Demo"), ("user.email", "demo@conveyor.invalid"))
DEFAULT_BRANCH = "main"


class DemoError(ConveyorError):
    """The demo could not set up or observe its world; the message says where."""


@dataclass(frozen=True)
class DemoRepo:
    name: str
    clone: Path  # the local clone conveyor adds worktrees from
    bare: Path  # its remote, "origin"


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd`; its stripped stdout, or DemoError with its stderr."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DemoError("the demo needs git on PATH; install git and try again") from None
    if done.returncode != 0:
        raise DemoError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def make_repo(root: Path, name: str = "app") -> DemoRepo:
    """A clone at root/<name> with one commit pushed to a bare remote at root/<name>.git."""
    bare, clone = root / f"{name}-remote.git", root / name
    git(root, "init", "-q", "--bare", "-b", DEFAULT_BRANCH, str(bare))
    git(root, "init", "-q", "-b", DEFAULT_BRANCH, str(clone))
    for key, value in (*IDENTITY, ("commit.gpgsign", "false")):
        git(clone, "config", key, value)
    git(clone, "remote", "add", "origin", str(bare))
    (clone / "README.md").write_text("A demo repository for conveyor.\n")
    git(clone, "add", "README.md")
    git(clone, "commit", "-q", "-m", "initial commit")
    git(clone, "push", "-q", "-u", "origin", DEFAULT_BRANCH)
    return DemoRepo(name=name, clone=clone, bare=bare)


# A pre-receive hook reads "<old> <new> <ref>" lines; only the default branch is slowed.
_SLOW_HOOK = """\
#!/bin/sh
while read old new ref; do
  if [ "$ref" = "refs/heads/{branch}" ]; then sleep {seconds}; fi
done
exit 0
"""


def slow_down_pushes(repo: DemoRepo, seconds: float, branch: str = DEFAULT_BRANCH) -> None:
    """Make every push to `branch` on the remote take `seconds` (a slow merge)."""
    hook = repo.bare / "hooks" / "pre-receive"
    hook.write_text(_SLOW_HOOK.format(branch=branch, seconds=seconds))
    hook.chmod(0o755)


def remote_sha(repo: DemoRepo, branch: str) -> str | None:
    """The branch's head on the remote as `git ls-remote` sees it; None when absent."""
    out = git(repo.clone, "ls-remote", "--heads", str(repo.bare), f"refs/heads/{branch}")
    return out.split()[0] if out else None


def merges_since(repo: DemoRepo, base: str, branch: str = DEFAULT_BRANCH) -> list[str]:
    """Merge commits on the remote's branch after `base`."""
    out = git(repo.bare, "rev-list", "--merges", f"{base}..refs/heads/{branch}")
    return out.split()


def parents(repo: DemoRepo, sha: str) -> list[str]:
    return git(repo.bare, "rev-list", "--parents", "-n", "1", sha).split()[1:]


# -- agents ----------------------------------------------------------------------------------

# Commits a file named after its stage and leaves a note in the docs directory.
COMMITTING_AGENT = """\
import os, subprocess
stage = os.environ["CONVEYOR_STAGE"]
with open(f"{stage}.txt", "w") as out:
    out.write(f"{stage} of {os.environ['CONVEYOR_TASK_KEY']}\\n")
subprocess.run(["git", "add", f"{stage}.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", f"{stage} by the demo agent"], check=True)
with open(os.path.join(os.environ["CONVEYOR_DOCS_DIR"], f"{stage}.md"), "w") as out:
    out.write(f"notes of {stage}\\n")
"""

# Commits work in progress, says so in the docs directory, then works until SIGTERM.
COOPERATIVE_AGENT = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
with open("work.txt", "w") as out:
    out.write("work in progress\\n")
subprocess.run(["git", "add", "work.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work in progress"], check=True)
with open(os.path.join(os.environ["CONVEYOR_DOCS_DIR"], "started"), "w") as out:
    out.write("working\\n")
while True:
    time.sleep(0.05)
"""

STARTED_MARKER = "started"  # the cooperative agent's note that it is at work


def write_agents(directory: Path, scenario: str) -> dict[str, str]:
    """The agent scripts for a scenario; stage → the shell command that runs it."""
    directory.mkdir(parents=True, exist_ok=True)
    commit = _script(directory, "commit_agent.py", COMMITTING_AGENT)
    if scenario in ("deferred", "pull-request"):
        return {"analysis": commit, "implementation": commit, "review": commit}
    work = _script(directory, "cooperative_agent.py", COOPERATIVE_AGENT)
    return {"analysis": commit, "implementation": work, "review": commit}


def _script(directory: Path, name: str, body: str) -> str:
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return f"exec {shlex.quote(sys.executable)} {shlex.quote(str(path))}"
