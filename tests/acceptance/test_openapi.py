"""GET /openapi.json describes every route, and the real app keeps to it: schemathesis
sends generated requests to every operation and checks each answer against the document."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.routing import Route

from bot.api.meta import openapi_document
from bot.app import all_routes, create_app
from bot.settings import settings_from_dict
from state.db import make_engine, upgrade
from state.models import NewTask
from state.store import Store, insert_task
from tests.apptools import app_client

ADMIN_TOKEN = "openapi-admin-token"
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
POSITIVE = schemathesis.GenerationMode.POSITIVE
NEGATIVE = schemathesis.GenerationMode.NEGATIVE
METHODS = {"get", "post", "put", "patch", "delete"}
# An open-ended SSE stream never ends for a buffering client: tests/acceptance/test_events.py
# drives it with a streaming one.
STREAMS = {"GET /events"}


def route_table() -> set[tuple[str, str]]:
    """(path, method) of every route the app serves (HEAD comes with GET)."""
    table = set()
    for route in all_routes():
        assert isinstance(route, Route)
        table |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
    return table


def documented() -> set[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = openapi_document()["paths"]
    return {(path, m) for path, item in paths.items() for m in item if m in METHODS}


def make_app(tmp_path: Path) -> Starlette:
    settings = settings_from_dict(
        {
            "server": {
                "database_url": f"sqlite:///{tmp_path / 'conveyor.db'}",
                "data_dir": str(tmp_path / "data"),
                "admin_token": ADMIN_TOKEN,
            },
            "trackers": {"plane": {"webhook_secret": "plane_wh_openapi"}},
        }
    )
    return create_app(settings, start_background=False)


def test_the_document_lists_every_route_and_no_other() -> None:
    assert documented() == route_table()


def test_the_queue_schema_is_the_one_that_ships() -> None:
    text = (resources.files("bot.api") / "schemas" / "queue.schema.json").read_text("utf-8")
    shipped = json.loads(text)
    queue = openapi_document()["components"]["schemas"]["Queue"]
    assert queue["required"] == shipped["required"]
    assert set(queue["properties"]) == set(shipped["properties"])
    assert "$ref" not in json.dumps(queue)  # its $defs are inlined


def test_the_document_is_valid_openapi_3_1() -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    schema.validate()
    assert openapi_document()["openapi"].startswith("3.1")


def test_the_admin_stop_names_both_ways_to_present_the_token() -> None:
    doc = openapi_document()
    stop = doc["paths"]["/tasks/{ref}/stop"]["post"]
    assert stop["security"] == [{"AdminToken": []}, {"Bearer": []}]
    assert set(stop["responses"]) == {
        "200",
        "202",
        "400",
        "401",
        "403",
        "404",
        "408",
        "409",
        "413",
        "429",
    }
    assert "required" not in stop["requestBody"]["content"]["application/json"]["schema"]
    schemes = doc["components"]["securitySchemes"]
    token = schemes["AdminToken"]
    assert (token["type"], token["in"], token["name"]) == ("apiKey", "header", "X-Admin-Token")
    assert schemes["Bearer"]["scheme"] == "bearer"
    webhook = doc["paths"]["/webhooks/{tracker}"]["post"]
    assert set(webhook["responses"]) == {"202", "400", "401", "404", "408", "413"}


async def test_the_app_serves_the_document_and_metrics(tmp_path: Path) -> None:
    async with app_client(make_app(tmp_path)) as client:
        served = await client.get("/openapi.json")
        metrics = await client.get("/metrics")
    assert served.status_code == 200 and served.json() == openapi_document()
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    """The document as the running app serves it, bound to that app (lifespan started)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(tmp_path))
    try:
        yield schema
    finally:
        shutdown_lifespans()


def test_generated_requests_get_documented_answers_and_never_a_5xx(
    api: schemathesis.BaseSchema,
) -> None:
    operations = [result.ok() for result in api.get_all_operations()]
    # schemathesis leaves out the document it was loaded from.
    labels = {f"{method.upper()} {path}" for path, method in route_table()}
    assert {op.label for op in operations} == labels - {"GET /openapi.json"}
    for operation in operations:
        if operation.label in STREAMS:
            continue
        exercise(operation, POSITIVE)
        if takes_input(operation):
            exercise(operation, NEGATIVE)  # bad input: a 4xx that says so, never a 5xx
    # With the right token the admin stop gets past auth, to its 400/404 answers.
    stop = api["/tasks/{ref}/stop"]["POST"]
    for mode in (POSITIVE, NEGATIVE):
        exercise(stop, mode, headers={"X-Admin-Token": ADMIN_TOKEN})


def test_the_admin_stop_body_never_gets_a_5xx_on_a_task_that_exists(tmp_path: Path) -> None:
    """With a real task behind the ref, every generated body reaches the body's checks:
    none, `{}` and `{"reason"}` are accepted (200/202), anything else a 4xx."""
    engine = make_engine(f"sqlite:///{tmp_path / 'conveyor.db'}")
    upgrade(engine)
    with Store(engine).begin() as conn:
        new = NewTask(tracker="plane", issue_id=str(uuid.uuid4()), key="PROJ-42", repo="app")
        insert_task(conn, new, time.time())
    engine.dispose()
    schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(tmp_path))
    try:
        stop = schema["/tasks/{ref}/stop"]["POST"]
        for mode in (POSITIVE, NEGATIVE):
            exercise_on(stop, mode, {"X-Admin-Token": ADMIN_TOKEN}, "PROJ-42")
    finally:
        shutdown_lifespans()


def takes_input(operation: schemathesis.APIOperation) -> bool:
    parts = (operation.path_parameters, operation.query, operation.headers, operation.body)
    return any(len(part) for part in parts)


def exercise(
    operation: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    headers: dict[str, str] | None = None,
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def exercise_on(
    operation: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    headers: dict[str, str],
    ref: str,
) -> None:
    """`exercise`, with the path's `ref` fixed to a task that exists."""
    strategy = operation.as_strategy(generation_mode=mode).map(lambda c: _with_ref(c, ref))

    @given(case=strategy)
    @settings(
        max_examples=50,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def _with_ref(case: schemathesis.Case, ref: str) -> schemathesis.Case:
    case.path_parameters = {**(case.path_parameters or {}), "ref": ref}
    return case
