"""Linear and Jira through the real app, with real agents, real git and a bare remote,
and respx standing in for their APIs: start, redelivery, STOP with the full reset and
one comment in each tracker's own shape, a deleted ticket, and three trackers at once
with no crosstalk."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import respx

from bot.app import create_app
from bot.services import Services
from bot.settings import settings_from_dict
from integrations.processes import group_alive
from integrations.trackers.jira import payloads as jira_payloads
from integrations.trackers.linear import payloads as linear_payloads
from integrations.trackers.plane.payloads import build_v1_payload
from integrations.trackers.plane.webhook import sign
from state.models import Stage, Task
from state.store import find_task
from tests.apptools import app_client
from tests.gitrepo import git, make_repo
from tests.harness import (
    COOPERATIVE_AGENT,
    PROJECT,
    SECRET,
    STATES,
    base_settings,
    wait_until,
    write_agent,
)

LINEAR_API = "https://linear.test/graphql"
JIRA_SITE = "https://acme.atlassian.test"
LINEAR_SECRET = "lin_wh_0123456789abcdef"
JIRA_SECRET = "jira-webhook-secret-0123456789"


@dataclass(frozen=True)
class Kind:
    """What differs between the two trackers in these tests."""

    name: str
    key: str
    project: str
    section: dict[str, Any]
    send: Callable[[str, str, str | None], tuple[dict[str, str], bytes]]
    delete: Callable[[str], tuple[dict[str, str], bytes]]


def _linear_send(key: str, state: str, delivery: str | None) -> tuple[dict[str, str], bytes]:
    return linear_payloads.issue_update(
        key=key, state=state, secret=LINEAR_SECRET, now=time.time(), delivery=delivery
    )


def _jira_send(key: str, state: str, delivery: str | None) -> tuple[dict[str, str], bytes]:
    return jira_payloads.issue_status_change(
        key=key,
        state=state,
        secret=JIRA_SECRET,
        now=time.time(),
        base_url=JIRA_SITE,
        delivery=delivery,
    )


LINEAR = Kind(
    "linear",
    "ENG-7",
    "ENG",
    {"webhook_secret": LINEAR_SECRET, "api_key": "lin_api_key_0123456789", "api_url": LINEAR_API},
    _linear_send,
    lambda key: linear_payloads.issue_remove(
        key=key, state="To Analyse", secret=LINEAR_SECRET, now=time.time()
    ),
)
JIRA = Kind(
    "jira",
    "OPS-9",
    "OPS",
    {
        "webhook_secret": JIRA_SECRET,
        "base_url": JIRA_SITE,
        "email": "bot@acme.test",
        "api_token": "jira-api-token-0123456789",
    },
    _jira_send,
    lambda key: jira_payloads.issue_deleted(
        key=key, state="To Analyse", secret=JIRA_SECRET, now=time.time(), base_url=JIRA_SITE
    ),
)


@contextlib.asynccontextmanager
async def served(tmp_path: Path, kinds: list[Kind], plane: bool = False) -> AsyncIterator[Any]:
    agents = tmp_path / "agents"
    coop = write_agent(agents, "coop.py", COOPERATIVE_AGENT)
    repos = []
    sections: dict[str, Any] = {}
    doc: dict[str, Any] = {}
    for kind in kinds:
        spec, _ = make_repo(tmp_path, f"{kind.name}-app")
        doc = base_settings(tmp_path, spec, **{"agents.analysis": coop, "workers.concurrency": 3})
        repos.append(
            {
                "name": spec.name,
                "path": str(spec.path),
                "tracker": kind.name,
                "tracker_project": kind.project,
            }
        )
        sections[kind.name] = kind.section
    doc["trackers"].update(sections)
    if plane:
        spec, _ = make_repo(tmp_path, "plane-app")
        repos.append({"name": spec.name, "path": str(spec.path), "tracker_project": PROJECT})
    doc["repos"] = repos
    settings = settings_from_dict(doc)
    holder: dict[str, Services] = {}
    async with app_client(
        create_app(settings, configure=lambda svc: holder.setdefault("svc", svc))
    ) as client:
        yield client, holder["svc"]


async def post(client: httpx.AsyncClient, kind: Kind, sent: tuple[dict[str, str], bytes]) -> Any:
    headers, body = sent
    answer = await client.post(f"/webhooks/{kind.name}", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer.json()


async def task_of(svc: Services, ref: str) -> Task:
    task = await svc.store.run_read(find_task, ref)
    assert task is not None
    return task


async def until_stage(svc: Services, ref: str, stage: Stage) -> Task:
    async def check() -> Task | None:
        task = await task_of(svc, ref)
        return (
            task if task.stage is stage and (stage is not Stage.CANCELLED or task.outcome) else None
        )

    found: Task = await wait_until(check, 30, f"{ref} {stage.value}")
    return found


async def agent_running(svc: Services, ref: str) -> Task:
    async def check() -> Task | None:
        task = await task_of(svc, ref)
        return task if (svc.docs_dir(task.key) / "started").exists() else None

    found: Task = await wait_until(check, 30, f"{ref} agent running")
    return found


def comment_routes(router: respx.MockRouter) -> tuple[respx.Route, respx.Route]:
    """The comment posts of Linear and Jira; the look for an earlier comment (before
    posting) answers an empty list in each API's shape."""
    empty = {"nodes": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}
    router.post(LINEAR_API, json__operationName="ConveyorComments").respond(
        200, json={"data": {"issue": {"comments": empty}}}
    )
    linear = router.post(LINEAR_API, json__operationName="ConveyorComment").respond(
        200, json={"data": {"commentCreate": {"success": True, "comment": {"id": "c-1"}}}}
    )
    jira_comments = rf"{JIRA_SITE}/rest/api/3/issue/[^/]+/comment"
    router.get(url__regex=jira_comments).respond(
        200, json={"startAt": 0, "maxResults": 100, "total": 0, "comments": []}
    )
    jira = router.post(url__regex=jira_comments).respond(201, json={"id": "10001"})
    return linear, jira


async def run_the_stop_plane(tmp_path: Path, kind: Kind) -> None:
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as router:
        linear_route, jira_route = comment_routes(router)
        route = linear_route if kind is LINEAR else jira_route
        async with served(tmp_path, [kind]) as (client, svc):
            first = kind.send(kind.key, "To Analyse", "delivery-1")
            assert await post(client, kind, first) == {"outcome": "started", "task": kind.key}
            assert (await post(client, kind, first))["outcome"] == "duplicate"
            task = await agent_running(svc, kind.key)
            worktree = Path(task.worktree_path or "")
            pgid = [j for j in await svc.store.run_read(_jobs, task.id) if j.pgid][0].pgid

            stop = await post(client, kind, kind.send(kind.key, "STOP", None))
            assert stop["outcome"] == "stop_requested"
            done = await until_stage(svc, kind.key, Stage.CANCELLED)
            assert done.outcome == "cancelled_graceful"
            assert not group_alive(pgid) and not worktree.exists()
            bare = tmp_path / f"{kind.name}-app-remote.git"
            assert git(bare, "branch", "--list", "conveyor/*") == ""
            await wait_until(_called(route, 1), 10, "one comment")
            sent = json.loads(route.calls[0].request.content)
            if kind is LINEAR:
                assert "commentCreate" in sent["query"]
                assert f"conveyor stopped {kind.key}" in sent["variables"]["input"]["body"]
                assert route.calls[0].request.headers["Authorization"] == kind.section["api_key"]
            else:
                assert sent["body"]["type"] == "doc" and sent["body"]["version"] == 1
                assert f"conveyor stopped {kind.key}" in json.dumps(sent["body"])
                assert route.calls[0].request.headers["Authorization"].startswith("Basic ")

            restarted = await post(client, kind, kind.send(kind.key, "To Analyse", None))
            assert restarted["outcome"] == "started"
            await agent_running(svc, kind.key)
            gone = await post(client, kind, kind.delete(kind.key))
            assert gone["outcome"] == "stop_requested"
            fresh = await until_stage(svc, kind.key, Stage.CANCELLED)
            assert fresh.id != done.id
            reasons = [s.reason for s in await svc.store.run_read(_stops, fresh.id)]
            assert reasons == ["ticket_deleted"]


async def test_linear_start_stop_reset_redelivery_and_delete(tmp_path: Path) -> None:
    await run_the_stop_plane(tmp_path, LINEAR)


async def test_jira_start_stop_reset_redelivery_and_delete(tmp_path: Path) -> None:
    await run_the_stop_plane(tmp_path, JIRA)


async def test_plane_linear_and_jira_side_by_side_without_crosstalk(tmp_path: Path) -> None:

    with respx.mock(assert_all_called=False, assert_all_mocked=False) as router:
        comment_routes(router)
        async with served(tmp_path, [LINEAR, JIRA], plane=True) as (client, svc):
            for kind in (LINEAR, JIRA):
                assert (await post(client, kind, kind.send(kind.key, "To Analyse", None)))[
                    "outcome"
                ] == "started"
            assert (await plane_start(client))["outcome"] == "started"
            tasks = {k: await agent_running(svc, k) for k in ("ENG-7", "OPS-9", "PROJ-7")}
            assert {t.repo for t in tasks.values()} == {"linear-app", "jira-app", "plane-app"}
            assert {t.tracker for t in tasks.values()} == {"linear", "jira", "plane"}

            await post(client, JIRA, JIRA.send("OPS-9", "STOP", None))
            await until_stage(svc, "OPS-9", Stage.CANCELLED)
            for ref in ("ENG-7", "PROJ-7"):
                task = await task_of(svc, ref)
                assert task.stage is Stage.ANALYSIS and Path(task.worktree_path or "").is_dir()
            # A Linear STOP names ENG-7 only: the Plane and Jira tasks are not touched.
            await post(client, LINEAR, LINEAR.send("ENG-7", "STOP", None))
            await until_stage(svc, "ENG-7", Stage.CANCELLED)
            assert (await task_of(svc, "PROJ-7")).stage is Stage.ANALYSIS


async def plane_start(client: httpx.AsyncClient) -> Any:
    """A signed Plane "To Analyse" for PROJ-7 (the Plane repo of a mixed setup)."""
    state_id, group = STATES["To Analyse"]
    body = json.dumps(
        build_v1_payload(
            issue_id="20617384-0d13-472c-a860-e7f89295b2f5",
            project_id=PROJECT,
            sequence_id=7,
            title="Plane ticket",
            state_id=state_id,
            state_name="To Analyse",
            state_group=group,
            old_state_id=None,
            actor_id="196f02c6-b57b-497f-bd05-8bb8840a685d",
            actor_name="ada",
            updated_at="2026-12-02T10:00:00.000000Z",
        )
    ).encode()
    headers = {"X-Plane-Signature": sign(SECRET, body), "X-Plane-Event": "issue"}
    return (await client.post("/webhooks/plane", content=body, headers=headers)).json()


def _jobs(conn: Any, task_id: int) -> Any:
    from state.jobs import jobs_for_task

    return jobs_for_task(conn, task_id)


def _stops(conn: Any, task_id: int) -> Any:
    from state.stops import stops_for_task

    return stops_for_task(conn, task_id)


def _called(route: respx.Route, times: int) -> Callable[[], Any]:
    async def check() -> bool:
        return route.call_count == times

    return check
