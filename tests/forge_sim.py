"""GitHub's and Gitea's pull-request APIs in respx, over a real bare remote.

Answers are the recorded samples of `tests/samples/forges` with this run's numbers,
branches and SHAs filled in: a pull request's head is the branch's real head in the bare
remote, and merging one merges it there for real (a merge commit on main, as the forge
would make), so a test checks the world, not the simulator. Checks, protection,
failures and a held merge call are set by the test.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import respx

from tests.gitrepo import configure, git

SAMPLES = Path(__file__).parent / "samples" / "forges"
GITHUB_API = "https://api.github.sim"
GITHUB_WEB = "https://github.sim"
GITEA_URL = "https://gitea.sim"
FORGE_REPO = "acme/app"


def sample(forge: str, name: str) -> Any:
    return json.loads((SAMPLES / forge / f"{name}.json").read_text())


@dataclass
class Pull:
    number: int
    head: str
    base: str
    title: str
    body: str
    state: str = "open"
    merged: bool = False
    merge_sha: str | None = None
    reads: int = 0  # GitHub computes mergeability on the first read


@dataclass
class ForgeSim:
    """The state both forges share; subclasses answer in their own shapes."""

    bare: Path
    repo: str = FORGE_REPO
    pulls: dict[int, Pull] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)  # POST /pulls bodies
    merges: list[dict[str, Any]] = field(default_factory=list)  # merge request bodies
    comments: list[tuple[int, str]] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # name → pending|success|failure
    protected: list[str] = field(default_factory=list)  # fnmatch patterns the forge protects
    down: bool = False  # every call answers 502
    merge_hold: asyncio.Event | None = None  # the merge call waits for it
    merge_entered: asyncio.Event = field(default_factory=asyncio.Event)
    lose_merge_answers: int = 0  # merge answers lost (502) after the forge merged
    refuse_merges: int = 0  # merge calls refused with 405 ("try again"), merging nothing
    read_hold: asyncio.Event | None = None  # reads of one pull request wait for it
    break_merges: int = 0  # merge calls that fail (502) without merging, after the hold
    calls: list[str] = field(default_factory=list)
    auth: set[str] = field(default_factory=set)  # Authorization headers seen
    next_number: int = 42

    def install(self, router: respx.MockRouter, base: str) -> None:
        router.route(url__startswith=base).mock(side_effect=self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.raw_path.decode().split("?")[0])
        self.calls.append(f"{request.method} {path}")
        self.auth.add(request.headers.get("Authorization", ""))
        if self.down:
            return httpx.Response(502, json={"message": "Server Error"})
        return await self.answer(request, path)

    async def answer(self, request: httpx.Request, path: str) -> httpx.Response:
        raise NotImplementedError

    # -- the world ---------------------------------------------------------------------

    def head_sha(self, branch: str) -> str:
        out = git(self.bare, "for-each-ref", "--format=%(objectname)", f"refs/heads/{branch}")
        return out or "0" * 40

    def open_pull(self, head: str, base: str, title: str, body: str) -> Pull:
        pull = Pull(self.next_number, head, base, title, body)
        self.pulls[pull.number] = pull
        self.next_number += 1
        return pull

    def open_for(self, head: str) -> Pull | None:
        return next((p for p in self.pulls.values() if p.head == head and p.state == "open"), None)

    def is_protected(self, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, p) for p in self.protected)

    def checks_verdict(self) -> str:
        """failure, pending or success over every configured check."""
        states = set(self.checks.values())
        return "failure" if "failure" in states else "pending" if "pending" in states else "success"

    async def merge_for_real(self, pull: Pull, method: str) -> str:
        """Merge the branch into base in the bare remote, as the forge would."""
        self.merge_entered.set()
        if self.merge_hold is not None:
            await self.merge_hold.wait()
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch) / "w"
            git(Path(scratch), "clone", "-q", str(self.bare), str(work))
            configure(work)
            git(work, "checkout", "-q", pull.base)
            if method == "squash":
                git(work, "merge", "-q", "--squash", f"origin/{pull.head}")
                git(work, "commit", "-q", "-m", f"{pull.title} (#{pull.number})")
            else:
                message = (
                    f"Merge pull request #{pull.number} from {self.repo.split('/')[0]}/{pull.head}"
                )
                git(work, "merge", "-q", "--no-ff", f"origin/{pull.head}", "-m", message)
            git(work, "push", "-q", "origin", pull.base)
            sha = git(work, "rev-parse", "HEAD")
        pull.state, pull.merged, pull.merge_sha = "closed", True, sha
        return sha


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def _body(request: httpx.Request) -> dict[str, Any]:
    loaded = json.loads(request.content or b"{}")
    return loaded if isinstance(loaded, dict) else {}


@dataclass
class GitHubSim(ForgeSim):
    """GitHub's REST API (2022-11-28) for one repository."""

    required: tuple[str, ...] = ("ci/build",)  # the base's classic protection

    async def answer(self, request: httpx.Request, path: str) -> httpx.Response:
        prefix = f"/repos/{self.repo}"
        if not path.startswith(prefix):
            return _json(404, sample("github", "not_found"))
        rest, method = path[len(prefix) :], request.method
        if rest == "/pulls" and method == "GET":
            head = request.url.params.get("head", "").partition(":")[2]
            pull = self.open_for(head)
            return _json(200, [self.pull_doc(pull, listed=True)] if pull else [])
        if rest == "/pulls" and method == "POST":
            return self._create(_body(request))
        if m := re.fullmatch(r"/pulls/(\d+)", rest):
            if self.read_hold is not None and method == "GET":
                await self.read_hold.wait()
            return self._pull(int(m[1]), method, _body(request))
        if m := re.fullmatch(r"/pulls/(\d+)/merge", rest):
            return await self._merge(int(m[1]), _body(request))
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            self.comments.append((int(m[1]), str(_body(request).get("body"))))
            return _json(201, sample("github", "issue_comment_created"))
        if m := re.fullmatch(r"/branches/(.+)", rest):
            return self._branch(m[1])
        if m := re.fullmatch(r"/rules/branches/(.+)", rest):
            # A ruleset applies to a name pattern, whether the branch exists yet or not.
            protects = self.is_protected(m[1])
            return _json(200, sample("github", "rules_release_update") if protects else [])
        if m := re.fullmatch(r"/commits/([0-9a-f]+)/check-runs", rest):
            return _json(200, self._check_runs(m[1]))
        if m := re.fullmatch(r"/commits/([0-9a-f]+)/status", rest):
            doc = sample("github", "status_none")
            doc["sha"] = m[1]
            return _json(200, doc)
        return _json(404, sample("github", "not_found"))

    def pull_doc(self, pull: Pull, *, listed: bool = False) -> dict[str, Any]:
        doc = copy.deepcopy(sample("github", "pull_created"))
        sha = self.head_sha(pull.head)
        doc.update(
            number=pull.number,
            title=pull.title,
            body=pull.body,
            state=pull.state,
            html_url=f"{GITHUB_WEB}/{self.repo}/pull/{pull.number}",
            url=f"{GITHUB_API}/repos/{self.repo}/pulls/{pull.number}",
            merged=pull.merged,
            merged_at="2026-12-02T10:00:00Z" if pull.merged else None,
            merge_commit_sha=pull.merge_sha or "e5bd3914e2e596debea16f433f57875b5b90bcd6",
        )
        doc["head"].update(ref=pull.head, sha=sha, label=f"acme:{pull.head}")
        doc["base"].update(ref=pull.base, label=f"acme:{pull.base}")
        if listed:  # list items carry no mergeability
            for name in ("mergeable", "mergeable_state", "merged", "rebaseable"):
                doc.pop(name, None)
        else:
            doc.update(self._mergeability(pull))
        return doc

    def _mergeability(self, pull: Pull) -> dict[str, Any]:
        pull.reads += 1
        if pull.merged:
            return {"mergeable": None, "mergeable_state": "unknown"}
        if pull.reads == 1:  # GitHub computes it in the background after a change
            return {"mergeable": None, "mergeable_state": "unknown"}
        verdict = self.checks_verdict()
        return {
            "mergeable": True,
            "mergeable_state": "clean" if verdict == "success" else "blocked",
        }

    def _create(self, wanted: dict[str, Any]) -> httpx.Response:
        self.created.append(wanted)
        if self.open_for(str(wanted.get("head"))) is not None:
            return _json(422, sample("github", "pull_exists_422"))
        pull = self.open_pull(
            str(wanted["head"]), str(wanted["base"]), str(wanted["title"]), str(wanted["body"])
        )
        return _json(201, self.pull_doc(pull))

    def _pull(self, number: int, method: str, wanted: dict[str, Any]) -> httpx.Response:
        pull = self.pulls.get(number)
        if pull is None:
            return _json(404, sample("github", "not_found"))
        if method == "PATCH":
            pull.title = str(wanted.get("title", pull.title))
            pull.body = str(wanted.get("body", pull.body))
            if wanted.get("state") == "closed" and not pull.merged:
                pull.state = "closed"
        return _json(200, self.pull_doc(pull))

    async def _merge(self, number: int, wanted: dict[str, Any]) -> httpx.Response:
        self.merges.append(wanted)
        pull = self.pulls.get(number)
        if self.break_merges and pull is not None:
            self.merge_entered.set()
            if self.merge_hold is not None:
                await self.merge_hold.wait()
            self.break_merges -= 1
            return _json(502, {"message": "Server Error"})  # nothing merged
        if self.lose_merge_answers and pull is not None:
            self.lose_merge_answers -= 1
            if not pull.merged:
                await self.merge_for_real(pull, str(wanted.get("merge_method", "merge")))
            return _json(502, {"message": "Server Error"})  # merged, but the answer is lost
        if pull is None or pull.state != "open":
            return _json(405, sample("github", "merge_405"))
        if self.refuse_merges:
            self.refuse_merges -= 1
            return _json(
                405, {"message": "Base branch was modified. Review and try the merge again."}
            )
        if wanted.get("sha") != self.head_sha(pull.head):
            return _json(409, sample("github", "merge_409"))
        if self.checks_verdict() != "success":
            return _json(405, sample("github", "merge_405"))
        sha = await self.merge_for_real(pull, str(wanted.get("merge_method", "merge")))
        doc = sample("github", "merge_200")
        doc["sha"] = sha
        return _json(200, doc)

    def _branch(self, name: str) -> httpx.Response:
        sha = self.head_sha(name)
        if sha == "0" * 40 and name != "main":
            return _json(404, sample("github", "branch_not_found"))
        doc = copy.deepcopy(sample("github", "branch_main_protected"))
        doc["name"], doc["commit"]["sha"] = name, sha
        protected = name == "main" or self.is_protected(name)
        doc["protected"] = protected
        contexts = list(self.required) if name == "main" else []
        doc["protection"] = {
            "enabled": protected,
            "required_status_checks": {
                "enforcement_level": "non_admins" if protected else "off",
                "contexts": contexts,
                "checks": [{"context": c, "app_id": 15368} for c in contexts],
            },
        }
        return _json(200, doc)

    def _check_runs(self, sha: str) -> dict[str, Any]:
        template = sample("github", "check_runs_success")["check_runs"][0]
        runs = []
        for index, (name, state) in enumerate(sorted(self.checks.items())):
            run = copy.deepcopy(template)
            run.update(id=21470000100 + index, name=name, head_sha=sha)
            if state == "pending":
                run.update(status="in_progress", conclusion=None, completed_at=None)
            else:
                run.update(status="completed", conclusion=state)
            runs.append(run)
        return {"total_count": len(runs), "check_runs": runs}


@dataclass
class GiteaSim(ForgeSim):
    """Gitea's (and Forgejo's) API v1 for one repository."""

    next_number: int = 7

    async def answer(self, request: httpx.Request, path: str) -> httpx.Response:
        prefix = f"/api/v1/repos/{self.repo}"
        if not path.startswith(prefix):
            return _json(404, sample("gitea", "not_found"))
        rest, method = path[len(prefix) :], request.method
        if rest == "/pulls" and method == "GET":
            open_ = [self.pull_doc(p) for p in self.pulls.values() if p.state == "open"]
            return _json(200, open_)
        if rest == "/pulls" and method == "POST":
            wanted = _body(request)
            self.created.append(wanted)
            if self.open_for(str(wanted.get("head"))) is not None:
                return _json(409, sample("gitea", "pull_exists_409"))
            pull = self.open_pull(
                str(wanted["head"]), str(wanted["base"]), str(wanted["title"]), str(wanted["body"])
            )
            return _json(201, self.pull_doc(pull))
        if m := re.fullmatch(r"/pulls/(\d+)", rest):
            return self._pull(int(m[1]), method, _body(request))
        if m := re.fullmatch(r"/pulls/(\d+)/merge", rest):
            return await self._merge(int(m[1]), _body(request))
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            self.comments.append((int(m[1]), str(_body(request).get("body"))))
            return _json(201, sample("gitea", "issue_comment_created"))
        if rest == "/branch_protections":
            rules = copy.deepcopy(sample("gitea", "branch_protections"))[:1]  # main
            for pattern in self.protected:
                rule = copy.deepcopy(rules[0])
                rule.update(rule_name=pattern, branch_name="")
                rules.append(rule)
            return _json(200, rules)
        if m := re.fullmatch(r"/commits/([0-9a-f]+)/status", rest):
            return _json(200, self._status(m[1]))
        return _json(404, sample("gitea", "not_found"))

    def pull_doc(self, pull: Pull) -> dict[str, Any]:
        doc = copy.deepcopy(sample("gitea", "pull_created"))
        pull.reads += 1
        doc.update(
            number=pull.number,
            title=pull.title,
            body=pull.body,
            state=pull.state,
            html_url=f"{GITEA_URL}/{self.repo}/pulls/{pull.number}",
            merged=pull.merged,
            merge_commit_sha=pull.merge_sha,
            # Gitea answers false while it checks for conflicts (the first read here).
            mergeable=pull.reads > 1 and not pull.merged,
        )
        doc["head"].update(ref=pull.head, sha=self.head_sha(pull.head), label=pull.head)
        doc["base"].update(ref=pull.base, label=pull.base)
        return doc

    def _pull(self, number: int, method: str, wanted: dict[str, Any]) -> httpx.Response:
        pull = self.pulls.get(number)
        if pull is None:
            return _json(404, sample("gitea", "not_found"))
        if method == "PATCH":
            if pull.merged and wanted.get("state") == "closed":
                return _json(412, sample("gitea", "edit_412_merged"))
            pull.title = str(wanted.get("title", pull.title))
            pull.body = str(wanted.get("body", pull.body))
            if wanted.get("state") == "closed":
                pull.state = "closed"
        return _json(200, self.pull_doc(pull))

    async def _merge(self, number: int, wanted: dict[str, Any]) -> httpx.Response:
        self.merges.append(wanted)
        pull = self.pulls.get(number)
        if pull is None or pull.state != "open":
            return _json(405, sample("gitea", "merge_405_not_ready"))
        if wanted.get("head_commit_id") != self.head_sha(pull.head):
            return _json(409, sample("gitea", "merge_409_head"))
        if self.checks_verdict() != "success":
            return _json(405, sample("gitea", "merge_405_not_ready"))
        await self.merge_for_real(pull, str(wanted.get("Do", "merge")))
        return httpx.Response(200)  # Gitea answers a merge with an empty 200

    def _status(self, sha: str) -> dict[str, Any]:
        doc = copy.deepcopy(sample("gitea", "status_pending"))
        template = doc["statuses"][0]
        statuses = []
        for index, (name, state) in enumerate(sorted(self.checks.items())):
            entry = copy.deepcopy(template)
            entry.update(id=400 + index, context=name, status=state)
            statuses.append(entry)
        doc.update(
            sha=sha, total_count=len(statuses), statuses=statuses, state=self.checks_verdict()
        )
        return doc
