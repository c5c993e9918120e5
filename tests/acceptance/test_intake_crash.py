"""kill -9 of `conveyor serve` while webhook deliveries pour in (SQLite's writer commits
them in groups): every delivery answered 202 was durable, and after the restart the
tracker's redelivery of everything is acted on at most once: one task per ticket, one
analysis job each."""

from __future__ import annotations

import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from state.db import make_engine
from state.schema import audit_events, jobs, tasks, webhook_deliveries
from tests.acceptance.loopback import plane_delivery
from tests.acceptance.test_crash_recovery import configured
from tests.gitrepo import make_repo
from tests.harness import base_settings, write_agent

TICKETS = 60
KILL_AFTER = 20  # acknowledged deliveries before the kill
SENDERS = 10

# Holds its job until conveyor stops it: the analysis stage never ends during the test,
# so each ticket's one analysis job is what "acted on once" counts.
HOLDING_AGENT = """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
while True:
    time.sleep(0.05)
"""


@pytest.mark.slow
@pytest.mark.timeout(240)  # ~10 s idle: two server starts and 120 deliveries
def test_no_acknowledged_delivery_is_lost_and_none_is_acted_on_twice(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path)
    agent = write_agent(tmp_path / "agents", "hold.py", HOLDING_AGENT)
    doc = base_settings(tmp_path, repo, **{"agents.analysis": agent, "workers.concurrency": 1})
    server, h = configured(tmp_path, doc)
    sends = [
        plane_delivery(h.payload("To Analyse", issue=str(uuid.uuid4()), seq=100 + n))
        for n in range(TICKETS)
    ]
    answers: dict[int, dict[str, str]] = {}
    lock = threading.Lock()
    killed = threading.Event()
    server.start()
    try:
        assert server.proc is not None
        proc = server.proc

        def send(n: int) -> None:
            headers, body = sends[n]
            try:
                r = httpx.post(
                    f"{server.url}/webhooks/plane", content=body, headers=headers, timeout=30
                )
            except httpx.TransportError:
                return  # the server is gone: not acknowledged
            assert r.status_code == 202, r.text
            with lock:
                answers[n] = r.json()
                if len(answers) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    proc.send_signal(signal.SIGKILL)

        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(send, range(TICKETS)))
        proc.wait(20)
        assert proc.returncode == -signal.SIGKILL
        acknowledged = dict(answers)
        assert KILL_AFTER <= len(acknowledged) < TICKETS, "the kill landed mid-intake"
        assert {a["outcome"] for a in acknowledged.values()} == {"started"}

        # What the dead server acknowledged is in its database.
        engine = make_engine(str(doc["server"]["database_url"]))
        with engine.connect() as conn:
            stored = dict(
                conn.execute(
                    select(webhook_deliveries.c.delivery_id, webhook_deliveries.c.outcome)
                ).all()
            )
        for n in acknowledged:
            delivery = sends[n][0]["X-Plane-Delivery"]
            assert stored.get(delivery) == "started", (n, delivery)

        # The tracker redelivers everything (same id, same body) to the restarted server.
        server.start()
        again = [server.deliver("plane", sends[n]) for n in range(TICKETS)]
        assert all(r.status_code == 202 for r in again), [r.text for r in again]
        outcomes = [r.json()["outcome"] for r in again]
        for n in acknowledged:
            assert outcomes[n] == "duplicate", (n, again[n].json())
        assert set(outcomes) <= {"duplicate", "started"}

        with engine.connect() as conn:
            per_ticket = conn.execute(
                select(tasks.c.issue_id, func.count()).group_by(tasks.c.issue_id)
            ).all()
            analysis = conn.execute(
                select(jobs.c.task_id, func.count())
                .where(jobs.c.stage == "analysis")
                .group_by(jobs.c.task_id)
            ).all()
            started = conn.execute(
                select(func.count()).where(audit_events.c.kind == "started")
            ).scalar_one()
            deliveries = conn.execute(select(func.count()).select_from(webhook_deliveries))
            delivery_count = deliveries.scalar_one()
        engine.dispose()
        assert len(per_ticket) == TICKETS and {c for _, c in per_ticket} == {1}
        assert len(analysis) == TICKETS and {c for _, c in analysis} == {1}
        assert started == TICKETS
        assert delivery_count == TICKETS
    finally:
        server.stop()
