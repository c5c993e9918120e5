"""Gitea's (and Forgejo's) REST API behind the forge port.

``Authorization: token <token>`` against ``base_url + /api/v1``. The token needs the
``repository`` scope with write access (pull requests, branches, comments); reading
``branch_protections`` needs a repository admin, and without one conveyor falls back to
the branch's own ``protected`` flag. Every path part from outside is one URL-encoded
segment. Gitea answers a merge with an empty 200, so the merge commit is read back from
the pull request.
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
)
from integrations.forges.client import ForgeApi, objects, rate_limited, repo_path
from integrations.forges.globs import gitea_rule_matches
from integrations.trackers.http_api import Clock, JsonApi, Sleep, segment

log = logging.getLogger(__name__)

# Gitea's default MAX_RESPONSE_ITEMS; a smaller server cap is followed by its headers.
PAGE_SIZE = 50
_HINTS = {
    401: " (check the Gitea token)",
    403: " (check that the token's user may write to this repository)",
    404: " (check forge_repo and that the token can see the repository)",
}


class GiteaForge:
    """The forge port over Gitea's REST API (see the module docstring)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token: str,
        base_url: str,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        max_attempts: int = 4,
    ) -> None:
        headers = {"Authorization": f"token {token}", "User-Agent": "conveyor"}
        self._api = ForgeApi(
            JsonApi(
                http,
                "Gitea",
                base_url.rstrip("/") + "/api/v1",
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
        return f"GiteaForge({self._api.api.base_url!r})"  # never the token

    @property
    def name(self) -> str:
        return "gitea"

    # -- pull requests -----------------------------------------------------------------

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        path = repo_path(repo)
        found = await self._open_for(repo, head)
        if found is None:
            wanted = {"head": head, "base": base, "title": title, "body": body}
            response = await self._api.request("POST", f"{path}/pulls", json=wanted, ok=(409,))
            if response.status_code != 409:
                return self._pull_of(response, "POST", f"{path}/pulls")
            # 409: "pull request already exists for these targets", opened meanwhile.
            found = await self._open_for(repo, head)
            if found is None:
                raise ForgeError(
                    f"Gitea says a pull request for {head} exists in {repo} but lists none open: "
                    f"{self._api.message(response)}",
                    status=409,
                )
        return await self._retitle(path, found, title, body)

    async def _open_for(self, repo: str, head: str) -> dict[str, Any] | None:
        listed = await self._api.pages(
            f"{repo_path(repo)}/pulls", {"state": "open"}, size=PAGE_SIZE, size_param="limit"
        )
        return next((pr for pr in listed if _opened_from(pr, repo, head)), None)

    async def _retitle(self, path: str, pr: dict[str, Any], title: str, body: str) -> PullRequest:
        where = f"{path}/pulls/{pr.get('number')}"
        if pr.get("title") == title and (pr.get("body") or "") == body:
            return self._api.parsed(checks.gitea_pull_request, pr, where)
        response = await self._api.request("PATCH", where, json={"title": title, "body": body})
        return self._pull_of(response, "PATCH", where)

    async def pull_request(self, repo: str, number: int) -> PullRequest:
        where = f"{repo_path(repo)}/pulls/{number}"
        return self._api.parsed(checks.gitea_pull_request, await self._api.get_object(where), where)

    # -- mergeability ------------------------------------------------------------------

    async def mergeability(self, repo: str, number: int) -> Mergeability:
        path = repo_path(repo)
        where = f"{path}/pulls/{number}"
        pr = await self._api.get_object(where)
        settled = checks.settled_verdict(pr)
        if settled is not None:
            return settled
        head_sha = self._api.parsed(checks.gitea_pull_request, pr, where).head_sha
        status = f"{path}/commits/{segment(head_sha)}/status"
        statuses = await self._api.pages(status, key="statuses", size=PAGE_SIZE, size_param="limit")
        found = self._api.parsed(checks.commit_statuses, objects(statuses), status)
        return checks.gitea_verdict(pr, found)

    # -- merge and close ---------------------------------------------------------------

    async def merge(self, repo: str, number: int, *, method: MergeMethod, sha: str) -> str:
        where = f"{repo_path(repo)}/pulls/{number}/merge"
        wanted = {
            "Do": MergeMethod(method).value,
            "head_commit_id": sha,
            "delete_branch_after_merge": False,  # conveyor deletes it, behind its guards
        }
        response = await self._api.request("POST", where, json=wanted, ok=(404, 405, 409))
        pr = await self.pull_request(repo, number)
        if pr.state is PullRequestState.MERGED and pr.merge_sha:
            if not response.is_success:
                log.info("pull request already merged", extra={"repo": repo, "number": number})
            return pr.merge_sha
        if response.is_success:
            raise ForgeError(f"Gitea merged pull request #{number} of {repo} but shows no merge")
        refusal = _refusal(self._api, response)
        raise MergeRefused(
            f"Gitea refused to merge pull request #{number} of {repo}: {refusal}",
            status=response.status_code,
            head_changed="head out of date" in self._api.message(response),
        )

    async def close(self, repo: str, number: int, *, comment: str) -> None:
        pr = await self.pull_request(repo, number)
        if pr.state is PullRequestState.MERGED:
            raise PullRequestMerged(merged_message(repo, number))
        if pr.state is PullRequestState.CLOSED:
            return
        path = repo_path(repo)
        await self._api.request("POST", f"{path}/issues/{number}/comments", json={"body": comment})
        where = f"{path}/pulls/{number}"
        response = await self._api.request("PATCH", where, json={"state": "closed"}, ok=(412,))
        if response.status_code == 412:  # merged between the read and the close
            raise PullRequestMerged(merged_message(repo, number), status=412)

    # -- branches ----------------------------------------------------------------------

    async def branch_protected(self, repo: str, branch: str) -> bool:
        path = repo_path(repo)
        response = await self._api.request("GET", f"{path}/branch_protections", ok=(403,))
        if response.status_code == 403:
            return await self._branch_flag(repo, branch)
        rules = self._api.json_of(response, "GET", f"{path}/branch_protections")
        if not isinstance(rules, list):
            raise ForgeError(f"Gitea GET {path}/branch_protections: answer is not a list")
        return any(gitea_rule_matches(name, branch) for name in _rule_names(rules))

    async def _branch_flag(self, repo: str, branch: str) -> bool:
        """The branch's own ``protected`` (readable without admin); absent → cannot say."""
        where = f"{repo_path(repo)}/branches/{segment(branch)}"
        response = await self._api.request("GET", where, ok=(404,))
        if response.status_code == 404:
            raise ForgeError(
                f"Gitea cannot say whether {branch} of {repo} is protected: the token may not "
                "read branch protections (a repository admin may) and the branch does not exist",
                status=403,
            )
        return self._api.object_of(response, "GET", where).get("protected") is True

    async def delete_branch(self, repo: str, branch: str) -> BranchDeletion:
        where = f"{repo_path(repo)}/branches/{segment(branch)}"
        response = await self._api.request("DELETE", where, ok=(403, 404))
        if response.is_success:
            return BranchDeletion.DELETED
        if response.status_code == 404:
            return BranchDeletion.ALREADY_GONE
        message = self._api.message(response)
        reason = _refusal_reason(message)
        if reason is None:  # a 403 for the token's rights is not the branch's protection
            raise ForgeError(
                f"Gitea answered DELETE {where} with HTTP 403: {message}{_HINTS[403]}", status=403
            )
        raise BranchRefused(
            f"Gitea refused to delete branch {branch} of {repo}: {message}",
            reason=reason,
            status=403,
        )

    def _pull_of(self, response: httpx.Response, method: str, where: str) -> PullRequest:
        body = self._api.json_of(response, method, where)
        return self._api.parsed(checks.gitea_pull_request, body, where)


def _opened_from(pr: Any, repo: str, head: str) -> bool:
    """An open pull request from ``head`` of this repository (not of a fork)."""
    head_info = pr.get("head") if isinstance(pr, dict) else None
    if not isinstance(head_info, dict) or head_info.get("ref") != head:
        return False
    source = head_info.get("repo")
    full_name = source.get("full_name") if isinstance(source, dict) else None
    return not isinstance(full_name, str) or full_name.casefold() == repo.casefold()


def _rule_names(rules: list[Any]) -> list[str]:
    # rule_name since Gitea 1.19 (a glob); branch_name before, and kept as its alias.
    names = []
    for rule in rules:
        if isinstance(rule, dict):
            name = rule.get("rule_name") or rule.get("branch_name")
            if isinstance(name, str) and name:
                names.append(name)
    return names


def _refusal_reason(message: str) -> str | None:
    lowered = message.casefold()
    if "default branch" in lowered:
        return "default"
    if "protected" in lowered:
        return "protected"
    return None


def _refusal(api: ForgeApi, response: httpx.Response) -> str:
    """Gitea's words; a 409 for conflicts carries git's output instead of a message."""
    message = api.message(response)
    if response.status_code == 404:
        return "the pull request is closed"
    if response.status_code == 409 and message.startswith("HTTP 409"):
        return "it conflicts with the base branch"
    if response.status_code == 405 and message.startswith("HTTP 405"):
        return "Gitea will not merge it now (not mergeable, or already merged)"
    return message
