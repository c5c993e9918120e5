"""How a reset records its steps (bot/stopplane/reset.py), with the services made by hand
(tests/integration/conftest.py's `svc`) on both databases: every step is recorded, in
order and with its own time, though an outside step's record goes into the next store
transaction; the decision's untouched hint is only a hint; the pull-request step is a
store step only while there is no pull request."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bot.services import Services
from bot.stopplane import reset
from bot.stopplane.intent import decide_stop
from state import stops
from state.models import RESET_STEP_ORDER, Stage, StopStatus, Task
from state.store import get_task, update_task
from tests.integration.stopplane import clock, make_task, run_job, stop


async def steps_of(svc: Services, stop_id: str) -> dict[str, Any]:
    rec = await svc.store.run_read(stops.get_stop, stop_id)
    assert rec is not None and rec.status is StopStatus.DONE, rec
    return stops.stop_steps(rec)


async def with_changes(svc: Services, task: Task, **changes: Any) -> Task:
    current = await svc.store.run_read(get_task, task.id)
    assert current is not None
    return await svc.store.run(update_task, current, clock(svc).now(), **changes)  # type: ignore[no-any-return]


async def test_every_step_is_recorded_in_order_each_with_its_time(svc: Services) -> None:
    task = await make_task(svc, Stage.IMPLEMENTATION)
    await run_job(svc, task, "implementation")  # claimed, no process yet
    # A branch that never reached the remote: the remote step runs and finds it missing.
    await with_changes(svc, task, branch="conveyor/app-1", branch_sha="a" * 40)
    stop_id = await stop(svc, task)
    await reset.run_reset(svc, stop_id)
    steps = await steps_of(svc, stop_id)
    assert tuple(steps) == tuple(sorted(RESET_STEP_ORDER))  # all nine, stored sorted
    assert all(isinstance(steps[name].get("at"), float) for name in RESET_STEP_ORDER)
    assert steps["jobs"]["cancelled"] == 1
    assert steps["remote_branch"]["outcome"] == "missing"
    assert steps["pull_request"]["reason"] == "no pull request"
    assert steps["terminal"]["outcome"] == "cancelled_graceful"
    current = await svc.store.run_read(get_task, task.id)
    assert current is not None and current.stage is Stage.CANCELLED


async def test_the_decision_says_whether_the_task_touched_anything(svc: Services) -> None:
    queued = await make_task(svc, Stage.ANALYSIS, key="APP-1")
    running = await make_task(svc, Stage.IMPLEMENTATION, key="APP-2")
    await run_job(svc, running, "implementation")
    branched = await with_changes(
        svc, await make_task(svc, Stage.REVIEW, key="APP-3"), branch="conveyor/app-3"
    )
    hints = [
        (await svc.store.run(decide_stop, t.id, "alice", "", None, clock(svc).now())).untouched
        for t in (queued, running, branched)
    ]
    assert hints == [True, False, False]


async def test_a_wrong_untouched_hint_still_runs_every_step(svc: Services) -> None:
    task = await make_task(svc, Stage.IMPLEMENTATION)
    await run_job(svc, task, "implementation")
    stop_id = await stop(svc, task)
    await reset.run_reset(svc, stop_id, untouched=True)  # the reset's own check says no
    steps = await steps_of(svc, stop_id)
    assert steps["jobs"]["cancelled"] == 1 and set(steps) == set(RESET_STEP_ORDER)


async def test_a_wrong_touched_hint_only_costs_the_one_transaction(svc: Services) -> None:
    task = await make_task(svc, Stage.ANALYSIS)
    stop_id = await stop(svc, task)
    await reset.run_reset(svc, stop_id, untouched=False)
    steps = await steps_of(svc, stop_id)
    assert steps["worktree"]["reason"] == "no worktree"
    assert steps["terminal"]["outcome"] == "cancelled_graceful"


class ClosingForge:
    """Just enough of a forge for the reset's pull-request step."""

    def __init__(self) -> None:
        self.closed: list[int] = []

    async def close(self, forge_repo: str, number: int, *, comment: str) -> None:
        self.closed.append(number)


async def test_an_open_pull_request_is_closed_not_recorded_as_none(svc: Services) -> None:
    forge = ClosingForge()
    svc.forge_for = lambda repo: (forge, SimpleNamespace(forge_repo="team/app"))  # type: ignore[method-assign]
    task = await make_task(svc, Stage.REVIEW)
    await with_changes(svc, task, pr_number=7)
    stop_id = await stop(svc, task)
    await reset.run_reset(svc, stop_id)
    assert forge.closed == [7]
    assert (await steps_of(svc, stop_id))["pull_request"]["closed"] is True


async def test_the_store_step_leaves_a_pull_request_opened_meanwhile(svc: Services) -> None:
    # The reset thought there was none (read earlier); its transaction reads again.
    task = await make_task(svc, Stage.REVIEW)
    stop_id = await stop(svc, task)
    rec = await svc.store.run_read(stops.get_stop, stop_id)
    assert rec is not None
    assert await svc.store.run(reset.no_pull_request, rec, task.id, 0.0) is not None
    await with_changes(svc, task, pr_number=7)
    assert await svc.store.run(reset.no_pull_request, rec, task.id, 0.0) is None
