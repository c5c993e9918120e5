"""Is this pull request mergeable? Pure decisions over the forges' JSON, no I/O.

GitHub answers in two steps: the pull request's ``mergeable`` / ``mergeable_state``
decide most cases alone; only ``blocked`` needs the required checks (branch protection
and rulesets of the base) compared with the head's check runs and commit statuses.
Gitea has ``mergeable`` (false while it checks for conflicts, too) and the head's
combined commit status. Protocol facts: TRACKERS.md and the forges' API documentation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from integrations.forges.base import Mergeability, MergeState, PullRequest, PullRequestState

ALREADY_MERGED = "already merged"
_GITHUB_MERGEABLE = {
    "clean": "",
    "unstable": "mergeable; checks that are not required are failing",
    "has_hooks": "mergeable; the repository runs pre-receive hooks",
}
_GITHUB_BLOCKED = {
    "dirty": "it conflicts with the base branch: resolve the conflicts on the task branch",
    "behind": "the base branch requires the head to be up to date: update the task branch",
    "draft": "it is a draft pull request: mark it ready for review",
}
_GITHUB_REVIEW_WAIT = (
    "GitHub reports it blocked with every required check passed: "
    "a required review or another branch rule is not satisfied yet"
)
_GITEA_NOT_MERGEABLE = (
    "Gitea reports it not mergeable: it conflicts with the base branch, "
    "or Gitea is still checking for conflicts"
)
# Gitea's default [repository.pull-request] WORK_IN_PROGRESS_PREFIXES.
_GITEA_WIP_PREFIXES = ("WIP:", "[WIP]")
_PASSED_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
_STATUS_OUTCOMES = {"success": "passed", "warning": "passed", "skipped": "passed"}
_FAILED_STATES = frozenset({"failure", "error"})


class Outcome(IntEnum):
    """A check's outcome; the larger wins when a name reports twice."""

    PASSED = 0
    PENDING = 1
    FAILED = 2


@dataclass(frozen=True)
class Check:
    """One check run or commit status, by the name branch protection requires it by."""

    name: str
    outcome: Outcome


# -- pull requests ---------------------------------------------------------------------


def github_pull_request(pr: Mapping[str, Any]) -> PullRequest:
    """A GitHub ``pulls`` object (a single read or a list item) as a PullRequest."""
    merged = bool(pr.get("merged") or pr.get("merged_at"))
    return PullRequest(
        number=_number(pr),
        url=_text(pr, "html_url"),
        head_sha=_text(_object(pr, "head"), "sha"),
        state=_state(pr, merged),
        # Before the merge, GitHub's merge_commit_sha is its test merge: never report it.
        merge_sha=_optional_text(pr, "merge_commit_sha") if merged else None,
    )


def gitea_pull_request(pr: Mapping[str, Any]) -> PullRequest:
    """A Gitea ``pulls`` object as a PullRequest."""
    merged = bool(pr.get("merged"))
    return PullRequest(
        number=_number(pr),
        url=_text(pr, "html_url"),
        head_sha=_text(_object(pr, "head"), "sha"),
        state=_state(pr, merged),
        merge_sha=_optional_text(pr, "merge_commit_sha") if merged else None,
    )


def _state(pr: Mapping[str, Any], merged: bool) -> PullRequestState:
    if merged:
        return PullRequestState.MERGED
    return PullRequestState.OPEN if pr.get("state") == "open" else PullRequestState.CLOSED


# -- GitHub ----------------------------------------------------------------------------


def github_verdict(pr: Mapping[str, Any]) -> Mergeability | None:
    """What the pull request's own fields say; None when only the checks can tell."""
    settled = settled_verdict(pr)
    if settled is not None:
        return settled
    if pr.get("mergeable") is None:
        return Mergeability(MergeState.UNKNOWN, "GitHub is still computing whether it merges")
    state = str(pr.get("mergeable_state") or "unknown")
    if state in _GITHUB_MERGEABLE and pr.get("mergeable") is True:
        return Mergeability(MergeState.MERGEABLE, _GITHUB_MERGEABLE[state])
    if state in _GITHUB_BLOCKED:
        return Mergeability(MergeState.BLOCKED, _GITHUB_BLOCKED[state])
    if pr.get("mergeable") is False:
        return Mergeability(MergeState.BLOCKED, _GITHUB_BLOCKED["dirty"])
    if state == "blocked":
        return None
    return Mergeability(MergeState.UNKNOWN, f"GitHub reports mergeable_state {state!r}")


def github_blocked_verdict(checks: Iterable[Check], required: Collection[str]) -> Mergeability:
    """A ``blocked`` pull request: which required checks fail or are outstanding."""
    return judge_checks(checks, required) or Mergeability(MergeState.PENDING, _GITHUB_REVIEW_WAIT)


def github_required_checks(
    branch: Mapping[str, Any], rules: Iterable[Mapping[str, Any]]
) -> frozenset[str]:
    """Check names the base requires: classic protection's and every ruleset's."""
    protection = branch.get("protection")
    classic = protection.get("required_status_checks") if isinstance(protection, dict) else None
    classic = classic if isinstance(classic, dict) else {}
    names = {name for name in classic.get("contexts") or [] if isinstance(name, str)}
    names |= _contexts(classic.get("checks"))
    for rule in rules:
        if rule.get("type") == "required_status_checks":
            parameters = rule.get("parameters") or {}
            names |= _contexts(parameters.get("required_status_checks"))
    return frozenset(names)


def github_check_runs(runs: Iterable[Mapping[str, Any]]) -> list[Check]:
    return [Check(_text(run, "name"), _run_outcome(run)) for run in runs]


def _run_outcome(run: Mapping[str, Any]) -> Outcome:
    if run.get("status") != "completed":
        return Outcome.PENDING
    return Outcome.PASSED if run.get("conclusion") in _PASSED_CONCLUSIONS else Outcome.FAILED


def commit_statuses(statuses: Iterable[Mapping[str, Any]]) -> list[Check]:
    """GitHub's ``state`` or Gitea's ``status`` of each commit status, by ``context``."""
    return [Check(_text(status, "context"), _status_outcome(status)) for status in statuses]


def _status_outcome(status: Mapping[str, Any]) -> Outcome:
    state = status.get("state", status.get("status"))
    if state in _STATUS_OUTCOMES:
        return Outcome.PASSED
    # An unknown state never passes: conveyor does not merge on a word it cannot read.
    return Outcome.FAILED if state in _FAILED_STATES else Outcome.PENDING


def github_rules_protect(rules: Iterable[Mapping[str, Any]]) -> bool:
    """True when a ruleset forbids deleting, force-pushing or pushing to the branch."""
    return any(rule.get("type") in ("deletion", "non_fast_forward", "update") for rule in rules)


# -- Gitea -----------------------------------------------------------------------------


def gitea_verdict(pr: Mapping[str, Any], checks: Iterable[Check]) -> Mergeability:
    """Gitea: its ``mergeable`` and every commit status of the head."""
    settled = settled_verdict(pr)
    if settled is not None:
        return settled
    if pr.get("draft") or str(pr.get("title", "")).upper().startswith(_GITEA_WIP_PREFIXES):
        return Mergeability(MergeState.BLOCKED, "its title marks it work in progress")
    judged = judge_checks(checks, None)
    if judged is not None:
        return judged
    if pr.get("mergeable") is not True:
        return Mergeability(MergeState.UNKNOWN, _GITEA_NOT_MERGEABLE)
    return Mergeability(MergeState.MERGEABLE)


# -- both --------------------------------------------------------------------------------


def judge_checks(checks: Iterable[Check], required: Collection[str] | None) -> Mergeability | None:
    """Failing required checks block, outstanding ones wait; None when all passed.

    ``required`` None means every check reported counts (Gitea's commit status).
    """
    outcomes: dict[str, Outcome] = {}
    for check in checks:
        outcomes[check.name] = max(outcomes.get(check.name, Outcome.PASSED), check.outcome)
    names = sorted(outcomes) if required is None else sorted(required)
    failing = tuple(name for name in names if outcomes.get(name) is Outcome.FAILED)
    if failing:
        return Mergeability(MergeState.BLOCKED, f"failing check: {', '.join(failing)}", failing)
    waiting = [_waiting(name, outcomes.get(name)) for name in names]
    waiting = [text for text in waiting if text]
    if waiting:
        return Mergeability(MergeState.PENDING, f"waiting for checks: {', '.join(waiting)}")
    return None


def _waiting(name: str, outcome: Outcome | None) -> str:
    if outcome is None:
        return f"{name} (not reported yet)"
    return name if outcome is Outcome.PENDING else ""


def settled_verdict(pr: Mapping[str, Any]) -> Mergeability | None:
    """Merged or closed: the answer needs no checks."""
    # A merged pull request is "mergeable": merge() answers its merge commit, so a task
    # whose pull request a person merged by hand finishes instead of being blocked.
    if pr.get("merged") or pr.get("merged_at"):
        return Mergeability(MergeState.MERGEABLE, ALREADY_MERGED)
    if pr.get("state") != "open":
        return Mergeability(MergeState.BLOCKED, "the pull request is closed")
    return None


def _contexts(entries: Any) -> set[str]:
    if not isinstance(entries, list):
        return set()
    found = (entry.get("context") for entry in entries if isinstance(entry, dict))
    return {name for name in found if isinstance(name, str) and name}


def _object(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"field {name} is not an object")
    return value


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {name} is missing or not text")
    return value


def _optional_text(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value else None


def _number(doc: Mapping[str, Any]) -> int:
    value = doc.get("number")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("field number is missing or not a positive integer")
    return value
