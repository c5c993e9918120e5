"""`POST /tasks/{ref}/stop`: the operator's way into the stop plane."""

from __future__ import annotations

import hmac
import logging
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.http import error, services
from bot.api.tasks import ambiguous
from bot.stopplane import intent as stopplane
from state.refs import Ambiguous, resolve_task
from state.store import original_key

log = logging.getLogger(__name__)

NO_TOKEN = (
    "no admin token is configured (server.admin_token / CONVEYOR_ADMIN_TOKEN); "
    "admin stop is disabled"
)
BAD_TOKEN = "missing or wrong admin token (X-Admin-Token or Authorization: Bearer)"
NO_SUCH_TASK = "no task matches '{ref}' (try a task id, an issue id or a key like PROJ-42)"
MAX_REASON = 500
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,200}$")

STATUS = {
    "stop_requested": (202, "STOP_REQUESTED"),
    "stop_deferred": (202, "STOP_DEFERRED"),
    "noop_already_terminal": (200, "ALREADY_TERMINAL"),
    "not_running": (200, "NOT_RUNNING"),
}


def presented_token(request: Request) -> str:
    header = request.headers.get("x-admin-token")
    if header:
        return header.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def authorise(request: Request) -> Response | None:
    """None when the admin token matches (constant-time), else the 403/401 answer."""
    expected = services(request).settings.server.admin_token.get_secret_value()
    if not expected:
        return error(403, NO_TOKEN)
    if not hmac.compare_digest(presented_token(request).encode(), expected.encode()):
        return error(401, BAD_TOKEN)
    return None


async def stop_task(request: Request) -> Response:
    """Stop a task now (or defer it, inside its critical window)."""
    if (refused := authorise(request)) is not None:
        return refused
    svc = services(request)
    ref = request.path_params["ref"]
    request_id = request.headers.get("x-request-id") or None
    if request_id is not None and not _REQUEST_ID.match(request_id):
        return error(400, "X-Request-Id must be 1-200 characters of letters, digits and ._:/=+-")
    reason = await _reason(request)
    if isinstance(reason, Response):
        return reason
    task = await svc.store.run_read(resolve_task, ref) if len(ref) <= 200 else None
    if task is None:
        return error(404, NO_SUCH_TASK.format(ref=ref[:200]))
    if isinstance(task, Ambiguous):
        return ambiguous(task)
    result = await stopplane.request_stop(
        svc, task, requested_by="admin", reason=reason, correlation=request_id
    )
    status, word = STATUS[result.outcome]
    body = {"status": word, "task": original_key(result.task), "stop_id": result.stop_id}
    headers = {"X-Request-Id": request_id} if request_id else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _reason(request: Request) -> str | Response:
    """The optional JSON body {"reason": "..."}."""
    raw = await request.body()
    if not raw.strip():
        return "stopped by an operator"
    try:
        import json

        doc = json.loads(raw)
    except ValueError:
        return error(400, 'body must be JSON like {"reason": "text"} or empty')
    reason = doc.get("reason") if isinstance(doc, dict) else None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        return error(400, f'"reason" must be a non-empty string of at most {MAX_REASON} characters')
    return reason.strip()


routes = [Route("/tasks/{ref}/stop", stop_task, methods=["POST"])]
