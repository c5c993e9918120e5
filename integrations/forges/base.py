"""The forge port: pull requests, their mergeability and merge, branch protection and
branch deletion, one Protocol for GitHub, Gitea and the in-package fake.

The merge stage and the stop plane only ever see the frozen dataclasses below, in the
domain's words; every forge error is a ForgeError. Repositories are named
``"owner/name"`` (``[[repos]] forge_repo``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from integrations.errors import IntegrationError

# -- errors ----------------------------------------------------------------------------


class ForgeError(IntegrationError):
    """A forge's API refused or failed a request; the message says which and why.

    ``status`` is the HTTP status when there was one; ``retry_after`` (seconds) is set
    when the forge said how long to wait (a rate limit longer than the client sleeps).
    A caller asking whether a branch is protected treats a ForgeError as "protected".
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class MergeRefused(ForgeError):
    """The forge would not merge the pull request (GitHub 405/409, Gitea 405/409).

    ``head_changed`` is True when the head moved away from the SHA conveyor asked to
    merge (someone pushed): read the pull request again before deciding anything.
    """

    def __init__(self, message: str, *, status: int | None = None, head_changed: bool = False):
        super().__init__(message, status=status)
        self.head_changed = head_changed


class PullRequestMerged(ForgeError):
    """A close was asked for a pull request that is already merged: it stays merged."""


class BranchRefused(ForgeError):
    """The forge refused to delete a branch; ``reason`` is ``protected`` or ``default``."""

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.reason = reason


# -- what the engine sees --------------------------------------------------------------


class PullRequestState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"  # closed without merging
    MERGED = "merged"


class MergeState(StrEnum):
    """What the merge stage should do next."""

    MERGEABLE = "mergeable"  # merge now
    PENDING = "pending"  # required checks or reviews outstanding: wait (bounded)
    BLOCKED = "blocked"  # waiting will not help: a failing check, a conflict, closed
    UNKNOWN = "unknown"  # the forge has not decided yet (GitHub computing): ask again


class MergeMethod(StrEnum):
    MERGE = "merge"
    SQUASH = "squash"
    REBASE = "rebase"


class BranchDeletion(StrEnum):
    DELETED = "deleted"
    ALREADY_GONE = "already_gone"


@dataclass(frozen=True)
class PullRequest:
    """A pull request as the forge has it. ``url`` is the web page (``CONVEYOR_PR_URL``);
    ``merge_sha`` is the merge commit once merged, else None."""

    number: int
    url: str
    head_sha: str
    state: PullRequestState
    merge_sha: str | None = None


@dataclass(frozen=True)
class Mergeability:
    """Whether the pull request can be merged now; ``reason`` in words a person can act
    on; ``failing_checks`` names the completed required checks that did not pass."""

    state: MergeState
    reason: str = ""
    failing_checks: tuple[str, ...] = ()


# -- the port ----------------------------------------------------------------------------


class Forge(Protocol):
    """One forge's API, as the merge stage and the stop plane use it."""

    @property
    def name(self) -> str:
        """The name in ``[[repos]] forge`` (``github``, ``gitea``, ``fake``)."""
        ...

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        """Open a pull request from ``head`` to ``base``; when one is already open for
        ``head``, return it with its title and body updated."""
        ...

    async def pull_request(self, repo: str, number: int) -> PullRequest:
        """The pull request as it is now."""
        ...

    async def mergeability(self, repo: str, number: int) -> Mergeability:
        """Whether it can be merged now: conflicts, required checks, protection."""
        ...

    async def merge(self, repo: str, number: int, *, method: MergeMethod, sha: str) -> str:
        """Merge it if its head is still ``sha``; the merge commit's SHA. MergeRefused
        when the forge will not; an already merged pull request answers its merge commit."""
        ...

    async def close(self, repo: str, number: int, *, comment: str) -> None:
        """Comment, then close; a closed one stays closed; PullRequestMerged if merged."""
        ...

    async def branch_protected(self, repo: str, branch: str) -> bool:
        """True when the forge protects ``branch``; ForgeError when it cannot be asked."""
        ...

    async def delete_branch(self, repo: str, branch: str) -> BranchDeletion:
        """Delete the branch on the forge; BranchRefused for a protected or default one."""
        ...


def merged_message(repo: str, number: int) -> str:
    return (
        f"pull request #{number} of {repo} is already merged: it stays merged "
        "(conveyor never closes a merged pull request)"
    )


def split_repo(repo: str) -> tuple[str, str]:
    """``"owner/name"`` → (owner, name); ForgeError saying what is wrong otherwise."""
    parts = repo.split("/")
    if len(parts) != 2 or not all(part.strip() and part == part.strip() for part in parts):
        raise ForgeError(f"forge repository {repo!r} is not of the form 'owner/name'")
    if any(part in (".", "..") for part in parts):
        raise ForgeError(f"forge repository {repo!r} is not of the form 'owner/name'")
    return parts[0], parts[1]
