"""May conveyor delete this branch? Pure decisions over names and SHAs, no I/O."""

from __future__ import annotations

import fnmatch
import unicodedata
from collections.abc import Sequence

__all__ = [
    "BRANCH_PREFIX",
    "PROTECTED_ALWAYS",
    "deletion_refusal",
    "is_protected",
    "normalise_branch",
    "ref_format_problem",
]

PROTECTED_ALWAYS = ("main", "master")
BRANCH_PREFIX = "conveyor/"

# `git check-ref-format` rules 4, 5 and 10: characters never allowed anywhere in a ref.
_FORBIDDEN_CHARS = frozenset(" ~^:?*[\\\x7f") | frozenset(map(chr, range(0x20)))
_FORBIDDEN_SEQUENCES = ("..", "@{", "//")


def normalise_branch(name: str) -> str:
    """Fold a branch name for comparison only: NFKC, casefold, trimmed, no "refs/heads/"."""
    folded = unicodedata.normalize("NFKC", name).casefold().strip()
    # Repeated, so "refs/heads/refs/heads/main" cannot hide "main" from a comparison.
    while folded.startswith("refs/heads/"):
        folded = folded.removeprefix("refs/heads/").strip()
    return folded


def ref_format_problem(name: str) -> str | None:
    """Why `name` is not a valid branch name per `git check-ref-format --branch`, or None.

    Slightly stricter than git on purpose: no component may start with "-" (git only
    checks the first character of the whole name) and "@" alone is refused.
    """
    if not name:
        return "branch name is empty"
    if name in ("@", "HEAD"):
        return f"{name!r} is not a branch name"
    if bad := sorted(_FORBIDDEN_CHARS.intersection(name)):
        return f"branch name contains forbidden characters {''.join(bad)!r}"
    if bad_seq := [seq for seq in _FORBIDDEN_SEQUENCES if seq in name]:
        return f"branch name contains {bad_seq[0]!r}"
    if name.startswith("/") or name.endswith(("/", ".")):
        return "branch name must not start with '/' or end with '/' or '.'"
    return _component_problem(name.split("/"))


def _component_problem(components: Sequence[str]) -> str | None:
    """Why one slash-separated component of a branch name is invalid, or None."""
    for part in components:
        if part.startswith((".", "-")):
            return f"component {part!r} starts with {part[0]!r}"
        if part.endswith(".lock"):
            return f"component {part!r} ends with '.lock'"
    return None


def is_protected(branch: str, *, default_branch: str, protected: Sequence[str]) -> bool:
    """True when `branch` is the default branch, main/master, or matches a protected pattern."""
    folded = normalise_branch(branch)
    names = {normalise_branch(name) for name in (default_branch, *PROTECTED_ALWAYS)}
    if folded in names:
        return True
    candidates = (folded, branch.casefold())
    patterns = [normalise_branch(pattern) for pattern in protected]
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


def deletion_refusal(
    branch: str,
    *,
    task_branch: str,
    default_branch: str,
    protected: Sequence[str],
    remote_sha: str | None = None,
    recorded_sha: str | None = None,
) -> str | None:
    """None when conveyor may delete `branch`, else the reason it must not."""
    reason = _name_refusal(branch, default_branch=default_branch, protected=protected)
    if reason is None and branch != task_branch:
        reason = f"{branch!r} is not the task's recorded branch {task_branch!r}"
    if reason is None and not branch.startswith(BRANCH_PREFIX):
        reason = f"{branch!r} does not start with {BRANCH_PREFIX!r}"
    if reason is None and _moved(remote_sha, recorded_sha):
        reason = f"remote head moved: {remote_sha} != recorded {recorded_sha}"
    return reason


def _name_refusal(branch: str, *, default_branch: str, protected: Sequence[str]) -> str | None:
    """The reason the name alone forbids deletion, or None."""
    if not branch.strip():
        return "branch name is empty"
    if branch != branch.strip():
        return f"branch name {branch!r} has surrounding whitespace"
    if is_protected(branch, default_branch=default_branch, protected=protected):
        return f"{branch!r} is the default or a protected branch"
    if not branch.isascii():
        return f"{branch!r} contains non-ASCII characters (look-alikes are refused)"
    return ref_format_problem(branch)


def _moved(remote_sha: str | None, recorded_sha: str | None) -> bool:
    """True when both SHAs are known and differ."""
    return remote_sha is not None and recorded_sha is not None and remote_sha != recorded_sha
