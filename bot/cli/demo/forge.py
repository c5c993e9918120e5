"""The demo's forge: the in-package fake forge, over the demo's real bare remote.

Pull requests live in memory (the fake), but a pull request's head is the branch's real
head on the remote, and merging one merges it there for real (a merge commit on main, as
GitHub would make), so the account can check the merge against the world. Its checks
report pending twice, then pass: the merge stage is seen waiting outside the critical
window before it merges.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread

from bot.cli.demo import repo as demo_repo
from bot.cli.demo.repo import DemoRepo
from integrations.forges.base import Mergeability, MergeMethod, MergeState, PullRequest
from integrations.forges.fake import FakeForge

FORGE_REPO = "demo/app"
CHECK = "demo/ci"
PENDING_READS = 2


@dataclass
class DemoForge(FakeForge):
    """FakeForge whose pulls follow, and merge into, the demo's bare remote."""

    repo: DemoRepo | None = None
    opened: list[int] = field(default_factory=list)

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        sha = demo_repo.remote_sha(self._world(), head)
        if sha:
            self.push(repo, head, sha)
        pr = await super().open_pull_request(repo, head=head, base=base, title=title, body=body)
        if pr.number not in self.opened:
            self.opened.append(pr.number)
            waiting = Mergeability(MergeState.PENDING, f"waiting for checks: {CHECK}")
            ready = Mergeability(MergeState.MERGEABLE)
            self.script_mergeability(repo, pr.number, *([waiting] * PENDING_READS), ready)
        return pr

    async def merge(self, repo: str, number: int, *, method: MergeMethod, sha: str) -> str:
        pull = self.pull(repo, number)
        if pull.head_sha == sha and pull.merge_sha is None:
            message = f"Merge pull request #{number} from {pull.head}"
            merged = await anyio.to_thread.run_sync(_merge, self._world(), pull.head, message)
            self.script_merge(repo, number, merged)
        return await super().merge(repo, number, method=method, sha=sha)

    def _world(self) -> DemoRepo:
        assert self.repo is not None, "the demo forge needs the demo repository"
        return self.repo


def _merge(repo: DemoRepo, head: str, message: str) -> str:
    """`git merge --no-ff` of the branch into main on the remote; the merge commit."""
    with tempfile.TemporaryDirectory(prefix="demo-forge-") as scratch:
        work = Path(scratch) / "merge"
        demo_repo.git(Path(scratch), "clone", "-q", str(repo.bare), str(work))
        for key, value in (*demo_repo.IDENTITY, ("commit.gpgsign", "false")):
            demo_repo.git(work, "config", key, value)
        demo_repo.git(work, "merge", "-q", "--no-ff", f"origin/{head}", "-m", message)
        demo_repo.git(work, "push", "-q", "origin", demo_repo.DEFAULT_BRANCH)
        return demo_repo.git(work, "rev-parse", "HEAD")
