"""`GET /ui` (the queue) and `GET /ui/tasks/{ref}` (one task): server-rendered pages on
the same data as `GET /queue` and `GET /tasks/{ref}`. With `?part=live` only the part
that changes is sent: the page's script swaps it in when `/events` says something
changed. Without JS the page reloads itself every few seconds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bot.api import views
from bot.api.http import services
from bot.api.tasks import reconcile_block, task_detail
from bot.ui import render
from bot.ui.access import SECURITY_HEADERS
from state.models import TERMINAL, Stage, step_rank
from state.queue import iso, queue_summary
from state.schema import jobs, stop_records
from state.store import recent_tasks

RECENT_TASKS = 100
RETRY_PATH = "/tasks/{ref}/retry"


def html(body: str, status: int = 200) -> HTMLResponse:
    headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
    headers["Cache-Control"] = "no-store"
    return HTMLResponse(body, status_code=status, headers=headers)


async def root(request: Request) -> Response:
    """`/` → `/ui`, keeping the query (a first visit's `?token=`)."""
    query = request.url.query
    return RedirectResponse("/ui" + (f"?{query}" if query else ""), status_code=307)


async def queue_page(request: Request) -> Response:
    svc = services(request)
    stop = svc.settings.stop
    doc = await svc.store.run_read(
        queue_read, stop_enabled=stop.enabled, stop_repos=list(stop.repos)
    )
    doc["reconcile"] = reconcile_block(svc)
    doc["now"] = iso(svc.clock.now())
    if request.query_params.get("part") == "live":
        return html(render.render("_queue_live.html", **doc))
    return html(render.render("queue.html", **doc))


def queue_read(conn: Connection, *, stop_enabled: bool, stop_repos: list[str]) -> dict[str, Any]:
    """The /queue document, the recent tasks per stage, and the task ids its rows link to."""
    doc = queue_summary(conn, stop_enabled=stop_enabled, stop_repos=stop_repos)
    job_ids = [r["job"] for r in doc["running"]]
    job_tasks = dict(
        conn.execute(select(jobs.c.id, jobs.c.task_id).where(jobs.c.id.in_(job_ids))).all()
    )
    for row in doc["running"]:
        row["task_id"] = job_tasks.get(row["job"])
    stop_block = doc["stop"]
    stop_ids = [
        r["stop_id"]
        for name in ("deferred", "in_progress", "recent")
        for r in stop_block[name]
        if r.get("stop_id")
    ]
    stop_tasks = dict(
        conn.execute(
            select(stop_records.c.id, stop_records.c.task_id).where(stop_records.c.id.in_(stop_ids))
        ).all()
    )
    for name in ("deferred", "in_progress", "recent"):
        for r in stop_block[name]:
            r["task_id"] = stop_tasks.get(r.get("stop_id"))
    recent = [views.task_summary(t) | {"title": t.title} for t in recent_tasks(conn, RECENT_TASKS)]
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for task in recent:
        by_stage.setdefault(task["stage"], []).append(task)
    doc["by_stage"] = [(stage, by_stage[stage]) for stage in doc["tasks"] if stage in by_stage]
    return doc


async def task_page(request: Request) -> Response:
    svc = services(request)
    ref = request.path_params["ref"]
    detail = await svc.store.run_read(task_detail, ref) if len(ref) <= 200 else None
    if detail is None:
        body = render.render("missing.html", ref=ref[:200])
        return html(body, status=404)
    if not isinstance(detail, dict):  # a bare ref that several trackers' tasks share
        candidates = list(getattr(detail, "candidates", ()))
        body = render.render("ambiguous.html", ref=ref[:200], candidates=candidates)
        return html(body, status=409)
    task = detail["task"]
    live = Stage(task["stage"]) not in TERMINAL
    logged = [j for j in detail["jobs"] if j.get("log_path")]
    log_job = logged[-1] if logged else None
    for stop in detail["stops"]:
        stop["steps"] = dict(sorted(stop["steps"].items(), key=lambda item: _step_rank(item[0])))
    for job in detail["jobs"]:
        job["duration"] = render.seconds_between(job.get("started_at"), job.get("finished_at"))
    context = {
        **detail,
        "live": live,
        "retry": task["stage"] == Stage.BLOCKED.value and _has_route(request, RETRY_PATH),
        "log_job": log_job,
        "timeline": render.timeline(detail["audit"]),
        "now": iso(svc.clock.now()),
    }
    if request.query_params.get("part") == "live":
        return html(render.render("_task_live.html", **context))
    return html(render.render("task.html", **context))


def _step_rank(name: str) -> tuple[int, str]:
    return (step_rank(name), name)


def _has_route(request: Request, path: str) -> bool:
    return any(getattr(route, "path", None) == path for route in request.app.routes)


routes = [
    Route("/", root, methods=["GET"]),
    Route("/ui", queue_page, methods=["GET"]),
    Route("/ui/tasks/{ref}", task_page, methods=["GET"]),
]
