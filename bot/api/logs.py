"""`GET /tasks/{ref}/logs?job=N&tail=K&offset=B`: an agent's log as text/plain.

Without `job`, the task's job that runs (or is next to run) an agent process, else its
latest job that has a log; a job waiting to start has an empty log so far. `tail=K`
gives the last K lines, `offset=B` what was written from byte B on (how `conveyor logs
--follow` keeps up), neither the last MiB. Headers say whose log it is and where the
next read starts: `X-Conveyor-Task`, `X-Conveyor-Job`, `X-Conveyor-Job-Status`,
`X-Conveyor-Log-Path`, `X-Conveyor-Log-Size` (the offset after this answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.api.http import error, services
from bot.engine import agent_logs
from bot.gitops import off_loop
from state.jobs import jobs_for_task
from state.models import Job, JobStatus, Stage
from state.store import find_task, original_key

MAX_BYTES = 1 << 20
MAX_TAIL = 10_000
_LIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
NO_SUCH_TASK = "no task matches '{ref}' (try a task id, an issue id or a key like PROJ-42)"
NO_SUCH_JOB = "task {key} has no job {job} (its jobs: {jobs})"
NO_LOG = "job {job} of task {key} has no log ({why})"
BAD_NUMBER = "{name} must be {what}, got {given!r}"


@dataclass(frozen=True)
class Found:
    key: str
    job: Job | None
    jobs: list[int]


def _find(conn: Connection, ref: str, job_id: int | None) -> Found | None:
    task = find_task(conn, ref)
    if task is None:
        return None
    found = jobs_for_task(conn, task.id)
    if job_id is not None:
        job = next((j for j in found if j.id == job_id), None)
    else:
        job = _default_job(found)
    return Found(original_key(task.key), job, [j.id for j in found])


def _default_job(found: list[Job]) -> Job | None:
    """The job running (or next to run) an agent process, else the latest with a log."""
    live = [j for j in found if j.status in _LIVE and j.stage != Stage.MERGE.value]
    logged = [j for j in found if j.log_path]
    for group in (live, logged, found):
        if group:
            return group[-1]
    return None


def _number(request: Request, name: str, low: int, high: int) -> int | None | Response:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    text = raw.strip()
    if not text.isdigit() or not low <= int(text) <= high:
        return error(
            400, BAD_NUMBER.format(name=name, what=f"an integer from {low} to {high}", given=raw)
        )
    return int(text)


async def task_log(request: Request) -> Response:
    svc = services(request)
    ref = request.path_params["ref"]
    numbers = {
        "job": _number(request, "job", 1, 2**62),
        "tail": _number(request, "tail", 1, MAX_TAIL),
        "offset": _number(request, "offset", 0, 2**62),
    }
    for value in numbers.values():
        if isinstance(value, Response):
            return value
    job_id, lines, offset = (v if isinstance(v, int) else None for v in numbers.values())
    if lines is not None and offset is not None:
        return error(400, "give tail or offset, not both")
    found = await svc.store.run_read(_find, ref, job_id) if len(ref) <= 200 else None
    if found is None:
        return error(404, NO_SUCH_TASK.format(ref=ref[:200]))
    job = found.job
    if job is None:
        jobs = ", ".join(map(str, found.jobs)) or "none yet"
        return error(404, NO_SUCH_JOB.format(key=found.key, job=job_id or "", jobs=jobs))
    path = _log_file(svc.data_dir, job)
    if isinstance(path, str):
        return error(404, NO_LOG.format(job=job.id, key=found.key, why=path))
    body, end = (b"", 0) if path is None else await off_loop(_read, path, lines, offset)
    headers = {
        "X-Conveyor-Task": found.key,
        "X-Conveyor-Job": str(job.id),
        "X-Conveyor-Job-Status": job.status.value,
        "X-Conveyor-Log-Path": "" if path is None else str(path),
        "X-Conveyor-Log-Size": str(end),
    }
    return Response(body, media_type="text/plain; charset=utf-8", headers=headers)


def _log_file(data_dir: Path, job: Job) -> Path | str | None:
    """The job's log file; None while it waits to start (its log is empty so far); else
    why there is none. Never a file outside `<data_dir>/logs`."""
    if not job.log_path:
        if job.status in _LIVE:
            return None  # running: spawned a moment ago, the path is recorded next
        return f"its {job.stage} step ran no agent process"
    path = Path(job.log_path).resolve()
    if not path.is_relative_to(data_dir / "logs"):
        return "its recorded log path is outside the data directory"
    return path


def _read(path: Path, lines: int | None, offset: int | None) -> tuple[bytes, int]:
    end = agent_logs.size(path)
    if offset is not None:
        return agent_logs.read_from(path, min(offset, end), max_bytes=MAX_BYTES)
    if lines is not None:
        return agent_logs.tail(path, lines, max_bytes=MAX_BYTES, end=end), end
    return agent_logs.read_from(path, max(0, end - MAX_BYTES), max_bytes=MAX_BYTES)


routes = [Route("/tasks/{ref}/logs", task_log, methods=["GET"])]
