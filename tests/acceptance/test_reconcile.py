"""Reconciliation through the real app, with real agents and git, and the fake tracker's
in-memory API side: a STOP is never lost with its webhook — not while the server was
down, not when the delivery is lost, not when the tracker is failing."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.app import create_app
from bot.intake.reconcile import backoff_seconds, reconcile_all
from bot.services import Services
from bot.settings import Settings, settings_from_dict
from integrations.processes import processes_with_env
from integrations.trackers.base import Ticket, TicketRef
from integrations.trackers.fake import Failure, FakeTracker
from state.models import NewTask, Stage, Task
from state.store import find_task, insert_task
from tests.apptools import app_client
from tests.gitrepo import make_repo
from tests.harness import COOPERATIVE_AGENT, base_settings, wait_until, write_agent

TICKET = Ticket(
    ref=TicketRef("acme", "ACME", "acme-1", "ACME-1"),
    title="Reconcile me",
    description="A ticket",
    url="https://acme.invalid/ACME-1",
    state="To Analyse",
)


def settings_for(tmp_path: Path, agent: str | None = None, **reconcile: Any) -> Settings:
    repo = tmp_path / "app"
    if not repo.exists():
        make_repo(tmp_path)
    from integrations.git import RepoSpec

    spec = RepoSpec(name="app", path=repo)
    overrides: dict[str, Any] = {"reconcile.enabled": True, "reconcile.startup_wait_seconds": 5}
    overrides.update({f"reconcile.{k}": v for k, v in reconcile.items()})
    if agent is not None:
        overrides["agents.analysis"] = agent
    doc = base_settings(tmp_path, spec, {"tracker": "acme", "tracker_project": "ACME"}, **overrides)
    return settings_from_dict(doc)


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, tracker: FakeTracker, *, background: bool = True
) -> AsyncIterator[tuple[Any, Services]]:
    holder: dict[str, Services] = {}

    def configure(svc: Services) -> None:
        svc.trackers["acme"] = tracker
        holder["svc"] = svc

    app = create_app(settings, configure=configure, start_background=background)
    async with app_client(app) as client:
        yield client, holder["svc"]


def coop(tmp_path: Path) -> str:
    return write_agent(tmp_path / "agents", "coop.py", COOPERATIVE_AGENT)


async def find(svc: Services, ref: str = "ACME-1") -> Task | None:
    found: Task | None = await svc.store.run_read(find_task, ref)
    return found


async def stage_of(svc: Services, stage: Stage, ref: str = "ACME-1", timeout: float = 30) -> Task:
    async def check() -> Task | None:
        task = await find(svc, ref)
        done = task is not None and task.stage is stage
        return task if done and (stage is not Stage.CANCELLED or task.outcome) else None

    found: Task = await wait_until(check, timeout, f"{ref} {stage.value}")
    return found


async def agent_started(svc: Services) -> Task:
    async def check() -> Task | None:
        task = await find(svc)
        return task if task and (svc.docs_dir(task.key) / "started").exists() else None

    found: Task = await wait_until(check, 30, "agent started")
    return found


async def test_a_stop_made_while_the_server_was_down_is_applied_and_the_agent_never_restarts(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, coop(tmp_path), interval_seconds=3600)
    tracker = FakeTracker(tracker_name="acme")
    tracker.put(TICKET)  # created straight into To Analyse; its webhook never came
    async with serving(settings, tracker) as (_, svc):
        task = await agent_started(svc)
        assert svc.reconcile["acme"].starts_found == 1
    # The server is down: its agent was stopped and its job put back in the queue.
    marker = svc.docs_dir(task.key) / "started"
    marker.unlink()
    tracker.move("acme-1", "STOP")  # and nobody delivers a webhook for it

    async with serving(settings, tracker) as (_, svc):
        done = await stage_of(svc, Stage.CANCELLED)
        assert done.id == task.id and done.outcome == "cancelled_graceful"
        assert not marker.exists()  # the agent was never started again
        # This test's agents only (task ids repeat across the machine's other test runs).
        assert processes_with_env("CONVEYOR_DOCS_DIR", str(svc.docs_dir(task.key))) == []
        await wait_until(_true(lambda: len(tracker.comments) == 1), 10, "one comment")
        stops = await svc.store.run_read(_stops, done.id)
        assert [s.requested_by for s in stops] == ["acme:reconcile"]
        assert svc.reconcile["acme"].missed_webhooks >= 1
    assert len(tracker.comments) == 1


async def test_a_lost_stop_webhook_is_applied_within_a_pass_and_the_grace(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, coop(tmp_path), interval_seconds=0.5)
    tracker = FakeTracker(tracker_name="acme")
    async with serving(settings, tracker) as (client, svc):
        ticket = tracker.put(TICKET)
        headers, body = tracker.delivery(ticket, delivery="start-1")
        started = await client.post("/webhooks/acme", content=body, headers=headers)
        assert started.json()["outcome"] == "started"
        await agent_started(svc)
        tracker.move("acme-1", "STOP")
        # interval (0.5 s) + grace (2 s), with room for a busy machine.
        done = await stage_of(svc, Stage.CANCELLED, timeout=20)
        assert done.outcome == "cancelled_graceful"
        queue = (await client.get("/queue")).json()["reconcile"]["trackers"]["acme"]
        assert queue["stops_found"] == 1 and queue["last_error"] is None
        assert queue["missed_webhooks"] >= 1
        # The STOP webhook arriving after the pass acted changes nothing more.
        headers, body = tracker.delivery(tracker.tickets["acme-1"], delivery="stop-late")
        late = await client.post("/webhooks/acme", content=body, headers=headers)
        assert late.json()["outcome"] == "ignored"
        assert late.json()["reason"] == "already_terminal"


async def test_a_done_ticket_left_in_its_start_state_never_starts_twice(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, interval_seconds=3600)
    tracker = FakeTracker(tracker_name="acme")
    async with serving(settings, tracker) as (client, svc):
        ticket = tracker.put(TICKET)
        headers, body = tracker.delivery(ticket, delivery="start-1")
        assert (await client.post("/webhooks/acme", content=body, headers=headers)).status_code
        done = await stage_of(svc, Stage.DONE, timeout=60)
        for _ in range(10):  # touched in the tracker, still sitting in To Analyse
            tracker.put(dataclasses.replace(tracker.tickets["acme-1"], updated_at=None))
            reports = await reconcile_all(svc, force=True)
            assert reports[0].starts == [] and reports[0].error is None
        assert (await find(svc)).id == done.id  # type: ignore[union-attr]

        tracker.move("acme-1", "Done")
        await reconcile_all(svc, force=True)
        tracker.move("acme-1", "To Analyse")  # moved back: an edge, and no webhook
        reports = await reconcile_all(svc, force=True)
        assert reports[0].starts == ["ACME-1"]
        fresh = await find(svc)
        assert fresh is not None and fresh.id != done.id and not fresh.terminal


async def test_tracker_errors_change_nothing_back_off_and_one_pass_catches_up(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, coop(tmp_path), interval_seconds=3600)
    tracker = FakeTracker(tracker_name="acme")
    async with serving(settings, tracker) as (client, svc):
        ticket = tracker.put(TICKET)
        headers, body = tracker.delivery(ticket, delivery="start-1")
        await client.post("/webhooks/acme", content=body, headers=headers)
        task = await agent_started(svc)
        tracker.fail_always = Failure(status=429, retry_after=7200, message="slow down")
        tracker.move("acme-1", "STOP")

        before = svc.clock.now()
        first = await reconcile_all(svc)
        assert first[0].error is not None and "429" in first[0].error
        health = svc.reconcile["acme"]
        assert health.backoff_until >= before + 7200  # Retry-After honoured
        calls = len(tracker.requests)
        for _ in range(3):  # scheduled passes while backing off ask nothing
            assert (await reconcile_all(svc))[0].skipped == "backing_off"
        assert len(tracker.requests) == calls
        tracker.fail_always = Failure(status=500, message="down")
        assert (await reconcile_all(svc, force=True))[0].error is not None
        shown = (await client.get("/queue")).json()["reconcile"]["trackers"]["acme"]
        assert "500" in shown["last_error"] and shown["backoff_until"] is not None
        still = await find(svc)
        assert still is not None and still.stage is Stage.ANALYSIS and not still.terminal

        tracker.fail_always = None
        caught_up = await reconcile_all(svc, force=True)
        assert caught_up[0].stops == ["ACME-1"] and caught_up[0].error is None
        await stage_of(svc, Stage.CANCELLED)
        shown = (await client.get("/queue")).json()["reconcile"]["trackers"]["acme"]
        assert shown["last_error"] is None and shown["lag_seconds"] is not None
        assert (await find(svc, str(task.id))).outcome == "cancelled_graceful"  # type: ignore[union-attr]


async def test_a_ticket_gone_on_two_reads_in_a_row_stops_its_task(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, interval_seconds=3600)
    tracker = FakeTracker(tracker_name="acme")
    async with serving(settings, tracker, background=False) as (_, svc):
        await svc.store.run(_live_task, "acme-1", "ACME-1")
        tracker.put(dataclasses.replace(TICKET, updated_at=datetime(2020, 1, 1, tzinfo=UTC)))
        assert (await reconcile_all(svc, force=True))[0].deleted == []
        tracker.delete("acme-1")
        tracker.fail_next(1, status=503)
        assert (await reconcile_all(svc, force=True))[0].error is not None  # not "gone"
        assert (await reconcile_all(svc, force=True))[0].deleted == []  # gone once
        assert (await reconcile_all(svc, force=True))[0].deleted == ["ACME-1"]
        stops = await svc.store.run_read(_stops, (await find(svc)).id)  # type: ignore[union-attr]
        assert [(s.requested_by, s.reason) for s in stops] == [("acme:reconcile", "ticket_deleted")]


async def test_a_pass_over_500_quiet_live_tasks_costs_at_most_three_requests(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, interval_seconds=3600)
    tracker = FakeTracker(tracker_name="acme")
    async with serving(settings, tracker, background=False) as (_, svc):
        for n in range(500):
            await svc.store.run(_live_task, f"acme-{n}", f"ACME-{n}")
            tracker.put(
                dataclasses.replace(
                    TICKET,
                    ref=TicketRef("acme", "ACME", f"acme-{n}", f"ACME-{n}"),
                    updated_at=datetime(2020, 1, 1, tzinfo=UTC),
                )
            )
        await reconcile_all(svc, force=True)
        for _ in range(5):
            tracker.requests.clear()
            report = (await reconcile_all(svc, force=True))[0]
            assert report.error is None and report.tickets == 0
            assert len(tracker.requests) <= 3, tracker.requests
            assert [r.split()[0] for r in tracker.requests] == ["list", "read"]


def test_backoff_doubles_to_ten_intervals_and_honours_retry_after() -> None:
    assert [backoff_seconds(15, n, None, 0.0) for n in (1, 2, 3, 4, 5, 6)] == [
        15,
        30,
        60,
        120,
        150,
        150,
    ]
    assert backoff_seconds(15, 1, None, 0.999) < 15 * 1.2
    assert backoff_seconds(15, 1, 900, 0.5) == 900


def _live_task(conn: Any, issue_id: str, key: str) -> Task:
    new = NewTask(tracker="acme", issue_id=issue_id, key=key, repo="app", project_id="ACME")
    return insert_task(conn, new, 1_700_000_000.0)


def _stops(conn: Any, task_id: int) -> Any:
    from state.stops import stops_for_task

    return stops_for_task(conn, task_id)


def _true(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run
