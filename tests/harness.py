"""The whole app with real parts: a git clone with a bare remote, real agent scripts,
SQLite in tmp_path, signed Plane webhooks, and the tracker's one fake."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.app import create_app
from bot.services import Services
from bot.settings import Settings, settings_from_dict
from integrations.git import RepoSpec
from integrations.trackers.fake import FakeTracker
from integrations.trackers.plane.payloads import build_v1_payload
from integrations.trackers.plane.webhook import sign
from state.models import Job, Task
from state.store import Store, find_task
from tests.apptools import app_client
from tests.gitrepo import git, make_repo

SECRET = "plane_wh_test_secret"
PROJECT = "5c7db7b1-1256-4e76-bfdc-fb3b34bf0180"
STATES = {
    "To Analyse": ("c490adf0-9b37-4095-b695-b1523c9091f0", "unstarted"),
    "In Progress": ("5e2d6691-2878-4fe7-b8e1-d2ccb149c5cd", "started"),
    "Confirm Deploy": ("ef4aa396-3f61-4e75-846e-31078e71c650", "started"),
    "STOP": ("e14a6af2-d4b4-42dc-8e20-d57645086590", "cancelled"),
}
ACTOR = "196f02c6-b57b-497f-bd05-8bb8840a685d"

# An agent that writes a file, commits it in its worktree and leaves a doc behind.
COMMITTING_AGENT = """\
#!/bin/sh
set -e
echo "$CONVEYOR_STAGE of $CONVEYOR_TASK_KEY" > "$CONVEYOR_STAGE.txt"
git add "$CONVEYOR_STAGE.txt"
git commit -q -m "$CONVEYOR_STAGE by agent"
echo "notes of $CONVEYOR_STAGE" > "$CONVEYOR_DOCS_DIR/$CONVEYOR_STAGE.md"
"""
# Commits, then works until told to stop; exits at once on SIGTERM.
COOPERATIVE_AGENT = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
open("work.txt", "w").write("started\\n")
subprocess.run(["git", "add", "work.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work in progress"], check=True)
open(os.path.join(os.environ["CONVEYOR_DOCS_DIR"], "started"), "w").write("yes")
while True:
    time.sleep(0.05)
"""
# Ignores SIGTERM and keeps two grandchildren that ignore it too.
STUBBORN_AGENT = """\
import os, signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
kids = [subprocess.Popen(["python3", "-c", code]) for _ in range(2)]
open(os.path.join(os.environ["CONVEYOR_DOCS_DIR"], "started"), "w").write("yes")
while True:
    time.sleep(0.05)
"""


def write_agent(directory: Path, name: str, body: str) -> str:
    """Write an agent script; return the shell command that runs it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(body))
    if name.endswith(".py"):
        return f"exec python3 {path}"
    path.chmod(0o755)
    return f"exec sh {path}"


def base_settings(
    tmp_path: Path, repo: RepoSpec, repo_settings: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir(exist_ok=True)
    ok = write_agent(agents_dir, "commit.sh", COMMITTING_AGENT)
    doc: dict[str, Any] = {
        "server": {
            "database_url": f"sqlite:///{tmp_path / 'conveyor.db'}",
            "data_dir": str(tmp_path / "data"),
            "admin_token": "admin-token-0123456789",
        },
        "workers": {
            "concurrency": 2,
            "retries": 2,
            "retry_backoff_seconds": 0.05,
            "poll_interval_seconds": 0.05,
            "lease_seconds": 6,
        },
        "stop": {"grace_seconds": 2, "finalizer_interval_seconds": 0.2},
        # The fake tracker's API side knows no tickets unless a test puts them there:
        # reconciliation tests turn it on.
        "reconcile": {"enabled": False},
        "trackers": {
            "plane": {
                "webhook_secret": SECRET,
                "project_identifiers": {PROJECT: "PROJ"},
                "bot_actor_id": "b9d23dcd-af28-4b51-9e29-459ae23d6d64",
            }
        },
        "agents": {"analysis": ok, "implementation": ok, "review": ok},
        "repos": [
            {
                "name": repo.name,
                "path": str(repo.path),
                "tracker_project": PROJECT,
                **(repo_settings or {}),
            }
        ],
    }
    for dotted, value in overrides.items():
        node = doc
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return doc


@dataclass
class Harness:
    tmp_path: Path
    repo: RepoSpec
    bare: Path
    settings: Settings
    client: httpx.AsyncClient
    svc: Services
    tracker: FakeTracker
    sent: int = field(default=0)

    @property
    def store(self) -> Store:
        return self.svc.store

    def payload(
        self,
        state: str,
        *,
        issue: str = "20617384-0d13-472c-a860-e7f89295b2f5",
        seq: int = 42,
        title: str = "Fix login redirect loop",
    ) -> bytes:
        self.sent += 1
        state_id, group = STATES[state]
        doc = build_v1_payload(
            issue_id=issue,
            project_id=PROJECT,
            sequence_id=seq,
            title=title,
            state_id=state_id,
            state_name=state,
            state_group=group,
            old_state_id=None,
            actor_id=ACTOR,
            actor_name="ada",
            updated_at=f"2026-11-21T10:00:{self.sent:02d}.{time.time_ns()}Z",
        )
        return json.dumps(doc).encode()

    async def send_body(self, body: bytes, delivery: str | None = None) -> httpx.Response:
        headers = {
            "X-Plane-Signature": sign(SECRET, body),
            "X-Plane-Event": "issue",
            "X-Plane-Delivery": delivery or f"d-{time.time_ns()}",
            "Content-Type": "application/json",
        }
        return await self.client.post("/webhooks/plane", content=body, headers=headers)

    async def send(self, state: str, **kw: Any) -> httpx.Response:
        return await self.send_body(self.payload(state, **kw))

    async def task(self, ref: str = "PROJ-42") -> Task:
        task = await self.store.run_read(find_task, ref)
        assert task is not None, f"no task {ref}"
        return task

    async def jobs(self, task_id: int) -> list[Job]:
        from state.jobs import jobs_for_task

        return await self.store.run_read(jobs_for_task, task_id)

    def remote_branches(self) -> list[str]:
        out = git(self.bare, "for-each-ref", "--format=%(refname:short)", "refs/heads/")
        return [line for line in out.splitlines() if line]

    def remote_sha(self, branch: str = "main") -> str:
        return git(self.bare, "rev-parse", f"refs/heads/{branch}")


class ManualClock:
    """The clock port, moved by hand: schedule maths checked without waiting for it."""

    def __init__(self, t: float = 1_796_035_300.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


async def wait_until(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    *,
    repo_kw: dict[str, Any] | None = None,
    repo_settings: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """The real app (workers, scheduler) on a fresh repo; `overrides` are dotted settings
    ("stop.grace_seconds": 2), `repo_settings` go into the one [[repos]] entry."""
    repo, bare = make_repo(tmp_path, **(repo_kw or {}))
    settings = settings_from_dict(base_settings(tmp_path, repo, repo_settings, **overrides))
    tracker = FakeTracker(tracker_name="plane")
    async with _serving(settings, tracker) as (client, svc):
        yield Harness(tmp_path, repo, bare, settings, client, svc, tracker)


@contextlib.asynccontextmanager
async def restarted(h: Harness) -> AsyncIterator[Harness]:
    """The same server again (settings, database, repo, tracker) after `running` ended:
    what a restart of `conveyor serve` finds."""
    async with _serving(h.settings, h.tracker) as (client, svc):
        yield Harness(h.tmp_path, h.repo, h.bare, h.settings, client, svc, h.tracker)


@contextlib.asynccontextmanager
async def _serving(
    settings: Settings, tracker: FakeTracker
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    holder: dict[str, Services] = {}

    def configure(svc: Services) -> None:
        # Plane's real webhook side in front of the fake's in-memory API side.
        tracker.webhooks = svc.trackers["plane"]
        svc.trackers["plane"] = tracker
        holder["svc"] = svc

    app = create_app(settings, configure=configure)
    async with app_client(app) as client:
        yield client, holder["svc"]
