"""`POST /tasks/{ref}/retry`: a blocked task runs its blocked stage again (admin token)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.http import error, services
from bot.api.stop import authorise
from bot.engine.retrying import RetryResult, retry_blocked
from state.store import find_task, original_key

log = logging.getLogger(__name__)

NO_SUCH_TASK = "no task matches '{ref}' (try a task id, an issue id or a key like PROJ-42)"
NOT_BLOCKED = (
    "task {key} is {stage}, not blocked: only a blocked task can be retried "
    "(a finished or cancelled one starts afresh from its tracker)"
)
LEASE_BUSY = (
    "task {key} was blocked in deploy and another task holds repo {repo}'s merge lease; "
    "retry once that task has finished"
)
REFUSED = "task {key} cannot be retried: no blocked stage found ({stage})"


async def retry_task(request: Request) -> Response:
    if (refused := authorise(request)) is not None:
        return refused
    svc = services(request)
    ref = request.path_params["ref"]
    task = await svc.store.run_read(find_task, ref) if len(ref) <= 200 else None
    if task is None:
        return error(404, NO_SUCH_TASK.format(ref=ref[:200]))
    result = await svc.store.run_until_current(
        retry_blocked, task.id, svc.clock.now(), actor="admin"
    )
    if result is None:
        return error(404, NO_SUCH_TASK.format(ref=ref[:200]))
    if result.outcome != "queued":
        return error(409, _refusal(result), task=original_key(result.task.key))
    svc.wake_workers()
    key = original_key(result.task.key)
    log.info("retry queued", extra={"task": key, "stage": result.stage, "job": result.job_id})
    body = {"status": "RETRY_QUEUED", "task": key, "stage": result.stage, "job": result.job_id}
    return JSONResponse(body, status_code=202)


def _refusal(result: RetryResult) -> str:
    key = original_key(result.task.key)
    if result.outcome == "not_blocked":
        return NOT_BLOCKED.format(key=key, stage=result.task.stage.value)
    if result.outcome == "lease_busy":
        return LEASE_BUSY.format(key=key, repo=result.task.repo)
    return REFUSED.format(key=key, stage=result.stage or "no jobs")


routes = [Route("/tasks/{ref}/retry", retry_task, methods=["POST"])]
