"""GitHub's REST API behind the forge port: pull requests, checks, protection, branches.

``Authorization: Bearer <token>`` against ``api_url`` (``https://api.github.com``, or a
GitHub Enterprise ``https://HOST/api/v3``). The token needs pull requests and contents
read/write, and metadata/checks/statuses read. Every path part that comes from outside
(owner, repository, branch, SHA) is one URL-encoded segment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from integrations.forges import checks
from integrations.forges.base import (
    BranchDeletion,
    BranchRefused,
    ForgeError,
    Mergeability,
    MergeMethod,
    MergeRefused,
    PullRequest,
    PullRequestMerged,
    PullRequestState,
    merged_message,
    split_repo,
)
from integrations.forges.client import ForgeApi, objects, rate_limited, repo_path
from integrations.trackers.http_api import Clock, JsonApi, Sleep, segment

log = logging.getLogger(__name__)

API_URL = "https://api.github.com"
_HINTS = {
    401: " (check the GitHub token)",
    403: " (check that the token may read and write this repository's pull requests)",
    404: " (check forge_repo and that the token can see the repository)",
}


class GitHubForge:
    """The forge port over GitHub's REST API (see the module docstring)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token: str,
        api_url: str = API_URL,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        max_attempts: int = 4,
    ) -> None:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "conveyor",
        }
        self._api = ForgeApi(
            JsonApi(
                http,
                "GitHub",
                api_url,
                headers,
                secrets=(token,),
                hints=_HINTS,
                sleep=sleep,
                clock=clock,
                max_attempts=max_attempts,
                rate_limited=rate_limited,
            )
        )

    def __repr__(self) -> str:
        return f"GitHubForge({self._api.api.base_url!r})"  # never the token

    @property
    def name(self) -> str:
        return "github"

    # -- pull requests -----------------------------------------------------------------

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        path = repo_path(repo)
        found = await self._open_for(repo, head)
        if found is None:
            wanted = {"title": title, "head": head, "base": base, "body": body}
            response = await self._api.request("POST", f"{path}/pulls", json=wanted, ok=(422,))
            if response.status_code != 422:
                return self._pull_of(response, "POST", f"{path}/pulls")
            message = self._api.message(response)
            if "already exists" not in message:
                raise ForgeError(
                    f"GitHub refused a pull request from {head} to {base} in {repo}: {message}",
                    status=422,
                )
            # Opened meanwhile (or by our own request's retry): update that one.
            found = await self._open_for(repo, head)
            if found is None:
                raise ForgeError(f"GitHub says a pull request for {head} exists but lists none")
        return await self._retitle(path, found, title, body)

    async def _open_for(self, repo: str, head: str) -> dict[str, Any] | None:
        owner, _ = split_repo(repo)
        params = {"head": f"{owner}:{head}", "state": "open", "per_page": "100"}
        listed = await self._api.get_json(f"{repo_path(repo)}/pulls", params)
        if not isinstance(listed, list):
            raise ForgeError(f"GitHub GET {repo_path(repo)}/pulls: answer is not a list")
        return next((pr for pr in listed if _head_ref(pr) == head), None)

    async def _retitle(self, path: str, pr: dict[str, Any], title: str, body: str) -> PullRequest:
        if pr.get("title") == title and (pr.get("body") or "") == body:
            return self._api.parsed(checks.github_pull_request, pr, f"{path}/pulls")
        where = f"{path}/pulls/{pr.get('number')}"
        response = await self._api.request("PATCH", where, json={"title": title, "body": body})
        return self._pull_of(response, "PATCH", where)

    async def pull_request(self, repo: str, number: int) -> PullRequest:
        where = f"{repo_path(repo)}/pulls/{number}"
        return self._api.parsed(
            checks.github_pull_request, await self._api.get_object(where), where
        )

    # -- mergeability ------------------------------------------------------------------

    async def mergeability(self, repo: str, number: int) -> Mergeability:
        path = repo_path(repo)
        where = f"{path}/pulls/{number}"
        pr = await self._api.get_object(where)
        verdict = checks.github_verdict(pr)
        if verdict is not None:
            return verdict
        # "blocked": only the base's required checks against the head's can say why.
        base = self._api.parsed(_base_ref, pr, where)
        head = self._api.parsed(checks.github_pull_request, pr, where)
        required = await self._required_checks(path, base)
        reported = await self._head_checks(path, head.head_sha)
        return checks.github_blocked_verdict(reported, required)

    async def _required_checks(self, path: str, base: str) -> frozenset[str]:
        branch = await self._api.get_object(f"{path}/branches/{segment(base)}")
        rules = await self._api.pages(f"{path}/rules/branches/{segment(base)}")
        return checks.github_required_checks(branch, objects(rules))

    async def _head_checks(self, path: str, sha: str) -> list[checks.Check]:
        commit = f"{path}/commits/{segment(sha)}"
        runs = await self._api.pages(f"{commit}/check-runs", key="check_runs")
        statuses = await self._api.pages(f"{commit}/status", key="statuses")
        found = self._api.parsed(checks.github_check_runs, objects(runs), f"{commit}/check-runs")
        return found + self._api.parsed(
            checks.commit_statuses, objects(statuses), f"{commit}/status"
        )

    # -- merge and close ---------------------------------------------------------------

    async def merge(self, repo: str, number: int, *, method: MergeMethod, sha: str) -> str:
        where = f"{repo_path(repo)}/pulls/{number}/merge"
        wanted = {"merge_method": MergeMethod(method).value, "sha": sha}
        response = await self._api.request("PUT", where, json=wanted, ok=(405, 409))
        if response.is_success:
            merged = self._api.json_of(response, "PUT", where)
            if isinstance(merged, dict) and isinstance(merged.get("sha"), str) and merged["sha"]:
                return str(merged["sha"])
            raise ForgeError(f"GitHub PUT {where}: answer has no merge commit sha")
        return await self._refused(repo, number, response)

    async def _refused(self, repo: str, number: int, response: httpx.Response) -> str:
        # A retried merge whose first attempt went through is refused as "not mergeable":
        # the pull request tells whether it is merged, and by which commit.
        pr = await self.pull_request(repo, number)
        if pr.state is PullRequestState.MERGED and pr.merge_sha:
            log.info("pull request already merged", extra={"repo": repo, "number": number})
            return pr.merge_sha
        status = response.status_code
        raise MergeRefused(
            f"GitHub refused to merge pull request #{number} of {repo}: "
            f"{self._api.message(response)}",
            status=status,
            head_changed=status == 409,
        )

    async def close(self, repo: str, number: int, *, comment: str) -> None:
        pr = await self.pull_request(repo, number)
        if pr.state is PullRequestState.MERGED:
            raise PullRequestMerged(merged_message(repo, number))
        if pr.state is PullRequestState.CLOSED:
            return
        path = repo_path(repo)
        await self._api.request("POST", f"{path}/issues/{number}/comments", json={"body": comment})
        await self._api.request("PATCH", f"{path}/pulls/{number}", json={"state": "closed"})

    # -- branches ----------------------------------------------------------------------

    async def branch_protected(self, repo: str, branch: str) -> bool:
        path = repo_path(repo)
        where = f"{path}/branches/{segment(branch)}"
        response = await self._api.request("GET", where, ok=(404,))
        if response.status_code == 404:
            # "Branch not found" is a name nobody protects classically; any other 404
            # (no such repository, no access) cannot say, so it is not an answer.
            if "Branch not found" not in self._api.message(response):
                raise ForgeError(f"GitHub GET {where}: {self._api.message(response)}", status=404)
        elif self._api.object_of(response, "GET", where).get("protected") is True:
            return True
        rules = await self._api.pages(f"{path}/rules/branches/{segment(branch)}")
        return checks.github_rules_protect(objects(rules))

    async def delete_branch(self, repo: str, branch: str) -> BranchDeletion:
        where = f"{repo_path(repo)}/git/refs/heads/{segment(branch)}"
        response = await self._api.request("DELETE", where, ok=(404, 422))
        if response.is_success:
            return BranchDeletion.DELETED
        message = self._api.message(response)
        if response.status_code == 404 or "does not exist" in message.lower():
            return BranchDeletion.ALREADY_GONE
        reason = "default" if "default" in message.lower() else "protected"
        raise BranchRefused(
            f"GitHub refused to delete branch {branch} of {repo}: {message}",
            reason=reason,
            status=response.status_code,
        )

    def _pull_of(self, response: httpx.Response, method: str, where: str) -> PullRequest:
        body = self._api.json_of(response, method, where)
        return self._api.parsed(checks.github_pull_request, body, where)


def _head_ref(pr: Any) -> str | None:
    head = pr.get("head") if isinstance(pr, dict) else None
    return head.get("ref") if isinstance(head, dict) else None


def _base_ref(pr: dict[str, Any]) -> str:
    base = pr.get("base")
    ref = base.get("ref") if isinstance(base, dict) else None
    if not isinstance(ref, str) or not ref:
        raise ValueError("field base.ref is missing")
    return ref
