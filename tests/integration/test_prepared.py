"""Statements prepared once (state/prepared.py): on SQLite run on the driver's cursor in
the connection's transaction, through Core elsewhere. Whichever path runs them, they
read and write what Core would: the same rows, the same values, the same errors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError

from state import jobs, stops, tickets
from state.errors import StoreError
from state.models import NewTask, Stage
from state.prepared import Prepared
from state.savepoints import savepoint
from state.schema import audit_events, tasks
from state.schema import jobs as jobs_table
from state.store import Store, add_event, get_task, insert_task, update_task

NOW = 1_700_000_000.0


def _core_rows(conn: Any, prepared: Prepared, params: dict[str, Any]) -> list[dict[str, Any]]:
    statement = prepared.statement(conn.dialect.name)
    return [dict(row._mapping) for row in conn.execute(statement, params)]


def _task(store: Store, key: str = "APP-1") -> Any:
    new = NewTask(tracker="plane", issue_id=f"iss-{key}", key=key, repo="app", title="t")
    return store.write(insert_task, new, NOW)


def test_reads_give_the_rows_core_gives(store: Store) -> None:
    task = _task(store)
    store.write(jobs.enqueue_job, task.id, "analysis", NOW)
    store.write(jobs.enqueue_job, task.id, "analysis", NOW + 1, attempt=2)
    from state.jobs import _LIVE_OF_TASK
    from state.store import _BY_ID, _BY_ISSUE, _LATEST_BY_ISSUE

    cases: list[tuple[Prepared, dict[str, Any]]] = [
        (_BY_ID, {"_id": task.id}),
        (_BY_ID, {"_id": task.id + 99}),
        (_BY_ISSUE, {"_tracker": "plane", "_issue": task.issue_id}),
        (_LATEST_BY_ISSUE, {"_tracker": "plane", "_issue": "iss-APP-1", "_pattern": "x%"}),
        (_LIVE_OF_TASK, {"_task": task.id}),
    ]
    with store.begin() as conn:
        for prepared, params in cases:
            assert [dict(r) for r in prepared.rows(conn, params)] == _core_rows(
                conn, prepared, params
            )
        assert len(_LIVE_OF_TASK.rows(conn, {"_task": task.id})) == 2


def test_writes_keep_what_core_would_keep(store: Store) -> None:
    task = _task(store)
    changed = store.write(update_task, task, NOW + 5, stage=Stage.REVIEW, title="x")
    assert (changed.stage, changed.title, changed.version) == (Stage.REVIEW, "x", 2)
    store.write(add_event, task.id, "started", 7, actor="a", delivery="d")  # an int time
    with store.read() as conn:
        row = conn.execute(select(audit_events).where(audit_events.c.task_id == task.id)).one()
        stored = conn.execute(select(tasks.c.updated_at).where(tasks.c.id == task.id)).scalar()
    assert isinstance(row.at, float) and row.at == 7.0  # bound as Core binds a Float
    assert (row.kind, row.actor, row.detail) == ("started", "a", '{"delivery": "d"}')
    assert stored == NOW + 5


def test_counts_are_the_rows_changed(store: Store) -> None:
    task = _task(store)
    store.write(jobs.enqueue_job, task.id, "analysis", NOW)
    assert store.write(jobs.cancel_task_jobs, task.id, NOW) == 1
    assert store.write(jobs.cancel_task_jobs, task.id, NOW) == 0  # cancelled is terminal
    assert store.write(jobs.release_lease, task.id) == 0
    assert store.query(jobs.lease_of_task, task.id) is None


def test_a_refused_insert_raises_as_core_raises(store: Store) -> None:
    assert store.write(stops.record_delivery, "plane", "k1", "d1", NOW) is not None
    assert store.write(stops.record_delivery, "plane", "k1", "d2", NOW) is None  # duplicate
    with pytest.raises(IntegrityError), store.begin() as conn:
        add_event(conn, 999_999, "orphan", NOW)  # no such task: the foreign key refuses


def test_a_connection_without_a_transaction_is_run_through_core(store: Store) -> None:
    task = _task(store)
    with store.engine.connect() as conn:
        found = get_task(conn, task.id)  # Core begins the transaction itself
        assert found is not None and found.id == task.id
        assert conn.in_transaction()


def test_an_expanding_list_runs_through_core(store: Store) -> None:
    task = _task(store)
    store.write(jobs.enqueue_job, task.id, "analysis", NOW)
    prepared = Prepared(
        select(jobs_table.c.stage).where(jobs_table.c.status.in_(bindparam("s", expanding=True)))
    )
    with store.begin() as conn:
        assert [dict(r) for r in prepared.rows(conn, {"s": ["queued", "running"]})] == [
            {"stage": "analysis"}
        ]
        assert prepared.rows(conn, {"s": ["failed"]}) == []


def test_the_last_seen_ticket_round_trips(store: Store) -> None:
    seen = tickets.SeenTicket(
        tracker="plane",
        issue_id="iss-1",
        project="p",
        key="APP-1",
        state="To Analyse",
        labels=("a", "b"),
        signal="start",
        seen_at=NOW,
        updated_at=None,
    )
    store.write(tickets.remember, seen)
    assert store.query(tickets.last_seen, "plane", "iss-1") == seen
    store.write(tickets.remember, tickets.SeenTicket(**{**vars(seen), "state": "STOP"}))
    again = store.query(tickets.last_seen, "plane", "iss-1")
    assert again is not None and again.state == "STOP"


# -- savepoints (state/savepoints.py) -----------------------------------------------------


def test_a_savepoint_undoes_its_block_alone_and_the_transaction_goes_on(store: Store) -> None:
    first, second, third = _task(store, "APP-1"), _task(store, "APP-2"), _task(store, "APP-3")
    with store.begin() as conn:
        add_event(conn, first.id, "kept-before", NOW)
        with pytest.raises(ValueError, match="refused"), savepoint(conn):
            add_event(conn, second.id, "undone", NOW)
            with savepoint(conn):  # nested: released into the outer one, then undone with it
                add_event(conn, second.id, "undone-inner", NOW)
            raise ValueError("refused")
        with savepoint(conn):
            add_event(conn, third.id, "kept-after", NOW)
    with store.read() as conn:
        kinds = sorted(conn.execute(select(audit_events.c.kind)).scalars())
    assert kinds == ["kept-after", "kept-before"]


def test_a_savepoint_whose_transaction_sqlite_ended_raises_a_database_error(
    tmp_path: Any,
) -> None:
    """SQLite rolls a whole transaction back on some errors (a full disk, an I/O error):
    then there is no savepoint to return to, and the block's error becomes a database
    error (the group writer reruns its writes one by one on those)."""
    from tests.conftest import migrated_store

    with migrated_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        refused = pytest.raises(StoreError, match="no such savepoint")
        with refused, store.begin() as conn, savepoint(conn):
            conn.connection.dbapi_connection.execute("ROLLBACK")  # type: ignore[union-attr]
            raise ValueError("the transaction is gone")
        with store.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM tasks")).scalar() == 0
