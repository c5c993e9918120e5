"""`POST /tasks/{ref}/stop`: the operator's way into the stop plane.

The admin token is checked first (a client that keeps presenting wrong ones is slowed
down: 429), then the task (404 whatever the body), then the optional body: none, `{}`
or `{"reason": "…"}`, read in chunks and abandoned past 64 KiB (413)."""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.bodies import BodyTooLarge, BodyTooSlow, read_limited
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
THROTTLED = "too many wrong admin tokens from this client; try again in {seconds} s"
NO_SUCH_TASK = "no task matches '{ref}' (try a task id, an issue id or a key like PROJ-42)"
BAD_BODY = 'body must be empty, {{}} or JSON like {{"reason": "text"}}: {why}'
TOO_LARGE = "body is larger than {limit} bytes; refusing"
DEFAULT_REASON = "stopped by an operator"
MAX_REASON = 500
MAX_BODY_BYTES = 64 * 1024
MAX_REF_CHARS = 200
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
    """None when the admin token matches (constant-time), else the 403/401/429 answer.
    A right token always passes; wrong ones are counted per client."""
    svc = services(request)
    expected = svc.settings.server.admin_token.get_secret_value()
    if not expected:
        return error(403, NO_TOKEN)
    given = presented_token(request).encode("utf-8", "replace")
    if hmac.compare_digest(given, expected.encode()):
        return None
    client = request.client.host if request.client else "unknown"
    now = svc.clock.monotonic()
    throttle = svc.admin_throttle
    wait = throttle.retry_after(client, now)
    if wait is None:
        throttle.failed(client, now)
        _count(request, 401)
        return error(401, BAD_TOKEN)
    if throttle.first_refusal(client, now):
        log.warning(
            "admin authentication throttled",
            extra={"client": client, "action": request.url.path, "retry_after": wait},
        )
    _count(request, 429)
    answer = error(429, THROTTLED.format(seconds=wait))
    answer.headers["Retry-After"] = str(wait)
    return answer


def _count(request: Request, answer: int) -> None:
    metrics = services(request).metrics
    if metrics is not None:
        metrics.admin_refused(answer)


async def stop_task(request: Request) -> Response:
    """Stop a task now (or defer it, inside its critical window)."""
    if (refused := authorise(request)) is not None:
        return refused
    svc = services(request)
    ref = request.path_params["ref"]
    request_id = request.headers.get("x-request-id") or None
    if request_id is not None and not _REQUEST_ID.match(request_id):
        return error(400, "X-Request-Id must be 1-200 characters of letters, digits and ._:/=+-")
    task = await svc.store.run_read(resolve_task, ref) if len(ref) <= MAX_REF_CHARS else None
    if task is None:
        return error(404, NO_SUCH_TASK.format(ref=ref[:MAX_REF_CHARS]))
    if isinstance(task, Ambiguous):
        return ambiguous(task)
    reason = await _reason(request)
    if isinstance(reason, Response):
        return reason
    result = await stopplane.request_stop(
        svc, task, requested_by="admin", reason=reason, correlation=request_id
    )
    status, word = STATUS[result.outcome]
    body = {"status": word, "task": original_key(result.task), "stop_id": result.stop_id}
    headers = {"X-Request-Id": request_id} if request_id else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _reason(request: Request) -> str | Response:
    """The optional body: none, `{}` or `{"reason": "..."}` (the default reason else)."""
    try:
        raw = await read_limited(request, MAX_BODY_BYTES, _body_seconds(request))
    except BodyTooLarge:
        return error(413, TOO_LARGE.format(limit=MAX_BODY_BYTES))
    except (BodyTooSlow, ClientDisconnect):
        slow = error(408, "the body did not arrive in time")
        slow.headers["Connection"] = "close"  # the rest of the body is not awaited
        return slow
    if not raw.strip():
        return DEFAULT_REASON
    doc = _load(raw)
    if isinstance(doc, Response):
        return doc
    if not isinstance(doc, dict):
        return error(400, BAD_BODY.format(why="not a JSON object"))
    reason = doc.get("reason")
    if reason is None:
        return DEFAULT_REASON
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        why = f'"reason" must be a string of at most {MAX_REASON} characters'
        return error(400, BAD_BODY.format(why=why))
    return reason.strip() or DEFAULT_REASON


def _body_seconds(request: Request) -> float:
    return services(request).settings.server.body_timeout_seconds


def _load(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return error(400, BAD_BODY.format(why="not JSON"))
    except RecursionError:
        return error(400, BAD_BODY.format(why="nested too deeply"))


routes = [Route("/tasks/{ref}/stop", stop_task, methods=["POST"])]
