"""GET /servers and POST /servers/{server}/retire through the real app: a server whose
machine is gone for good is retired by an operator, and the reset steps it owed are
abandoned on the record (no longer pending in GET /queue); a live server is refused."""

from __future__ import annotations

from pathlib import Path

from state import hosts
from state.models import HostStepStatus, NewTask, ServerIdentity, StopStatus
from state.store import insert_task
from tests.harness import running
from tests.records import record_stop

LOST = ServerIdentity("0" * 32, "lost-host")


def owe_a_step(store, now: float) -> str:  # type: ignore[no-untyped-def]
    task = store.write(insert_task, NewTask("plane", "iss-9", "PROJ-9", "app", "t"), now)
    rec = record_stop(store, task.id, StopStatus.DONE, now)
    store.write(hosts.register_server, LOST, data_dir="/srv/lost", pid=1, now=now - 3600)
    store.write(
        hosts.add_host_step,
        stop_id=rec.id,
        task_id=task.id,
        server_id=LOST.id,
        step="worktree",
        detail={"path": "/srv/lost/worktrees/app/PROJ-9"},
        now=now,
    )
    return str(rec.id)


async def test_an_operator_retires_a_lost_server(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        now = h.svc.clock.now()
        stop_id = owe_a_step(h.store, now)
        pending = (await h.client.get("/queue")).json()["stop"]["host_pending"]
        assert [(p["task"], p["host"], p["owner_gone"]) for p in pending] == [
            ("PROJ-9", "lost-host", True)
        ]
        assert "conveyor_host_steps_pending 1.0" in (await h.client.get("/metrics")).text
        listed = {s["server"]: s for s in (await h.client.get("/servers")).json()["servers"]}
        assert listed[LOST.id]["owes"] == 1 and listed[LOST.id]["gone"] is True
        me = listed[h.svc.server.id]
        assert me["gone"] is False and me["host"] == h.svc.server.host

        assert (await h.client.post(f"/servers/{LOST.id}/retire")).status_code == 401
        admin = {"X-Admin-Token": "admin-token-0123456789"}
        missing = await h.client.post("/servers/nope/retire", headers=admin)
        assert missing.status_code == 404 and "GET /servers" in missing.json()["error"]
        alive = await h.client.post(f"/servers/{h.svc.server.id}/retire", headers=admin)
        assert alive.status_code == 409 and "stop it first" in alive.json()["error"]

        retired = await h.client.post(f"/servers/{LOST.id}/retire", headers=admin)
        assert retired.status_code == 200
        assert retired.json() == {"server": LOST.id, "host": "lost-host", "abandoned": 1}
        assert (await h.client.get("/queue")).json()["stop"]["host_pending"] == []
        (step,) = h.store.query(hosts.host_steps_for_stop, stop_id)
        assert step.status is HostStepStatus.ABANDONED
