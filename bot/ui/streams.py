"""Server-sent events: `GET /events` (the change feed) and `GET /ui/tasks/{ref}/log`
(the running agent's log as it grows).

Each stream ends by itself after `STREAM_SECONDS` (the browser's EventSource reconnects
at once, sending `Last-Event-ID`), and at once when the server starts shutting down
(`end_streams`), so an open dashboard never holds a shutdown up; a comment line every
`KEEPALIVE_SECONDS` keeps proxies from closing it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bot.api.http import error, services
from bot.services import Services
from bot.ui.feed import Feed
from state.jobs import jobs_for_task
from state.models import JOB_TERMINAL, Job
from state.store import find_task

STREAM_SECONDS = 15.0
KEEPALIVE_SECONDS = 10.0
LOG_POLL_SECONDS = 0.25
LOG_STATUS_SECONDS = 1.0
FIRST_TAIL_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
RETRY_MS = 500
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
NO_SUCH_TASK = "no task matches '{ref}' (try a task id, an issue id or a key like PROJ-42)"


def feed_of(svc: Services) -> Feed:
    if svc.feed is None:
        svc.feed = Feed(svc.store)
    return svc.feed


async def end_streams(app: Any) -> None:
    """Before the server waits for its connections to close: end every open stream
    (`bot.serve` calls this when it starts shutting down)."""
    svc = getattr(getattr(app, "state", None), "services", None)
    feed = getattr(svc, "feed", None)
    if isinstance(feed, Feed):
        await feed.end_streams()


async def events(request: Request) -> Response:
    """The change feed as SSE; `Last-Event-ID` (header, or `?last_event_id=`) resumes."""
    feed = feed_of(services(request))
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return StreamingResponse(
        _event_frames(feed, last), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def _event_frames(feed: Feed, last: str | None) -> AsyncIterator[str]:
    deadline = time.monotonic() + STREAM_SECONDS
    async with feed.subscription(last) as sub:
        yield f"retry: {RETRY_MS}\n: conveyor events {feed.last_id}\n\n"
        while (left := deadline - time.monotonic()) > 0 and not feed.ending:
            batch = await sub.next(min(KEEPALIVE_SECONDS, left))
            if not batch:
                yield ": keepalive\n\n"
            for event in batch:
                yield event.frame()


async def log_stream(request: Request) -> Response:
    """`?job=N` (default: the task's latest job with a log): its log from the last 64 KiB
    on (or from the byte offset in `Last-Event-ID`), then what it appends, then `end`
    once the job has finished and everything is sent."""
    svc = services(request)
    ref = request.path_params["ref"]
    raw_job = request.query_params.get("job", "").strip()
    if raw_job and not raw_job.isdigit():
        return error(400, f"job must be a job id (digits), got {raw_job[:50]!r}")
    job_id = int(raw_job) if raw_job else None
    job = await svc.store.run_read(_job_of, ref, job_id) if len(ref) <= 200 else None
    if job is None:
        return error(404, NO_SUCH_TASK.format(ref=ref[:200]) + " (or it has no such job)")
    path = _log_path(svc, job)
    if path is None:
        return error(404, f"job {job.id} has no log yet")
    last = request.headers.get("last-event-id", "").strip()
    offset = int(last) if last.isdigit() else None
    frames = _log_frames(svc, job, path, offset)
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


def _job_of(conn: Connection, ref: str, job_id: int | None) -> Job | None:
    task = find_task(conn, ref)
    if task is None:
        return None
    found = jobs_for_task(conn, task.id)
    if job_id is not None:
        return next((j for j in found if j.id == job_id), None)
    logged = [j for j in found if j.log_path]
    return logged[-1] if logged else None


def _log_path(svc: Services, job: Job) -> Path | None:
    """The job's log file, never one outside `<data_dir>/logs`."""
    if not job.log_path:
        return None
    path = Path(job.log_path).resolve()
    return path if path.is_relative_to(svc.data_dir / "logs") else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read(path: Path, start: int, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            return handle.read(limit)
    except OSError:
        return b""


async def _log_frames(
    svc: Services, job: Job, path: Path, offset: int | None
) -> AsyncIterator[str]:
    secrets = [s for s in svc.settings.secrets() if len(s) >= 4]
    size = await asyncio.to_thread(_size, path)
    position = offset if offset is not None else max(0, size - FIRST_TAIL_BYTES)
    position = min(position, size)
    yield f"retry: {RETRY_MS}\n\n"
    deadline = time.monotonic() + STREAM_SECONDS
    last_status = 0.0
    last_sent = time.monotonic()
    finished = job.status in JOB_TERMINAL
    feed = feed_of(svc)
    while time.monotonic() < deadline and not feed.ending:
        chunk = await asyncio.to_thread(_read, path, position, CHUNK_BYTES)
        if chunk:
            cut = chunk.rfind(b"\n") + 1 if len(chunk) == CHUNK_BYTES else len(chunk)
            chunk = chunk[: cut or len(chunk)]
            position += len(chunk)
            text = chunk.decode("utf-8", errors="replace")
            for secret in secrets:
                text = text.replace(secret, "[redacted]")
            yield f"id: {position}\nevent: log\ndata: {json.dumps({'text': text})}\n\n"
            last_sent = time.monotonic()
            continue
        if finished:
            yield f"id: {position}\nevent: end\ndata: {json.dumps({'job': job.id})}\n\n"
            return
        now = time.monotonic()
        if now - last_status >= LOG_STATUS_SECONDS:
            last_status = now
            current = await svc.store.run_read(_job_of, str(job.task_id), job.id)
            finished = current is None or current.status in JOB_TERMINAL
            if finished:
                continue  # read what the job wrote last, then end
        if now - last_sent >= KEEPALIVE_SECONDS:
            yield ": keepalive\n\n"
            last_sent = now
        await asyncio.sleep(LOG_POLL_SECONDS)


routes = [
    Route("/events", events, methods=["GET"]),
    Route("/ui/tasks/{ref}/log", log_stream, methods=["GET"]),
]
