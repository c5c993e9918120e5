"""Every (stage, trigger) pair of the rulebook, the guards, and the terminal refusal."""

from __future__ import annotations

from dataclasses import replace

import pytest

from state.machine import Facts, Trigger, critical_window, decide, relaunch_allowed
from state.models import ALL_STAGES, Stage, Task

NOW = 1_000.0


def make_task(stage: Stage, **kw: object) -> Task:
    base = Task(
        id=1,
        tracker="plane",
        issue_id="i",
        key="P-1",
        project_id="p",
        repo="app",
        title="t",
        stage=stage,
        version=3,
        created_at=0.0,
        updated_at=0.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


IDLE = Facts(has_running_job=False, holds_lease=False)
S = Stage
# (stage, trigger) -> resulting stage, or the refusal reason.
EXPECTED: dict[tuple[Stage, Trigger], Stage | str] = {
    (S.ANALYSIS, Trigger.ADVANCE): S.IMPLEMENTATION,
    (S.IMPLEMENTATION, Trigger.ADVANCE): S.REVIEW,
    (S.REVIEW, Trigger.ADVANCE): S.MERGE,
    (S.MERGE, Trigger.ADVANCE): "not_merged",
    (S.DEPLOY, Trigger.ADVANCE): S.DONE,
    (S.BLOCKED, Trigger.ADVANCE): "not_allowed_in_blocked",
    (S.ANALYSIS, Trigger.RELAUNCH): S.ANALYSIS,
    (S.IMPLEMENTATION, Trigger.RELAUNCH): "not_allowed_in_implementation",
    (S.REVIEW, Trigger.RELAUNCH): "not_allowed_in_review",
    (S.MERGE, Trigger.RELAUNCH): "not_allowed_in_merge",
    (S.DEPLOY, Trigger.RELAUNCH): "not_allowed_in_deploy",
    (S.BLOCKED, Trigger.RELAUNCH): "not_allowed_in_blocked",
    **{(s, Trigger.STOP): S.CANCELLED for s in ALL_STAGES if s not in (S.DONE, S.CANCELLED)},
    **{
        (s, Trigger.DEFER_STOP): f"not_allowed_in_{s.value}"
        for s in (S.ANALYSIS, S.IMPLEMENTATION, S.REVIEW, S.BLOCKED)
    },
    (S.MERGE, Trigger.DEFER_STOP): "not_critical",
    (S.DEPLOY, Trigger.DEFER_STOP): "not_critical",
    **{
        (s, Trigger.FINALIZE_CANCEL): "no_stop_pending"
        for s in ALL_STAGES
        if s not in (S.DONE, S.CANCELLED)
    },
    **{
        (s, Trigger.BLOCK): S.BLOCKED
        for s in (S.ANALYSIS, S.IMPLEMENTATION, S.REVIEW, S.MERGE, S.DEPLOY)
    },
    (S.BLOCKED, Trigger.BLOCK): "not_allowed_in_blocked",
    **{
        (s, Trigger.CONFIRM_DEPLOY): f"not_allowed_in_{s.value}"
        for s in ALL_STAGES
        if s not in (S.DEPLOY, S.DONE, S.CANCELLED)
    },
    (S.DEPLOY, Trigger.CONFIRM_DEPLOY): "not_awaiting_confirm",
    **{
        (s, Trigger.RETRY): f"not_allowed_in_{s.value}"
        for s in ALL_STAGES
        if s not in (S.BLOCKED, S.DONE, S.CANCELLED)
    },
    (S.BLOCKED, Trigger.RETRY): "not_that_stage",  # no stage named: nothing to run again
    **{(s, t): "already_terminal" for s in (S.DONE, S.CANCELLED) for t in Trigger},
}


def test_table_covers_every_pair() -> None:
    assert set(EXPECTED) == {(s, t) for s in ALL_STAGES for t in Trigger}


@pytest.mark.parametrize(("stage", "trigger"), sorted(EXPECTED, key=str))
def test_every_stage_trigger_pair(stage: Stage, trigger: Trigger) -> None:
    decision = decide(make_task(stage), trigger, now=NOW, facts=IDLE)
    expected = EXPECTED[(stage, trigger)]
    if isinstance(expected, Stage):
        assert decision.allowed, decision.refusal
        assert decision.stage is expected
    else:
        assert not decision.allowed
        assert decision.refusal == expected
        assert decision.stage is stage and decision.changes == {}


def test_stop_records_cancelled_at_and_outcome() -> None:
    d = decide(make_task(S.REVIEW), Trigger.STOP, now=NOW, facts=IDLE, outcome="cancelled_forced")
    assert d.changes == {"stage": S.CANCELLED, "cancelled_at": NOW, "outcome": "cancelled_forced"}


@pytest.mark.parametrize("stage", ["analysis", "implementation", "review", "merge", "deploy"])
def test_retry_returns_a_blocked_task_to_the_stage_named(stage: str) -> None:
    task = make_task(S.BLOCKED, blocked_reason="exit status 3")
    decision = decide(task, Trigger.RETRY, now=NOW, facts=IDLE, stage=stage)
    assert decision.allowed and decision.stage is Stage(stage)
    assert decision.changes == {"stage": Stage(stage), "blocked_reason": None}


def test_retry_refused_while_a_stop_is_pending() -> None:
    task = make_task(S.BLOCKED, cancel_requested_at=1.0)
    decision = decide(task, Trigger.RETRY, now=NOW, facts=IDLE, stage="review")
    assert decision.refusal == "stop_pending"


def test_merge_advances_once_merged() -> None:
    task = make_task(S.MERGE, merge_initiated_at=1.0, merged_at=2.0)
    assert decide(task, Trigger.ADVANCE, now=NOW, facts=IDLE).stage is S.DEPLOY


def test_pending_stop_blocks_any_later_stage() -> None:
    task = make_task(S.MERGE, merge_initiated_at=1.0, merged_at=2.0, cancel_requested_at=1.5)
    assert decide(task, Trigger.ADVANCE, now=NOW, facts=IDLE).refusal == "stop_pending"


def test_relaunch_refused_while_a_job_runs() -> None:
    busy = Facts(has_running_job=True)
    assert (
        decide(make_task(S.ANALYSIS), Trigger.RELAUNCH, now=NOW, facts=busy).refusal
        == "job_running"
    )


def test_stop_inside_merge_window_is_deferred_not_applied() -> None:
    task = make_task(S.MERGE, merge_initiated_at=1.0)
    assert decide(task, Trigger.STOP, now=NOW, facts=IDLE).refusal == "critical_window"
    deferred = decide(task, Trigger.DEFER_STOP, now=NOW, facts=IDLE)
    assert deferred.allowed and deferred.stage is S.MERGE
    assert deferred.changes == {"cancel_requested_at": NOW}


def test_finalizer_applies_once_window_closed() -> None:
    task = make_task(S.MERGE, merge_initiated_at=1.0, merged_at=5.0, cancel_requested_at=2.0)
    d = decide(task, Trigger.FINALIZE_CANCEL, now=NOW, facts=IDLE, outcome="cancelled_graceful")
    assert d.allowed and d.stage is S.CANCELLED


def test_unknown_facts_fail_closed_on_merge_and_deploy() -> None:
    task = make_task(S.DEPLOY)
    assert decide(task, Trigger.STOP, now=NOW, facts=None).refusal == "critical_window"
    assert decide(task, Trigger.DEFER_STOP, now=NOW, facts=None).allowed


def test_confirm_deploy_clears_the_wait() -> None:
    task = make_task(S.DEPLOY, awaiting_confirm=True)
    d = decide(task, Trigger.CONFIRM_DEPLOY, now=NOW, facts=IDLE)
    assert d.allowed and d.changes == {"awaiting_confirm": False}


@pytest.mark.parametrize(
    ("task_kw", "facts", "window"),
    [
        ({"stage": S.MERGE, "merge_initiated_at": 1.0}, IDLE, "merge"),
        ({"stage": S.MERGE, "merge_initiated_at": 1.0, "merged_at": 2.0}, IDLE, None),
        (
            {"stage": S.DEPLOY},
            Facts(has_running_job=True, running_job_stage="deploy", holds_lease=True),
            "deploy",
        ),
        ({"stage": S.DEPLOY, "awaiting_confirm": True}, Facts(holds_lease=True), None),
        (
            {"stage": S.DEPLOY},
            Facts(has_running_job=True, running_job_stage="deploy", holds_lease=False),
            None,
        ),
        ({"stage": S.MERGE}, None, "unknown"),
        ({"stage": S.REVIEW}, None, None),
    ],
)
def test_critical_window(
    task_kw: dict[str, object], facts: Facts | None, window: str | None
) -> None:
    stage = task_kw.pop("stage")
    assert critical_window(make_task(stage, **task_kw), facts) == window  # type: ignore[arg-type]


def test_relaunch_guard_is_pure() -> None:
    assert relaunch_allowed(make_task(S.ANALYSIS), IDLE)
    assert not relaunch_allowed(make_task(S.REVIEW), IDLE)
