"""The one fake of the forge port, for engine and stop-plane tests that need no HTTP.

An in-memory forge: pull requests that open, update, merge and close as on a real
forge; remote branches with their SHAs (``push``) and protected name patterns
(``protect``); scripted mergeability sequences (``pending, pending, mergeable``) and
merge results; failures injected per operation, including one that *lands* (the forge
did it, the answer was lost); calls that can be held open (``hold("merge")``) so a test
can act while one is in flight; and a log of every call in ``calls``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
from dataclasses import dataclass, field
from typing import TypeVar

from integrations.forges.base import (
    BranchDeletion,
    BranchRefused,
    ForgeError,
    Mergeability,
    MergeMethod,
    MergeRefused,
    MergeState,
    PullRequest,
    PullRequestMerged,
    PullRequestState,
    merged_message,
    split_repo,
)
from integrations.forges.checks import ALREADY_MERGED


@dataclass
class FakePull:
    """One pull request as the fake forge keeps it (tests read and change it)."""

    repo: str
    number: int
    head: str
    base: str
    title: str
    body: str
    head_sha: str
    state: PullRequestState = PullRequestState.OPEN
    merge_sha: str | None = None
    method: MergeMethod | None = None
    comments: list[str] = field(default_factory=list)

    def view(self, base_url: str) -> PullRequest:
        url = f"{base_url}/{self.repo}/pull/{self.number}"
        return PullRequest(self.number, url, self.head_sha, self.state, self.merge_sha)


@dataclass
class Failure:
    """What the next matching call raises; ``operation`` None matches any call.

    ``lands``: the forge carries the call out, then the answer is lost (a timeout
    after GitHub merged): the caller sees the error, the world sees the effect.
    """

    status: int = 503
    retry_after: float | None = None
    message: str = "fake forge told to fail"
    operation: str | None = None
    lands: bool = False


@dataclass
class Hold:
    """A call held open: ``entered`` is set when it arrives, it goes on at ``release``."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


MergeResult = str | ForgeError
T = TypeVar("T")


@dataclass
class FakeForge:
    """An in-memory forge behind the port (see the module docstring)."""

    forge_name: str = "fake"
    base_url: str = "https://fake-forge.invalid"
    default_branch: str = "main"
    pulls: dict[tuple[str, int], FakePull] = field(default_factory=dict)
    branches: dict[str, dict[str, str]] = field(default_factory=dict)  # repo → branch → sha
    protected: dict[str, list[str]] = field(default_factory=dict)  # repo → fnmatch patterns
    mergeabilities: dict[tuple[str, int], list[Mergeability]] = field(default_factory=dict)
    merge_results: dict[tuple[str, int], list[MergeResult]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    fail_always: Failure | None = None
    holds: dict[str, Hold] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.forge_name

    # -- the port ----------------------------------------------------------------------

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        failure = await self._call("open_pull_request", repo, head)
        pull = self._open_for(repo, head)
        if pull is None:
            number = 1 + max((n for r, n in self.pulls if r == repo), default=0)
            sha = self.branches.get(repo, {}).get(head) or _sha(f"{repo}:{head}")
            pull = FakePull(repo, number, head, base, title, body, sha)
            self.pulls[(repo, number)] = pull
        pull.title, pull.body = title, body
        return self._answer(failure, pull.view(self.base_url))

    async def pull_request(self, repo: str, number: int) -> PullRequest:
        failure = await self._call("pull_request", repo, f"#{number}")
        return self._answer(failure, self._pull(repo, number).view(self.base_url))

    async def mergeability(self, repo: str, number: int) -> Mergeability:
        failure = await self._call("mergeability", repo, f"#{number}")
        pull = self._pull(repo, number)
        script = self.mergeabilities.get((repo, number), [])
        if pull.state is PullRequestState.OPEN and len(script) > 1:
            return self._answer(failure, script.pop(0))
        return self._answer(failure, self._current(pull))

    async def merge(self, repo: str, number: int, *, method: MergeMethod, sha: str) -> str:
        failure = await self._call("merge", repo, f"#{number} {MergeMethod(method).value} {sha}")
        pull = self._pull(repo, number)
        if pull.state is PullRequestState.MERGED and pull.merge_sha:
            return self._answer(failure, pull.merge_sha)
        self._refuse_merge(pull, sha)
        result = self._merge_result(pull)
        pull.state, pull.merge_sha, pull.method = PullRequestState.MERGED, result, method
        self.mergeabilities.pop((repo, number), None)
        return self._answer(failure, result)

    async def close(self, repo: str, number: int, *, comment: str) -> None:
        failure = await self._call("close", repo, f"#{number}")
        pull = self._pull(repo, number)
        if pull.state is PullRequestState.MERGED:
            raise PullRequestMerged(merged_message(repo, number))
        if pull.state is PullRequestState.OPEN:
            pull.comments.append(comment)
            pull.state = PullRequestState.CLOSED
        self._answer(failure, None)

    async def branch_protected(self, repo: str, branch: str) -> bool:
        failure = await self._call("branch_protected", repo, branch)
        return self._answer(failure, self._protects(repo, branch))

    async def delete_branch(self, repo: str, branch: str) -> BranchDeletion:
        failure = await self._call("delete_branch", repo, branch)
        if branch == self.default_branch:
            raise BranchRefused(f"{branch} is the default branch of {repo}", reason="default")
        if self._protects(repo, branch):
            raise BranchRefused(f"{branch} of {repo} is protected", reason="protected")
        gone = self.branches.get(repo, {}).pop(branch, None) is None
        return self._answer(
            failure, BranchDeletion.ALREADY_GONE if gone else BranchDeletion.DELETED
        )

    # -- driving it from a test --------------------------------------------------------

    def push(self, repo: str, branch: str, sha: str) -> None:
        """The branch now points at ``sha``; an open pull request from it follows."""
        self.branches.setdefault(repo, {})[branch] = sha
        pull = self._open_for(repo, branch)
        if pull is not None:
            pull.head_sha = sha

    def protect(self, repo: str, pattern: str) -> None:
        self.protected.setdefault(repo, []).append(pattern)

    def script_mergeability(self, repo: str, number: int, *answers: Mergeability) -> None:
        """Answer these in turn; the last one stays."""
        self.mergeabilities[(repo, number)] = list(answers)

    def script_merge(self, repo: str, number: int, *results: MergeResult) -> None:
        """The next merges answer these merge SHAs, or raise these errors."""
        self.merge_results[(repo, number)] = list(results)

    def fail_next(
        self,
        calls: int = 1,
        *,
        operation: str | None = None,
        status: int = 503,
        retry_after: float | None = None,
        lands: bool = False,
    ) -> None:
        """The next ``calls`` calls of ``operation`` (any when None) raise ForgeError."""
        failure = Failure(status, retry_after, operation=operation, lands=lands)
        self.failures.extend(failure for _ in range(calls))

    def hold(self, operation: str) -> Hold:
        """Hold every ``operation`` call until ``release`` is set."""
        return self.holds.setdefault(operation, Hold())

    def pull(self, repo: str, number: int) -> FakePull:
        return self._pull(repo, number)

    def merged_by_hand(self, repo: str, number: int) -> str:
        """A person merged it on the forge."""
        pull = self._pull(repo, number)
        pull.state, pull.merge_sha = PullRequestState.MERGED, _sha(f"hand:{repo}#{number}")
        return pull.merge_sha

    # -- inside ------------------------------------------------------------------------

    async def _call(self, operation: str, repo: str, detail: str) -> Failure | None:
        """Log the call, wait on a hold, and raise a failure that does not land."""
        split_repo(repo)
        self.calls.append(f"{operation} {repo} {detail}")
        hold = self.holds.get(operation)
        if hold is not None:
            hold.entered.set()
            await hold.release.wait()
        failure = self._failure_for(operation)
        if failure is not None and not failure.lands:
            raise _error(self.name, failure)
        return failure

    def _answer(self, failure: Failure | None, value: T) -> T:
        if failure is not None:  # it landed; the answer is lost
            raise _error(self.name, failure)
        return value

    def _failure_for(self, operation: str) -> Failure | None:
        for index, failure in enumerate(self.failures):
            if failure.operation in (None, operation):
                return self.failures.pop(index)
        if self.fail_always is not None and self.fail_always.operation in (None, operation):
            return self.fail_always
        return None

    def _pull(self, repo: str, number: int) -> FakePull:
        pull = self.pulls.get((repo, number))
        if pull is None:
            raise ForgeError(f"{self.name}: no pull request #{number} in {repo}", status=404)
        return pull

    def _open_for(self, repo: str, head: str) -> FakePull | None:
        return next(
            (
                p
                for p in self.pulls.values()
                if p.repo == repo and p.head == head and p.state is PullRequestState.OPEN
            ),
            None,
        )

    def _current(self, pull: FakePull) -> Mergeability:
        if pull.state is PullRequestState.MERGED:
            return Mergeability(MergeState.MERGEABLE, ALREADY_MERGED)
        if pull.state is PullRequestState.CLOSED:
            return Mergeability(MergeState.BLOCKED, "the pull request is closed")
        script = self.mergeabilities.get((pull.repo, pull.number))
        return script[0] if script else Mergeability(MergeState.MERGEABLE)

    def _refuse_merge(self, pull: FakePull, sha: str) -> None:
        if sha != pull.head_sha:
            raise MergeRefused(
                f"{self.name}: head of #{pull.number} is {pull.head_sha}, not {sha}",
                status=409,
                head_changed=True,
            )
        current = self._current(pull)
        if current.state is not MergeState.MERGEABLE:
            reason = current.reason or current.state.value
            raise MergeRefused(
                f"{self.name}: #{pull.number} is not mergeable: {reason}", status=405
            )

    def _merge_result(self, pull: FakePull) -> str:
        results = self.merge_results.get((pull.repo, pull.number))
        if results:
            result = results.pop(0)
            if isinstance(result, ForgeError):
                raise result
            return result
        return _sha(f"merge:{pull.repo}#{pull.number}:{pull.head_sha}")

    def _protects(self, repo: str, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, p) for p in self.protected.get(repo, []))


def _error(name: str, failure: Failure) -> ForgeError:
    return ForgeError(
        f"{name}: HTTP {failure.status} {failure.message}",
        status=failure.status,
        retry_after=failure.retry_after,
    )


def _sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()
