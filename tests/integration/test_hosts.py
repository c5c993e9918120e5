"""Servers and host steps on real SQLite and PostgreSQL: registration and presence, one
runner per reset, host steps handed over once and finished once, the owner named in
/queue, retiring a server; and on PostgreSQL the notifications that wake the owner."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from alembic import command

from bot.errors import ConfigError
from bot.runtime import check_schema, load_identity
from state import hosts, jobs
from state.db import alembic_config, make_engine, upgrade
from state.listen import HOST_STEPS_CHANNEL, JOBS_CHANNEL, conninfo, listen, listening_servers
from state.models import HostStepStatus, NewTask, ServerIdentity, StopStatus
from state.queue import queue_summary
from state.store import Store, insert_task
from tests.records import record_stop

NOW = 1_700_000_000.0
A = ServerIdentity("a" * 32, "host-a")
B = ServerIdentity("b" * 32, "host-b")


def a_stop(store: Store) -> tuple[int, str]:
    new = NewTask(tracker="plane", issue_id="iss-1", key="APP-1", repo="app", title="t")
    task = store.write(insert_task, new, NOW)
    rec = record_stop(store, task.id, StopStatus.OPEN, NOW)
    return task.id, rec.id


def register(store: Store, server: ServerIdentity, now: float = NOW) -> None:
    store.write(hosts.register_server, server, data_dir=f"/srv/{server.host}", pid=1, now=now)


def test_a_server_keeps_its_id_under_its_data_dir(tmp_path: Path) -> None:
    first = load_identity(tmp_path)
    assert load_identity(tmp_path) == first
    assert len(first.id) == 32 and first.host == socket.gethostname()
    assert (tmp_path / "server-id").read_text().strip() == first.id
    (tmp_path / "other").mkdir()
    assert load_identity(tmp_path / "other").id != first.id  # another data dir: another server
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "server-id"]  # no drafts


def test_presence_stop_and_return(store: Store) -> None:
    register(store, A)
    seen = store.query(hosts.get_server, A.id)
    assert seen is not None and seen["host"] == "host-a"
    assert not hosts.is_gone(seen, NOW + 5, silent_after=30)
    assert hosts.is_gone(seen, NOW + 31, silent_after=30)  # silent: killed, or lost
    store.write(hosts.server_seen, A.id, NOW + 30)
    assert not hosts.is_gone(store.query(hosts.get_server, A.id), NOW + 31, silent_after=30)
    store.write(hosts.server_stopped, A.id, NOW + 40)
    assert hosts.is_gone(store.query(hosts.get_server, A.id), NOW + 41, silent_after=30)
    register(store, A, NOW + 50)  # back again: the same row, up
    assert not hosts.is_gone(store.query(hosts.get_server, A.id), NOW + 51, silent_after=30)
    assert hosts.is_gone(None, NOW, silent_after=30)


def test_one_runner_per_reset_until_its_claim_lapses(store: Store) -> None:
    _, stop_id = a_stop(store)
    assert store.write(hosts.claim_reset, stop_id, A.id, NOW, 60)
    assert not store.write(hosts.claim_reset, stop_id, B.id, NOW + 1, 60)
    assert store.write(hosts.claim_reset, stop_id, A.id, NOW + 2, 60)  # renewed
    assert not store.write(hosts.claim_reset, stop_id, B.id, NOW + 61, 60)
    assert store.write(hosts.claim_reset, stop_id, B.id, NOW + 63, 60)  # A's lapsed


def test_a_host_step_is_handed_over_once_and_finished_once(store: Store) -> None:
    task_id, stop_id = a_stop(store)
    register(store, B)
    kw = dict(stop_id=stop_id, task_id=task_id, server_id=B.id, step="worktree", now=NOW)
    first = store.write(hosts.add_host_step, detail={"path": "/x"}, **kw)
    again = store.write(hosts.add_host_step, detail={"path": "/y"}, **kw)
    assert again.id == first.id and hosts.step_detail(again) == {"path": "/x"}
    assert [s.id for s in store.query(hosts.pending_for_server, B.id)] == [first.id]
    assert store.query(hosts.pending_for_server, A.id) == []

    summary = store.query(
        queue_summary, stop_enabled=True, stop_repos=[], now=NOW + 1, silent_after=30
    )
    (row,) = summary["stop"]["host_pending"]
    assert (row["task"], row["step"], row["server"], row["host"]) == (
        "APP-1",
        "worktree",
        B.id,
        "host-b",
    )
    assert row["owner_gone"] is (store.engine.dialect.name == "postgresql")  # no listener

    assert store.write(hosts.finish_host_step, first.id, {"removed": True}, NOW + 2)
    assert not store.write(hosts.finish_host_step, first.id, {"removed": False}, NOW + 3)
    (done,) = store.query(hosts.host_steps_for_stop, stop_id)
    assert done.status is HostStepStatus.DONE and hosts.step_result(done) == {"removed": True}
    assert store.query(hosts.pending_for_server, B.id) == []


def test_retiring_a_server_abandons_what_it_still_owed(store: Store) -> None:
    task_id, stop_id = a_stop(store)
    register(store, B)
    store.write(
        hosts.add_host_step,
        stop_id=stop_id,
        task_id=task_id,
        server_id=B.id,
        step="processes",
        detail={"jobs": [1]},
        now=NOW,
    )
    assert store.write(hosts.retire_server, B.id, NOW + 1) == 1
    (step,) = store.query(hosts.host_steps_for_stop, stop_id)
    assert step.status is HostStepStatus.ABANDONED
    assert hosts.is_gone(store.query(hosts.get_server, B.id), NOW + 2, silent_after=30)
    summary = store.query(queue_summary, stop_enabled=True, stop_repos=[], now=NOW + 2)
    assert summary["stop"]["host_pending"] == []


def test_a_claimed_job_names_its_server_and_host(store: Store) -> None:
    new = NewTask(tracker="plane", issue_id="iss-2", key="APP-2", repo="app", title="t")
    task = store.write(insert_task, new, NOW)
    store.write(jobs.enqueue_job, task.id, "analysis", NOW)
    job = store.write(jobs.claim_next_job, "host-b:1:0", NOW, 30, server=B)
    assert job is not None and (job.server_id, job.host) == (B.id, "host-b")
    (row,) = store.query(queue_summary, stop_enabled=True, stop_repos=[])["running"]
    assert (row["host"], row["server"]) == ("host-b", B.id)
    assert store.write(jobs.requeue_interrupted, job, NOW + 1)
    (queued,) = store.query(jobs.jobs_for_task, task.id)
    assert (queued.server_id, queued.host) == (None, None)


@pytest.mark.timeout(60)
async def test_postgres_notifies_the_owner_and_idle_workers(postgres_url: str) -> None:
    store = Store(make_engine(postgres_url))
    heard: list[tuple[str, str]] = []
    up = asyncio.Event()
    info = conninfo(store.engine.url, B.id)

    def connected(now_up: bool) -> None:
        if now_up:
            up.set()

    listener = asyncio.create_task(
        listen(
            info, [JOBS_CHANNEL, HOST_STEPS_CHANNEL], lambda c, p: heard.append((c, p)), connected
        )
    )
    try:
        await asyncio.wait_for(up.wait(), 20)
        assert B.id in (store.query(listening_servers) or set())
        register(store, B)
        assert not store.query(hosts.owner_absent, B.id, NOW + 1, 30)
        task_id, stop_id = a_stop(store)
        store.write(jobs.enqueue_job, task_id, "analysis", NOW)
        store.write(
            hosts.add_host_step,
            stop_id=stop_id,
            task_id=task_id,
            server_id=B.id,
            step="processes",
            detail={},
            now=NOW,
        )
        for _ in range(400):
            if len(heard) >= 2:
                break
            await asyncio.sleep(0.05)
        assert heard == [(JOBS_CHANNEL, ""), (HOST_STEPS_CHANNEL, B.id)]
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        # Its session ended with it: the owner is absent at once, whatever its last beat.
        for _ in range(100):
            if store.query(hosts.owner_absent, B.id, NOW + 1, 30):
                break
            await asyncio.sleep(0.05)
        assert store.query(hosts.owner_absent, B.id, NOW + 1, 30)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        store.dispose()


def test_a_server_refuses_a_shared_database_not_yet_upgraded(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    check_schema(engine)  # the template is at head
    command.downgrade(alembic_config(engine), "0003")
    with pytest.raises(ConfigError, match="run `conveyor db upgrade`"):
        check_schema(engine)
    upgrade(engine)  # and 0003 -> 0004 -> 0003 -> 0004 round-trips
    check_schema(engine)
    engine.dispose()
