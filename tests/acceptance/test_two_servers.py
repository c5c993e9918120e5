"""Two real `conveyor serve` processes on one PostgreSQL database, the second in its own
UTS namespace (another host name, as on another machine), each with its own clone and
data dir. A STOP sent to the server that does not run the agent is carried out where
the work lives: the owner stops its agents and removes its worktree, the receiving
server does the rest once."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.agents import stop_body
from bench.common import Server, kill_survivors, new_token, plane_body, plane_headers, stamp
from bench.two_servers import (
    HOST_B,
    Pair,
    make_pair,
    postgres_database,
    running_hosts,
    unshare_problem,
    wait_until,
)
from integrations.names import safe_name
from integrations.processes import processes_with_env
from tests.conftest import PG_ENV, PG_SKIP

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600)]

AGENT = """#!/bin/sh
trap 'exit 143' TERM
touch "$CONVEYOR_DOCS_DIR/started"
while :; do sleep 0.05; done
"""


@pytest.fixture
def pg_base() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(PG_SKIP)
    problem = unshare_problem()
    if problem:
        pytest.skip(f"the second server needs its own host name: {problem}")
    return url


@pytest.fixture
def pg_only() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(PG_SKIP)
    return url


@pytest.fixture
def token() -> Any:
    run = new_token()
    yield run
    kill_survivors(run)  # whatever a failed test left running, by pid, ours only


def agents(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "agent.sh"
    script.write_text(AGENT)
    return {"analysis": f"exec sh {script}"}


def start(server: Server, ticket: int) -> None:
    body = plane_body(ticket, "To Analyse", stamp(2 * ticket))
    answer = httpx.post(
        f"{server.url}/webhooks/plane", content=body, headers=plane_headers(body), timeout=30
    )
    assert answer.status_code == 202 and answer.json()["outcome"] == "started", answer.text


def send_stop(server: Server, ticket: int) -> None:
    body, headers = stop_body(ticket)
    answer = httpx.post(f"{server.url}/webhooks/plane", content=body, headers=headers, timeout=30)
    assert answer.status_code == 202 and answer.json()["outcome"] == "stop_requested", answer.text


def show(server: Server, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{server.url}/tasks/{key}", timeout=30).json()
    return doc


def queue(server: Server) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{server.url}/queue", timeout=30).json()
    return doc


def servers(server: Server) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{server.url}/servers", timeout=30).json()["servers"]
    return found


def running_everywhere(server: Server, keys: list[str], pair: Pair) -> dict[str, str] | None:
    """Task → host once every task's agent runs with its tree in place, else None."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        hosts = running_hosts(client)
    started = all(
        any((d / "docs" / safe_name(key) / "started").exists() for d in (pair.data_a, pair.data_b))
        for key in keys
    )
    return hosts if started and set(keys) <= set(hosts) else None


def closed(server: Server, key: str) -> dict[str, Any] | None:
    doc = show(server, key)
    stops = doc.get("stops") or [{}]
    return (
        doc if doc["task"]["stage"] == "cancelled" and stops[-1].get("status") == "done" else None
    )


def worktrees(data_dir: Path) -> list[str]:
    root = data_dir / "worktrees" / "app"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def server_id(data_dir: Path) -> str:
    return (data_dir / "server-id").read_text().strip()


def test_stops_through_the_other_server_are_carried_out_where_the_work_lives(
    tmp_path: Path, pg_base: str, token: str
) -> None:
    with postgres_database(pg_base) as url:
        pair = make_pair(tmp_path, url, token, agents=agents(tmp_path), workers={"concurrency": 2})
        try:
            pair.a.start()
            pair.b.start()
            tickets = [1, 2, 3, 4]
            for ticket in tickets:  # two through each server
                start(pair.a if ticket <= 2 else pair.b, ticket)
            keys = [f"BENCH-{t}" for t in tickets]
            hosts = wait_until(lambda: running_everywhere(pair.a, keys, pair), 120, "4 agents")
            # Two workers each, four agents: the jobs spread over both hosts.
            assert sorted(hosts.values()) == sorted([socket.gethostname()] * 2 + [HOST_B] * 2)
            run_ids = {key: show(pair.a, key)["jobs"][-1]["run_id"] for key in keys}
            receivers = {key: pair.a if hosts[key] == HOST_B else pair.b for key in keys}
            for ticket, key in zip(tickets, keys, strict=True):
                send_stop(receivers[key], ticket)
            done = {
                key: wait_until(lambda k=key: closed(pair.a, k), 90, f"{key} reset") for key in keys
            }
            for key, doc in done.items():
                owner = pair.data_b if hosts[key] == HOST_B else pair.data_a
                receiver = pair.data_dir(receivers[key])
                _check_reset(doc, owner=server_id(owner), receiver=server_id(receiver))
                assert not processes_with_env("CONVEYOR_RUN_ID", run_ids[key]), key
            assert worktrees(pair.data_a) == [] and worktrees(pair.data_b) == []
            assert queue(pair.a)["stop"]["host_pending"] == []
        finally:
            pair.stop()


def _check_reset(doc: dict[str, Any], *, owner: str, receiver: str) -> None:
    """Reset once; the owner's steps recorded by the owner, the rest by the receiver."""
    key = doc["task"]["key"]
    assert doc["task"]["outcome"] == "cancelled_graceful", key
    assert [e["kind"] for e in doc["audit"]].count("cancelled") == 1, key
    job = doc["jobs"][-1]
    assert job["server_id"] == owner and job["host"], key
    (stop,) = doc["stops"]
    assert stop["runner"] == receiver, key
    handed = {h["step"]: h for h in stop["host_steps"]}
    assert set(handed) == {"processes", "worktree"}, key
    assert all(h["server_id"] == owner and h["status"] == "done" for h in handed.values()), key
    assert handed["processes"]["result"]["groups"] == 1, key
    assert handed["worktree"]["result"]["removed"] is True, key
    assert stop["steps"]["processes"]["hosts"][0]["by"] == owner, key
    assert stop["steps"]["worktree"]["removed"] is True, key
    assert [e["kind"] for e in doc["audit"]].count("host_step_done") == 2, key


def test_a_stop_for_a_gone_server_waits_in_the_queue_and_completes_when_it_is_back(
    tmp_path: Path, pg_base: str, token: str
) -> None:
    with postgres_database(pg_base) as url:
        pair = make_pair(tmp_path, url, token, agents=agents(tmp_path), workers={"concurrency": 2})
        try:
            pair.b.start()
            start(pair.b, 7)
            key = "BENCH-7"
            wait_until(lambda: running_everywhere(pair.b, [key], pair), 120, "the agent on B")
            run_id = show(pair.b, key)["jobs"][-1]["run_id"]
            pair.a.start()
            assert pair.b.proc is not None
            pair.b.proc.kill()  # B is gone; its agent (its own session) is not
            pair.b.proc.wait()
            send_stop(pair.a, 7)
            doc = wait_until(lambda: closed(pair.a, key), 90, "the reset through A")
            assert doc["stops"][0]["steps"]["worktree"]["pending_on"] == server_id(pair.data_b)
            pending = queue(pair.a)["stop"]["host_pending"]
            assert {(p["step"], p["host"], p["owner_gone"]) for p in pending} == {
                ("processes", HOST_B, True),
                ("worktree", HOST_B, True),
            }
            assert processes_with_env("CONVEYOR_RUN_ID", run_id)  # left for B to stop
            assert worktrees(pair.data_b) == [safe_name(key)]
            listed = {s["host"]: s for s in servers(pair.a)}
            assert listed[HOST_B]["gone"] is True and listed[HOST_B]["owes"] == 2
            assert listed[socket.gethostname()]["gone"] is False

            pair.b.start()  # B is back: it does what it owes
            wait_until(lambda: not queue(pair.a)["stop"]["host_pending"], 60, "B's steps")
            assert not processes_with_env("CONVEYOR_RUN_ID", run_id)
            assert worktrees(pair.data_b) == []
            after = show(pair.a, key)
            steps = after["stops"][0]["steps"]
            assert steps["worktree"]["removed"] is True and steps["worktree"]["pending_on"] is None
            assert steps["processes"]["pending_on"] is None
            (late,) = steps["processes"]["stopped_late"]
            assert late["by"] == server_id(pair.data_b) and late["groups"] == 1
            assert [e["kind"] for e in after["audit"]].count("cancelled") == 1
            retired = httpx.post(
                f"{pair.a.url}/servers/{server_id(pair.data_b)}/retire",
                headers={"X-Admin-Token": "bench-admin-token"},
                timeout=30,
            )
            assert retired.status_code == 409, retired.text  # B is up: nothing to retire
        finally:
            pair.stop()


def test_a_job_re_queued_from_a_dead_server_has_its_old_agent_stopped_when_it_is_back(
    tmp_path: Path, pg_base: str, token: str
) -> None:
    with postgres_database(pg_base) as url:
        pair = make_pair(
            tmp_path,
            url,
            token,
            agents=agents(tmp_path),
            workers={"concurrency": 2, "lease_seconds": 3},
        )
        try:
            pair.b.start()
            start(pair.b, 8)
            key = "BENCH-8"
            wait_until(lambda: running_everywhere(pair.b, [key], pair), 120, "the agent on B")
            old_run = show(pair.b, key)["jobs"][-1]["run_id"]
            assert pair.b.proc is not None
            pair.b.proc.kill()  # B dies; its agent lives on
            pair.b.proc.wait()
            pair.a.start()  # A's reaper re-queues the expired job and A runs it afresh

            def rerun_on_a() -> dict[str, Any] | None:
                job = show(pair.a, key)["jobs"][-1]
                moved = job["run_id"] != old_run and job["host"] == socket.gethostname()
                return job if moved and job["status"] == "running" and job["pgid"] else None

            wait_until(rerun_on_a, 60, "the job re-run on A")
            assert processes_with_env("CONVEYOR_RUN_ID", old_run)  # still on B's machine
            pending = queue(pair.a)["stop"]["host_pending"]
            assert [(p["step"], p["host"]) for p in pending] == [("processes", HOST_B)]

            pair.b.start()  # back: it stops the agent it left, nothing else
            wait_until(lambda: not processes_with_env("CONVEYOR_RUN_ID", old_run), 60, "old agent")
            wait_until(lambda: not queue(pair.a)["stop"]["host_pending"], 30, "B's step")
            assert show(pair.a, key)["task"]["stage"] == "analysis"  # the work goes on, on A
        finally:
            pair.stop()


def test_on_one_machine_a_gone_server_s_agents_are_stopped_by_the_other(
    tmp_path: Path, pg_only: str, token: str
) -> None:
    """Two servers on one host: the survivor stops the dead one's agent itself (same host,
    its recorded pid, group and start time); the worktree in the dead one's data dir
    waits for it."""
    with postgres_database(pg_only) as url:
        pair = make_pair(
            tmp_path, url, token, agents=agents(tmp_path), workers={"concurrency": 2}, host_b=None
        )
        try:
            pair.b.start()
            start(pair.b, 9)
            key = "BENCH-9"
            wait_until(lambda: running_everywhere(pair.b, [key], pair), 120, "the agent on B")
            run_id = show(pair.b, key)["jobs"][-1]["run_id"]
            pair.a.start()
            assert pair.b.proc is not None
            pair.b.proc.kill()
            pair.b.proc.wait()
            send_stop(pair.a, 9)
            doc = wait_until(lambda: closed(pair.a, key), 90, "the reset through A")
            assert not processes_with_env("CONVEYOR_RUN_ID", run_id)
            processes = doc["stops"][0]["steps"]["processes"]
            assert processes["hosts"][0]["stood_in_for"] == server_id(pair.data_b)
            pending = queue(pair.a)["stop"]["host_pending"]
            assert [(p["step"], p["server"]) for p in pending] == [
                ("worktree", server_id(pair.data_b))
            ]
            assert worktrees(pair.data_b) == [safe_name(key)]  # not A's to remove: B's data dir
            pair.b.start()
            wait_until(lambda: not queue(pair.a)["stop"]["host_pending"], 60, "B's worktree step")
            assert worktrees(pair.data_b) == []
        finally:
            pair.stop()
