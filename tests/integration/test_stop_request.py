"""What follows a committed stop decision (`request_stop`, `after_decision`,
`launch_reset`), with the services made by hand (tests/integration/conftest.py's `svc`):
a new open stop starts its reset here at once, a new deferred one posts its one notice
and waits, a repeated one does neither; the counter counts new decisions only."""

from __future__ import annotations

from bot.metrics import Metrics
from bot.services import Services
from bot.stopplane.intent import StopResult, launch_reset, request_stop
from integrations.trackers.fake import FakeTracker
from state import jobs, stops
from state.models import Stage, StopStatus, Task
from state.store import get_task
from tests.integration.stopplane import make_task, run_job, stop


def with_tracker(svc: Services) -> FakeTracker:
    tracker = FakeTracker(tracker_name="plane")
    svc.trackers["plane"] = tracker
    svc.metrics = Metrics(svc.store)
    return tracker


async def ask(svc: Services, task: Task) -> StopResult:
    return await request_stop(svc, task, requested_by="alice", reason="", correlation="d-1")


def counted(svc: Services, outcome: str) -> float:
    assert svc.metrics is not None
    value = svc.metrics.registry.get_sample_value("conveyor_stops_total", {"outcome": outcome})
    return value or 0.0


async def test_a_new_open_stop_starts_its_reset_at_once(svc: Services) -> None:
    tracker = with_tracker(svc)
    task = await make_task(svc, Stage.IMPLEMENTATION)
    result = await ask(svc, task)
    assert result.outcome == "stop_requested" and result.new and result.stop_id
    # Launched before the answer: this process runs it, timed from now.
    assert svc.resets == {result.stop_id}
    assert svc.stop_timings.started[result.stop_id] == svc.clock.monotonic()
    assert svc.stop_timings.asked_to_exit[result.stop_id] == 0  # no agent of ours ran
    assert counted(svc, "stop_requested") == 1
    await svc.background_tasks_done()
    assert svc.resets == set()
    rec = await svc.store.run_read(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.DONE
    current = await svc.store.run_read(get_task, task.id)
    assert current is not None and current.stage is Stage.CANCELLED
    assert [marker for _, marker in tracker.comments if "stop-deferred" in marker] == []


async def test_a_new_deferred_stop_posts_its_notice_once_and_waits(
    svc: Services,
) -> None:
    tracker = with_tracker(svc)
    task = await make_task(svc, Stage.MERGE)
    await run_job(svc, task, "merge")
    assert await svc.store.run(jobs.acquire_lease, "app", task.id, 0.0, 1e12)
    result = await ask(svc, task)
    assert result.outcome == "stop_deferred" and result.new and result.stop_id
    assert svc.resets == set() and result.stop_id not in svc.stop_timings.started
    await svc.background_tasks_done()
    assert len(tracker.comments) == 1
    assert f"conveyor:stop-deferred:{result.stop_id}" in tracker.comments[0][1]
    again = await ask(svc, task)
    assert (again.outcome, again.stop_id, again.new) == ("stop_deferred", result.stop_id, False)
    await svc.background_tasks_done()
    assert len(tracker.comments) == 1 and svc.resets == set()
    assert counted(svc, "stop_deferred") == 1
    rec = await svc.store.run_read(stops.get_stop, result.stop_id)
    assert rec is not None and rec.status is StopStatus.DEFERRED


async def test_a_repeated_stop_launches_nothing(svc: Services) -> None:
    with_tracker(svc)
    task = await make_task(svc, Stage.IMPLEMENTATION)
    stop_id = await stop(svc, task)  # decided earlier; its reset is someone else's
    again = await ask(svc, task)
    assert (again.outcome, again.stop_id, again.new) == ("stop_requested", stop_id, False)
    assert svc.resets == set() and svc.stop_timings.started == {}
    assert svc.stop_timings.asked_to_exit == {}
    await svc.background_tasks_done()
    rec = await svc.store.run_read(stops.get_stop, stop_id)
    assert rec is not None and rec.status is StopStatus.OPEN
    assert counted(svc, "stop_requested") == 0  # counted when it was new, not again


async def test_a_stop_for_a_finished_task_is_counted_and_launches_nothing(
    svc: Services,
) -> None:
    with_tracker(svc)
    task = await make_task(svc, Stage.DONE)
    result = await ask(svc, task)
    assert (result.outcome, result.stop_id, result.new) == ("noop_already_terminal", None, False)
    assert svc.resets == set() and svc.tasks == set()
    assert counted(svc, "noop_already_terminal") == 1


async def test_a_stop_without_metrics_still_starts_its_reset(svc: Services) -> None:
    task = await make_task(svc, Stage.REVIEW)
    result = await ask(svc, task)
    assert result.stop_id and svc.resets == {result.stop_id}
    await svc.background_tasks_done()


async def test_a_reset_is_launched_once_per_process(svc: Services) -> None:
    task = await make_task(svc, Stage.IMPLEMENTATION)
    stop_id = await stop(svc, task)
    launch_reset(svc, stop_id)
    launch_reset(svc, stop_id)
    assert [t.get_name() for t in svc.tasks] == [f"reset-{stop_id}"]
    assert svc.resets == {stop_id}
    await svc.background_tasks_done()
    assert svc.resets == set()  # done: a later launch would run it again
    rec = await svc.store.run_read(stops.get_stop, stop_id)
    assert rec is not None and rec.status is StopStatus.DONE
