"""What the intake and queue acceptance tests share: settings for one Plane project
mapped to a real git repo, signed deliveries, and a look at every table of the store."""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, select

from bot.app import create_app
from bot.services import Services
from bot.settings import Settings, settings_from_dict
from integrations.trackers.plane import webhook as plane
from state.schema import metadata
from tests.apptools import app_client
from tests.gitrepo import make_repo

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "plane"

SECRET = "plane_wh_5f1d0c0e9b7a4c3d8e2f6a1b0c9d8e7f"
PROJECT = "5c7db7b1-1256-4e76-bfdc-fb3b34bf0180"
ISSUE = "20617384-0d13-472c-a860-e7f89295b2f5"
BOT = "b9d23dcd-af28-4b51-9e29-459ae23d6d64"
STOP_STATE = "e14a6af2-d4b4-42dc-8e20-d57645086590"
TO_ANALYSE_STATE = "c490adf0-9b37-4095-b695-b1523c9091f0"
PLANE_URL = "http://plane.test"
STATES_PATH = f"/api/v1/workspaces/acme/projects/{PROJECT}/states/"
PROJECT_PATH = f"/api/v1/workspaces/acme/projects/{PROJECT}/"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return loaded


def sample_json(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def make_settings(
    tmp_path: Path,
    database_url: str | None = None,
    *,
    identifiers: Mapping[str, str] | None = None,
    **sections: Any,
) -> Settings:
    """One repo `app` (a real clone) mapped to the samples' project; `sections` override.

    The project's identifier (PROJ) is configured unless `identifiers` says otherwise."""
    spec, _ = make_repo(tmp_path)
    base: dict[str, Any] = {
        "server": {
            "database_url": database_url or f"sqlite:///{tmp_path / 'conveyor.db'}",
            "data_dir": str(tmp_path / "data"),
        },
        "trackers": {
            "plane": {
                "webhook_secret": SECRET,
                "bot_actor_id": BOT,
                "project_identifiers": dict(
                    {PROJECT: "PROJ"} if identifiers is None else identifiers
                ),
            }
        },
        "repos": [{"name": "app", "path": str(spec.path), "tracker_project": PROJECT}],
    }
    return settings_from_dict(_merged(base, sections))


def _merged(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, configure: Callable[[Services], None] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """The real app (no workers: intake only) and the services it made."""
    app = create_app(settings, start_background=False, configure=configure)
    async with app_client(app) as client:
        yield client, app.state.services


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body as Plane's sender makes it: json.dumps, UTF-8."""
    return json.dumps(payload).encode()


async def deliver(
    client: httpx.AsyncClient,
    payload: Mapping[str, Any] | bytes,
    *,
    secret: str = SECRET,
    delivery: str | None = None,
    event: str = "issue",
    signature: str | None = None,
) -> httpx.Response:
    """POST a signed delivery, with a fresh X-Plane-Delivery as Plane sends on every try."""
    body = payload if isinstance(payload, bytes) else encode(payload)
    headers = {
        "Content-Type": "application/json",
        "X-Plane-Event": event,
        "X-Plane-Delivery": delivery or str(uuid.uuid4()),
        "X-Plane-Signature": plane.sign(secret, body) if signature is None else signature,
    }
    if signature == "":
        del headers["X-Plane-Signature"]
    return await client.post("/webhooks/plane", content=body, headers=headers)


def later(payload: dict[str, Any], stamp: str) -> dict[str, Any]:
    """The same move made again at another time: new content, so not a duplicate."""
    moved = copy.deepcopy(payload)
    moved["data"]["updated_at"] = stamp
    return moved


def everything(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to show that a request changed nothing."""
    return {
        name: [tuple(row) for row in conn.execute(select(table))]
        for name, table in metadata.tables.items()
    }


def snapshot(svc: Services) -> dict[str, list[tuple[Any, ...]]]:
    return svc.store.query(everything)
