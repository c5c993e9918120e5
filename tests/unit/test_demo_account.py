"""The demo's account: a claim holds only when the record and the world agree."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bot.cli.demo.account import RESET_STEPS, World, audit_lines, job_lines, offset, reset_claims

MAIN = "a" * 40


def detail(**task: Any) -> dict[str, Any]:
    steps = {name: {} for name in RESET_STEPS}
    steps.update(
        processes={"groups": 1, "processes": 1, "forced": False, "term_to_empty_seconds": 0.05},
        processes_signalled_at=1000.1,
        jobs={"cancelled": 1},
        worktree={"removed": True},
        remote_branch={"deleted": True},
        tombstone={"issue_id": "i-1#cancelled-3", "key": "DEMO-1#cancelled-3"},
        terminal={"effects_committed": False},
    )
    return {
        "task": {
            "id": 3,
            "key": "DEMO-1",
            "stage": "cancelled",
            "outcome": "cancelled_graceful",
            "tombstoned": True,
            "branch": "conveyor/DEMO-1",
            "worktree_path": "/tmp/w/DEMO-1",
            **task,
        },
        "jobs": [
            {"id": 1, "stage": "analysis", "status": "succeeded", "pgid": 10, "pid": 10},
            {"id": 2, "stage": "implementation", "status": "cancelled", "pgid": 11, "pid": 11},
        ],
        "stops": [
            {
                "id": "s1",
                "status": "done",
                "requested_by": "plane:demo",
                "requested_at": "1970-01-01T00:16:40Z",
                "closed_at": "1970-01-01T00:16:40.500000Z",
                "steps": steps,
            }
        ],
        "audit": [{"at": "1970-01-01T00:16:41Z", "kind": "cancelled", "actor": "x", "detail": {}}],
    }


WORLD = World(
    main_before=MAIN,
    main_after=MAIN,
    branch_on_remote=None,
    worktree_exists=False,
    docs=["started"],
)


def failing(d: dict[str, Any], world: World, scenario: str = "basic") -> list[str]:
    return [c.text for c in reset_claims(d, world, scenario) if not c.holds]


def test_every_claim_holds_when_record_and_world_agree() -> None:
    claims = reset_claims(detail(), WORLD, "basic")
    assert [c.mark for c in claims] == ["✔"] * len(claims)
    assert "reset began 0.10 s and ended 0.50 s after the request" in claims[0].text


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"worktree_exists": True}, "worktree removed"),
        ({"branch_on_remote": "b" * 40}, "remote branch"),
        ({"leftover_pids": [4242]}, "process group"),
        ({"groups_alive": [11]}, "process group"),
        ({"main_after": "c" * 40}, "default branch"),
        ({"docs": []}, "docs"),
    ],
)
def test_a_world_that_disagrees_fails_its_claim(change: dict[str, Any], words: str) -> None:
    failed = failing(detail(), dataclasses.replace(WORLD, **change))
    assert len(failed) == 1 and words in failed[0]


def test_a_record_that_disagrees_fails_its_claim() -> None:
    d = detail(outcome="cancelled_forced")
    assert [t for t in failing(d, WORLD) if t.startswith("task DEMO-1")]
    d = detail()
    del d["stops"][0]["steps"]["notify"]
    assert "steps missing: notify" in failing(d, WORLD)[0]


def test_deferred_wants_exactly_one_merge_onto_the_old_head() -> None:
    d = detail(merge_sha="m" * 40)
    d["stops"][0]["steps"]["processes"] = {"groups": 0}
    d["stops"][0]["steps"]["jobs"] = {"cancelled": 0}
    d["jobs"] = [{"id": 4, "stage": "merge", "status": "succeeded", "pgid": None, "pid": None}]
    merged = dataclasses.replace(
        WORLD, main_after="m" * 40, merges=["m" * 40], merge_parents=[MAIN, "f" * 40]
    )
    assert failing(d, merged, "deferred") == []
    twice = dataclasses.replace(merged, merges=["m" * 40, "n" * 40])
    assert "exactly 2 merge commit" in failing(d, twice, "deferred")[0]


def test_times_are_shown_since_the_demo_began() -> None:
    assert offset(1.5) == " +1.50 s"
    assert audit_lines(detail(), 1000.0)[0].startswith(" +1.00 s  cancelled by x")
    assert "run_id=None" in job_lines(detail(), 1000.0)[0]
