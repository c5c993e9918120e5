"""GET /metrics (Prometheus text) and GET /openapi.json (this API, described)."""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.http import services
from bot.metrics import Metrics


async def metrics(request: Request) -> Response:
    """The app's counters, histograms and store gauges, read now."""
    svc = services(request)
    if svc.metrics is None:  # an app configured without them (tests): made on first use
        svc.metrics = Metrics(svc.store)
    body = await svc.metrics.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of every endpoint."""
    return JSONResponse(openapi_document())


@functools.cache
def openapi_document() -> dict[str, Any]:
    """`bot/api/schemas/openapi.json` with the /queue schema (the one that ships) put in."""
    doc = _schema_file("openapi.json")
    doc["components"]["schemas"]["Queue"] = queue_component(_schema_file("queue.schema.json"))
    return doc


def queue_component(schema: dict[str, Any]) -> dict[str, Any]:
    """A standalone JSON Schema as an OpenAPI component: its `$defs` inlined (a `#/$defs`
    pointer would resolve against the OpenAPI document), `$schema`/`$id` dropped."""
    defs = schema.get("$defs", {})
    body = {k: v for k, v in schema.items() if k not in ("$schema", "$id", "$defs")}
    inlined: dict[str, Any] = _inline(body, defs)
    return inlined


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    target = node.get("$ref", "")
    if isinstance(target, str) and target.startswith("#/$defs/"):
        return _inline(copy.deepcopy(defs[target.removeprefix("#/$defs/")]), defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _schema_file(name: str) -> dict[str, Any]:
    text = (resources.files("bot.api") / "schemas" / name).read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


routes = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
