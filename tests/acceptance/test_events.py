"""`GET /events` against the real server (uvicorn on a free loopback port, real agents,
real git): the events of a task's life arrive in order with increasing ids, a client
that reconnects with `Last-Event-ID` gets exactly what it missed, an unknown id gets one
`resync`, and a change written by another process sharing the database shows too."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.serve import serving_in_thread
from bot.settings import settings_from_dict
from bot.stopplane.reset import STEPS
from integrations.trackers.plane.payloads import build_v1_payload
from integrations.trackers.plane.webhook import sign
from tests.gitrepo import make_repo
from tests.harness import (
    ACTOR,
    COOPERATIVE_AGENT,
    PROJECT,
    SECRET,
    STATES,
    base_settings,
    write_agent,
)
from tests.sse import SseEvent, collect

ISSUE = "20617384-0d13-472c-a860-e7f89295b2f5"

RESET_STEPS = [name for name, _ in STEPS]  # in the order the reset runs them


def plane_state(url: str, state: str, n: int) -> httpx.Response:
    """A signed Plane v1 state change, as Plane sends it."""
    import json

    state_id, group = STATES[state]
    body = json.dumps(
        build_v1_payload(
            issue_id=ISSUE,
            project_id=PROJECT,
            sequence_id=42,
            title="Fix login redirect loop",
            state_id=state_id,
            state_name=state,
            state_group=group,
            old_state_id=None,
            actor_id=ACTOR,
            actor_name="ada",
            updated_at=f"2026-11-21T10:00:{n:02d}.000Z",
        )
    ).encode()
    headers = {
        "X-Plane-Signature": sign(SECRET, body),
        "X-Plane-Event": "issue",
        "X-Plane-Delivery": f"delivery-{n}",
        "Content-Type": "application/json",
    }
    return httpx.post(f"{url}/webhooks/plane", content=body, headers=headers, timeout=10)


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The server (in this process) logged no error while the streams ran."""
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    repo, _ = make_repo(tmp_path)
    agents = tmp_path / "agents"
    impl = write_agent(agents, "impl.py", COOPERATIVE_AGENT)
    doc = base_settings(tmp_path, repo, **{"agents.implementation": impl})
    with serving_in_thread(settings_from_dict(doc)) as url:
        yield url, tmp_path


def of_task(events: list[SseEvent], event: str, **match: Any) -> list[SseEvent]:
    return [
        e for e in events if e.event == event and all(e.data.get(k) == v for k, v in match.items())
    ]


def seq(event: SseEvent) -> int:
    assert event.id is not None
    return int(event.id.rpartition(".")[2])


@pytest.mark.timeout(180)
def test_events_in_order_and_reconnect_with_last_event_id(server: tuple[str, Path]) -> None:
    url, _ = server

    def started() -> None:
        assert plane_state(url, "To Analyse", 1).json()["outcome"] == "started"

    def implementing(events: list[SseEvent]) -> bool:
        return bool(of_task(events, "job", stage="implementation", status="running"))

    first = collect(f"{url}/events", implementing, on_open=started)
    assert all(e.id for e in first)
    assert [seq(e) for e in first] == sorted(seq(e) for e in first)
    assert len({e.id for e in first}) == len(first)
    stages = [e.data["stage"] for e in of_task(first, "stage", task="PROJ-42")]
    assert stages[:2] == ["analysis", "implementation"], stages
    analysis = [e.data["status"] for e in of_task(first, "job", stage="analysis")]
    assert analysis == ["queued", "running", "succeeded"], analysis
    assert of_task(first, "audit", kind="started", task="PROJ-42")
    # Job events come in each job's own order: its start before its finish.
    impl_run = of_task(first, "job", stage="implementation", status="running")[0]
    analysis_done = of_task(first, "job", stage="analysis", status="succeeded")[0]
    assert seq(analysis_done) < seq(impl_run)
    last_id = first[-1].id

    # While nobody listens, STOP the task; the reconnecting client gets what it missed.
    assert plane_state(url, "STOP", 2).json()["outcome"] == "stop_requested"

    def cancelled(events: list[SseEvent]) -> bool:  # the stop closes with its last step
        return bool(of_task(events, "stop", status="done"))

    second = collect(f"{url}/events", cancelled, headers={"Last-Event-ID": str(last_id)})
    assert seq(second[0]) == seq(first[-1]) + 1, "the replay starts right after the last id"
    assert [seq(e) for e in second] == list(range(seq(second[0]), seq(second[0]) + len(second)))
    steps = [e.data["step"] for e in of_task(second, "stop") if "step" in e.data]
    assert steps == RESET_STEPS, "\n".join(str((e.id, e.event, e.data)) for e in second)
    stops = of_task(second, "stop", task="PROJ-42")
    assert stops[0].data["status"] == "requested" and "step" not in stops[0].data
    assert stops[-1].data["status"] == "done" and stops[-1].data["outcome"] == "cancelled_graceful"
    assert of_task(second, "job", stage="implementation", status="cancelled")
    assert of_task(second, "audit", kind="stop_requested")
    cancel = of_task(second, "stage", stage="cancelled")[0]
    assert cancel.data["outcome"] == "cancelled_graceful"
    assert of_task(second, "audit", kind="cancelled")


@pytest.mark.timeout(120)
def test_unknown_last_event_id_gets_resync(server: tuple[str, Path]) -> None:
    url, _ = server
    events = collect(
        f"{url}/events", lambda seen: bool(seen), headers={"Last-Event-ID": "0000.12345"}
    )
    assert events[0].event == "resync"


@pytest.mark.timeout(120)
def test_a_change_by_another_process_is_an_event(server: tuple[str, Path]) -> None:
    """Another process writes to the shared database (here an audit event through the
    store's own function): the server's feed reports it, no in-process hook involved."""
    url, tmp_path = server
    assert plane_state(url, "To Analyse", 1).status_code == 202
    script = (
        "import sys, time\n"
        "from state.db import make_engine\n"
        "from state.store import Store, add_event\n"
        "store = Store(make_engine(sys.argv[1]))\n"
        "store.write(add_event, 1, 'operator_note', time.time(), actor='other-process')\n"
        "store.dispose()\n"
    )
    db = f"sqlite:///{tmp_path / 'conveyor.db'}"
    done = threading.Event()

    def write_from_elsewhere() -> None:
        subprocess.run([sys.executable, "-c", script, db], check=True, timeout=60)
        done.set()

    events = collect(
        f"{url}/events",
        lambda seen: bool(of_task(seen, "audit", kind="operator_note")),
        on_open=write_from_elsewhere,
    )
    assert done.is_set()
    note = of_task(events, "audit", kind="operator_note")[0]
    assert note.data["task"] == "PROJ-42" and note.data["task_id"] == 1


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_the_feed_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The same feed on PostgreSQL: a task's stages, jobs and reset steps, in order."""
    repo, _ = make_repo(tmp_path)
    impl = write_agent(tmp_path / "agents", "impl.py", COOPERATIVE_AGENT)
    doc = base_settings(
        tmp_path, repo, **{"agents.implementation": impl, "server.database_url": postgres_url}
    )
    with serving_in_thread(settings_from_dict(doc)) as url:
        events = collect(
            f"{url}/events",
            lambda seen: bool(of_task(seen, "job", stage="implementation", status="running")),
            on_open=lambda: plane_state(url, "To Analyse", 1),
        )
        stages = [e.data["stage"] for e in of_task(events, "stage", task="PROJ-42")]
        assert stages[:2] == ["analysis", "implementation"]
        assert plane_state(url, "STOP", 2).json()["outcome"] == "stop_requested"
        rest = collect(
            f"{url}/events",
            lambda seen: bool(of_task(seen, "stop", status="done")),
            headers={"Last-Event-ID": str(events[-1].id)},
        )
        steps = [e.data["step"] for e in of_task(rest, "stop") if "step" in e.data]
        assert steps[0] == "processes" and steps[-1] == "notify"
        assert of_task(rest, "stage", stage="cancelled")[0].data["outcome"] == "cancelled_graceful"
