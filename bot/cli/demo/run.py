"""`conveyor demo`: a whole start-and-STOP run on this machine, with no network and no
configuration, and an account of what the reset did, checked against the world.

In a temporary directory: a git repository with a bare remote, agent scripts, the real
server on a free loopback port (SQLite, a generated webhook secret and admin token), a
signed start webhook, a real agent process, a signed STOP webhook. Scenario `deferred`
sends the STOP while a (slowed) merge is pushing, so the finalizer applies it afterwards.
Scenario `pull-request` merges through a pull request on a fake forge the demo starts
itself (in memory, over the real bare remote), and checks the branch is deleted after.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bot.cli.demo import account
from bot.cli.demo import repo as demo_repo
from bot.cli.demo.account import Claim, World
from bot.cli.demo.forge import FORGE_REPO, DemoForge
from bot.cli.demo.repo import DemoRepo
from bot.cli.demo.scenarios import (
    KEY,
    MERGE_SECONDS,
    POLL_SECONDS,
    PROJECT,
    SCENARIOS,
    Doc,
    Halted,
    Run,
    claim_line,
)
from bot.cli.output import print_json
from bot.cli.remote import ServerClient
from bot.errors import ConveyorError
from bot.logs import JsonFormatter, RedactSecrets, TextFormatter
from bot.serve import serving_in_thread
from bot.services import Services
from bot.settings import Settings, settings_from_dict
from integrations.names import safe_name
from integrations.processes import group_alive, processes_with_env


@dataclass(frozen=True)
class Keys:
    """The run's generated secrets: used, redacted from the log, never printed."""

    admin_token: str
    webhook_secret: str

    @classmethod
    def generate(cls) -> Keys:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24))


def main(args: argparse.Namespace) -> int:
    """Run the scenario in a temporary directory; 0 only when every claim holds."""
    as_json = bool(getattr(args, "json", False))
    console = Console(highlight=False, soft_wrap=True, quiet=as_json)  # --json: one document
    root = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    keys = Keys.generate()
    log_path = root / "logs" / "server.log"
    hidden = [keys.admin_token, keys.webhook_secret]
    told = Told(args.scenario, str(root) if args.keep else None)
    try:
        with _logging_to(log_path, args.log_format or "text", hidden):
            _run_and_tell(root, args.scenario, console, keys, told)
    finally:
        _leave(root, keep=args.keep, console=console)
    if as_json:
        print_json(told.as_json())
    return 0 if told.ok else 1


@dataclass
class Told:
    """What the demo found, for `--json`."""

    scenario: str
    kept: str | None
    claims: list[Claim] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.claims is not None and all(c.holds for c in self.claims)

    def as_json(self) -> dict[str, object]:
        claims = [{"holds": c.holds, "claim": c.text} for c in self.claims or []]
        return {
            "scenario": self.scenario,
            "ok": self.ok,
            "claims": claims,
            "error": self.error,
            "kept": self.kept,
        }


def _run_and_tell(root: Path, scenario: str, console: Console, keys: Keys, told: Told) -> None:
    console.print(f"conveyor demo, scenario {scenario}, in {root}", markup=False)
    try:
        told.claims = run(root, scenario, console, keys)
    except ConveyorError as exc:
        told.error = str(exc) or "the demo did not finish"
        if not isinstance(exc, Halted):
            console.print(f"  ✘ {exc}", markup=False)
        console.print("The demo did not finish; the server log says more (run with --keep).")
        return
    failed = [c for c in told.claims if not c.holds]
    verdict = "Every claim holds." if not failed else f"{len(failed)} claim(s) do not hold."
    console.print(verdict, markup=False)


def run(root: Path, scenario: str, console: Console, keys: Keys) -> list[Claim]:
    """Set up, run the scenario against the real server, and account for the reset."""
    began = time.time()
    repo = demo_repo.make_repo(root)
    if scenario == "deferred":
        demo_repo.slow_down_pushes(repo, MERGE_SECONDS)
    agents = demo_repo.write_agents(root / "agents", scenario)
    pull_requests = scenario == "pull-request"
    settings = demo_settings(root, repo, agents, keys, pull_requests=pull_requests)
    demo = Run(root, scenario, repo, settings, console, began)
    if pull_requests:
        demo.forge = DemoForge(forge_name="fake forge", repo=repo)
    main_before = demo_repo.remote_sha(repo, demo_repo.DEFAULT_BRANCH) or ""
    made = f"repository {repo.name}: one commit on main ({main_before[:7]}), remote {repo.bare}"
    demo.say(Claim(True, made))
    with (
        serving_in_thread(settings, configure=_swap_forge(demo.forge)) as url,
        ServerClient(url) as client,
    ):
        demo.client = client
        demo.say(Claim(True, f"server up at {url}, SQLite at {root / 'conveyor.db'}"))
        detail = SCENARIOS[scenario](demo)
    world = observe(demo, detail, main_before)
    return _account(demo, detail, world)


def _swap_forge(forge: DemoForge | None) -> Callable[[Services], None] | None:
    """The server uses the demo's fake forge in place of GitHub (no network, no token)."""
    if forge is None:
        return None

    def configure(svc: Services) -> None:
        svc.forges["github"] = forge

    return configure


def demo_settings(
    root: Path, repo: DemoRepo, agents: dict[str, str], keys: Keys, *, pull_requests: bool = False
) -> Settings:
    """Settings made here, never read: a stray conveyor.toml or env var changes nothing."""
    merging = (
        {"merge": "pull_request", "forge": "github", "forge_repo": FORGE_REPO}
        if pull_requests
        else {}
    )
    return settings_from_dict(
        {
            "server": {
                "database_url": f"sqlite:///{root / 'conveyor.db'}",
                "data_dir": str(root / "data"),
                "admin_token": keys.admin_token,
            },
            "workers": {
                "concurrency": 2,
                "retries": 0,  # a failing demo agent should say so at once
                "poll_interval_seconds": POLL_SECONDS,
                "retry_backoff_seconds": 0.1,
            },
            "stop": {"grace_seconds": 3, "finalizer_interval_seconds": 0.5},
            "trackers": {
                "plane": {
                    "webhook_secret": keys.webhook_secret,
                    "project_identifiers": {PROJECT: "DEMO"},
                }
            },
            "agents": agents,
            "repos": [
                {
                    "name": repo.name,
                    "path": str(repo.clone),
                    "tracker_project": PROJECT,
                    **merging,
                }
            ],
        }
    )


# -- the account -------------------------------------------------------------------------


def observe(demo: Run, detail: Doc, main_before: str) -> World:
    """What the world looks like now, seen without asking conveyor."""
    task, repo = detail["task"], demo.repo
    main_after = demo_repo.remote_sha(repo, demo_repo.DEFAULT_BRANCH)
    merges = demo_repo.merges_since(repo, main_before)
    docs = demo.data("docs", safe_name(KEY))
    return World(
        main_before=main_before,
        main_after=main_after,
        branch_on_remote=demo_repo.remote_sha(repo, task.get("branch") or ""),
        worktree_exists=Path(task.get("worktree_path") or demo.root / "none").exists(),
        groups_alive=[j["pgid"] for j in detail["jobs"] if j["pgid"] and group_alive(j["pgid"])],
        leftover_pids=leftovers(detail),
        docs=sorted(p.name for p in docs.iterdir()) if docs.is_dir() else [],
        merges=merges,
        merge_parents=demo_repo.parents(repo, merges[0]) if merges else [],
        **_forge_world(demo, task),
    )


def _forge_world(demo: Run, task: Doc) -> dict[str, Any]:
    """The pull request as the fake forge has it, and how often it was asked."""
    forge, number = demo.forge, task.get("pr_number")
    if forge is None or not isinstance(number, int):
        return {}
    pull = forge.pull(FORGE_REPO, number)
    seen = {
        "number": pull.number,
        "head": pull.head,
        "base": pull.base,
        "title": pull.title,
        "state": pull.state.value,
        "merge_sha": pull.merge_sha,
    }
    reads = sum(call.startswith("mergeability ") for call in forge.calls)
    return {"pull_request": seen, "mergeability_reads": reads}


def leftovers(detail: Doc) -> list[int]:
    """Live processes carrying one of the task's CONVEYOR_RUN_IDs."""
    run_ids = [j["run_id"] for j in detail["jobs"] if j.get("run_id")]
    return sorted(pid for rid in run_ids for pid in processes_with_env("CONVEYOR_RUN_ID", rid))


def _account(demo: Run, detail: Doc, world: World) -> list[Claim]:
    console = demo.console
    what = "the merge" if demo.scenario == "pull-request" else "the reset"
    console.print(f"What {what} did (GET /tasks/{KEY}, checked against the world):")
    claims = account.reset_claims(detail, world, demo.scenario)
    for claim in claims:
        console.print(claim_line(claim))
    console.print(f"Jobs (GET /tasks/{KEY}, time since the demo began):")
    for line in account.job_lines(detail, demo.began):
        console.print(f"  {line}", markup=False)
    console.print(f"Audit trail (GET /tasks/{KEY}, time since the demo began):")
    for line in account.audit_lines(detail, demo.began):
        console.print(f"  {line}", markup=False)
    return claims


# -- around the run ------------------------------------------------------------------------


@contextlib.contextmanager
def _logging_to(path: Path, fmt: str, hidden: list[str]) -> Iterator[None]:
    """The server's log goes to a file, so the terminal shows only the account."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactSecrets(hidden))
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    quiet = logging.getLogger("httpx")  # the demo's own requests: the server logs its side
    quiet_level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
        quiet.setLevel(quiet_level)
        handler.close()


def _leave(root: Path, *, keep: bool, console: Console) -> None:
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
        console.print("Cleaned up: server stopped, temporary directory removed.")
        return
    console.print(f"Kept {root}:", markup=False)
    for what, path in (
        ("database", root / "conveyor.db"),
        ("server log", root / "logs" / "server.log"),
        ("agent logs", root / "data" / "logs" / safe_name(KEY)),
        ("repository", root / "app"),
        ("its remote", root / "app-remote.git"),
    ):
        console.print(f"  {what:<11} {path}", markup=False)
    console.print(f"Remove it with: rm -rf {root}", markup=False)
