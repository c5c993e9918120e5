"""The sweep of this server's own worktrees root: a worktree whose task is terminal, or
that no task knows, is removed, within the root and behind the same guards as a reset's
(`git worktree remove --force` + prune, never a path out of the root). It runs at
start-up, before the workers, and on the finalizer's schedule."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bot.gitops import in_repo, off_loop, repo_spec
from bot.services import Services
from bot.settings import RepoSettings
from integrations import git
from integrations.errors import IntegrationError
from state import hosts
from state.models import Stage, Task

log = logging.getLogger(__name__)

# On the schedule, a worktree younger than this is left alone: a worker may have just
# added it and not yet recorded it on its task.
MIN_AGE_SECONDS = 120.0


@dataclass
class SweepReport:
    removed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def sweep_worktrees(svc: Services, *, min_age: float = MIN_AGE_SECONDS) -> SweepReport:
    """Remove the worktrees under this server's root that nothing live needs."""
    report = SweepReport()
    for repo in svc.settings.repos:
        for path in await _leftovers(svc, repo, min_age):
            await _remove(svc, repo, path, report)
    if report.removed or report.refused or report.failed:
        log.info(
            "worktrees swept",
            extra={
                "removed": len(report.removed),
                "refused": len(report.refused),
                "failed": len(report.failed),
            },
        )
    return report


async def _leftovers(svc: Services, repo: RepoSettings, min_age: float) -> list[Path]:
    base = svc.worktrees_root / repo.name
    entries: list[tuple[Path, float]] = await off_loop(_entries, base, svc.clock.now())
    if not entries:
        return []
    known = await svc.store.run_read(
        hosts.tasks_by_worktree, [str(p) for p, _ in entries], svc.server.id
    )
    unneeded = [
        path
        for path, age in entries
        if age >= min_age and _unneeded(known.get(str(path), []), repo)
    ]
    busy: set[Path] = await off_loop(_in_use, unneeded)
    for path in sorted(busy):
        log.warning("worktree left: a process works in it", extra={"path": str(path)})
    return [p for p in unneeded if p not in busy]


def _in_use(paths: list[Path]) -> set[Path]:
    """The paths some live process has its working directory in (an agent of a task this
    server no longer knows, e.g. one left running by a crash): never pulled from under it."""
    if not paths:
        return set()
    resolved = {p.resolve(): p for p in paths}
    busy: set[Path] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").resolve(strict=True)
        except OSError:  # gone, or not ours to read
            continue
        for target, original in resolved.items():
            if cwd == target or cwd.is_relative_to(target):
                busy.add(original)
    return busy


def _entries(base: Path, now: float) -> list[tuple[Path, float]]:
    """Each directory under `base` and its age (by its `.git` file: written once at add)."""
    if not base.is_dir():
        return []
    found = []
    for entry in sorted(base.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        marker = entry / ".git"
        stamp = (marker if marker.exists() else entry).stat().st_mtime
        found.append((entry, max(0.0, now - stamp)))
    return found


def _unneeded(tasks: list[Task], repo: RepoSettings) -> bool:
    """No task needs the worktree: every task naming it is terminal (a done task keeps
    it when its repo says `remove_worktree_when_done = false`); or none names it."""
    for task in tasks:
        if not task.terminal:
            return False
        if task.stage is Stage.DONE and not repo.remove_worktree_when_done:
            return False
    return True


async def _remove(svc: Services, repo: RepoSettings, path: Path, report: SweepReport) -> None:
    try:
        await in_repo(git.remove_worktree, repo_spec(svc, repo.name), svc.worktrees_root, path)
    except git.UnsafePathError as exc:
        _count(svc, report.refused, path, "refused", str(exc))
    except IntegrationError as exc:
        _count(svc, report.failed, path, "failed", str(exc))
    else:
        _count(svc, report.removed, path, "removed", None)


def _count(svc: Services, into: list[str], path: Path, result: str, error: str | None) -> None:
    into.append(str(path))
    if svc.metrics is not None:
        svc.metrics.worktree_swept(result)
    level = logging.INFO if error is None else logging.WARNING
    log.log(
        level,
        "worktree swept",
        extra={"path": str(path), "outcome": result, **({"error": error} if error else {})},
    )
