"""The demo's pull-request account: each claim holds only when conveyor's record and
the world (the remote, the fake forge) agree."""

from __future__ import annotations

from typing import Any

from bot.cli.demo.account import World, reset_claims

MAIN, MERGE, HEAD = "a" * 40, "b" * 40, "c" * 40


def _detail(**task: Any) -> dict[str, Any]:
    kinds = ["started", "pull_request_opened", "merge_waiting", "merge_started", "merged"]
    kinds.append("merged_branch_deleted")
    return {
        "task": {
            "key": "DEMO-1",
            "stage": "done",
            "branch": "conveyor/DEMO-1",
            "pr_number": 1,
            "pr_url": "https://fake-forge.invalid/demo/app/pull/1",
            "merge_sha": MERGE,
            "merged_at": "2026-12-02T10:00:00+00:00",
            **task,
        },
        "jobs": [],
        "stops": [],
        "audit": [{"kind": kind, "detail": {}} for kind in kinds],
    }


def _world(**changes: Any) -> World:
    seen = {
        "number": 1,
        "head": "conveyor/DEMO-1",
        "base": "main",
        "title": "DEMO-1: Demo ticket",
        "state": "merged",
        "merge_sha": MERGE,
    }
    fields: dict[str, Any] = {
        "main_before": MAIN,
        "main_after": MERGE,
        "branch_on_remote": None,
        "worktree_exists": False,
        "docs": ["analysis.md"],
        "merges": [MERGE],
        "merge_parents": [MAIN, HEAD],
        "pull_request": seen,
        "mergeability_reads": 3,
        **changes,
    }
    return World(**fields)


def test_every_claim_holds_when_record_and_world_agree() -> None:
    claims = reset_claims(_detail(), _world(), "pull-request")
    assert [c.holds for c in claims] == [True] * 7, [c.text for c in claims if not c.holds]


def test_a_branch_still_on_the_remote_breaks_the_claim() -> None:
    claims = reset_claims(_detail(), _world(branch_on_remote=HEAD), "pull-request")
    broken = [c.text for c in claims if not c.holds]
    assert broken == ["merged branch conveyor/DEMO-1 deleted: still there"]


def test_a_pull_request_the_forge_has_open_is_not_merged() -> None:
    world = _world(pull_request={**_world().pull_request, "state": "open", "merge_sha": None})
    broken = [c.text for c in reset_claims(_detail(), world, "pull-request") if not c.holds]
    assert broken == [f"pull request open on the forge by {MERGE[:7]}, main's head"]


def test_merging_without_waiting_for_checks_is_not_claimed() -> None:
    broken = [
        c.text
        for c in reset_claims(_detail(), _world(mergeability_reads=1), "pull-request")
        if not c.holds
    ]
    assert broken == ["the forge was asked 1 times whether it merges; the merge began after"]
