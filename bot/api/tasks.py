"""Read-only views of the work: GET /queue, GET /tasks, GET /tasks/{ref}. No secrets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api import views
from bot.api.http import error, services
from bot.intake.health import TrackerHealth
from bot.services import Services
from state.hosts import host_steps_for_task
from state.jobs import jobs_for_task
from state.queue import queue_summary
from state.refs import Ambiguous, resolve_task
from state.stops import cleanups_for_task, stops_for_task
from state.store import events_for_task, recent_tasks

MAX_REF_CHARS = 200  # the store's key and issue id columns
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
BAD_LIMIT = "limit must be an integer from 1 to {max}, got {given!r}"
NO_SUCH_TASK = "no task matches '{ref}' (try a task id, an issue id or a key like PROJ-42)"
AMBIGUOUS = "'{ref}' names tasks of several trackers: {candidates}; name the tracker, e.g. {first}"


async def queue(request: Request) -> Response:
    """The contract's /queue document: counts, running jobs and the stop plane's state."""
    svc = services(request)
    stop = svc.settings.stop
    doc = await svc.store.run_read(
        queue_summary, stop_enabled=stop.enabled, stop_repos=stop.repos, now=svc.clock.now()
    )
    doc["reconcile"] = reconcile_block(svc)
    return JSONResponse(doc)


def reconcile_block(svc: Services) -> dict[str, object]:
    """Reconciliation health per tracker with an API, as this process saw it."""
    now = svc.clock.now()
    projects = svc.settings.projects()
    trackers = {
        name: svc.reconcile.get(name, TrackerHealth()).as_json(now)
        for name, tracker in sorted(svc.trackers.items())
        if tracker.has_api and projects.get(name)
    }
    settings = svc.settings.reconcile
    return {
        "enabled": settings.enabled,
        "interval_seconds": settings.interval_seconds,
        "trackers": trackers,
    }


async def list_tasks(request: Request) -> Response:
    """The most recently changed tasks, newest first (`?limit=`, 1 to 500)."""
    limit = parse_limit(request.query_params.get("limit"))
    if limit is None:
        given = request.query_params.get("limit")
        return error(400, BAD_LIMIT.format(max=MAX_LIMIT, given=given))
    recent = await services(request).store.run_read(recent_tasks, limit)
    return JSONResponse({"tasks": [views.task_summary(task) for task in recent]})


async def show_task(request: Request) -> Response:
    """One task by id, issue id or key, with its jobs, stops, audit trail and cleanups."""
    ref = request.path_params["ref"]
    too_long = len(ref) > MAX_REF_CHARS  # no key is longer: nothing to look up
    detail = None if too_long else await services(request).store.run_read(task_detail, ref)
    if detail is None:
        return error(404, NO_SUCH_TASK.format(ref=ref[:MAX_REF_CHARS]))
    if isinstance(detail, Ambiguous):
        return ambiguous(detail)
    return JSONResponse(detail)


def ambiguous(found: Ambiguous) -> Response:
    """409 naming the tracker-qualified refs the caller can choose from."""
    names = list(found.candidates)
    message = AMBIGUOUS.format(ref=found.ref[:200], candidates=", ".join(names), first=names[0])
    return error(409, message, candidates=names)


def parse_limit(raw: str | None) -> int | None:
    """The `limit` query parameter, or None when it is not an integer in range."""
    if raw is None:
        return DEFAULT_LIMIT
    text = raw.strip()
    if not text.isdigit() or len(text) > len(str(MAX_LIMIT)):
        return None
    limit = int(text)
    return limit if 1 <= limit <= MAX_LIMIT else None


def task_detail(conn: Connection, ref: str) -> dict[str, Any] | Ambiguous | None:
    """Everything GET /tasks/{ref} shows, read in one transaction."""
    task = resolve_task(conn, ref)
    if task is None or isinstance(task, Ambiguous):
        return task
    handed = host_steps_for_task(conn, task.id)
    return {
        "task": views.task_view(task),
        "jobs": [views.job_view(job) for job in jobs_for_task(conn, task.id)],
        "stops": [
            views.stop_view(stop, [h for h in handed if h.stop_id == stop.id])
            for stop in stops_for_task(conn, task.id)
        ],
        "audit": [views.event_view(event) for event in events_for_task(conn, task.id)],
        "cleanups": [views.cleanup_view(item) for item in cleanups_for_task(conn, task.id)],
    }


routes = [
    Route("/queue", queue, methods=["GET"]),
    Route("/tasks", list_tasks, methods=["GET"]),
    Route("/tasks/{ref}", show_task, methods=["GET"]),
]
