"""`POST /reconcile`: a reconciliation pass now, over every tracker with an API, and
what it found (admin token)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.http import services
from bot.api.stop import authorise
from bot.intake.reconcile import reconcile_all


async def reconcile_now(request: Request) -> Response:
    """Run a pass now (backoff or not); 200 with each tracker's report."""
    if (refused := authorise(request)) is not None:
        return refused
    svc = services(request)
    reports = await reconcile_all(svc, force=True)
    return JSONResponse({"trackers": {r.tracker: r.as_json() for r in reports}})


routes = [Route("/reconcile", reconcile_now, methods=["POST"])]
