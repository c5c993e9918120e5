"""POST /webhooks/plane: verify, read, deduplicate, then hand the status to the domain.

Bad input is refused before anything is stored: an oversized body (413), no secret or a
bad signature (401), a body that is not a Plane event (400). Only events that will be
routed are recorded as deliveries, so the store sees nothing of what was refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.http import error, services
from bot.intake.answers import Answer, ignored
from bot.intake.lifecycle import StatusChange, route_once
from bot.services import Services
from bot.settings import Settings
from integrations.trackers import plane
from integrations.trackers.plane import EventKind, PayloadError, PlaneEvent

log = logging.getLogger(__name__)

MAX_BODY_BYTES = plane.MAX_BODY_BYTES
# Column widths in the store: ids beyond these are not Plane's UUIDs, and PostgreSQL would
# refuse them (a 500) where a clear 400 belongs.
MAX_ID_CHARS = 100
MAX_DELIVERY_CHARS = 200
MAX_DEDUP_KEY_CHARS = 200
MAX_ACTOR_CHARS = 100

NO_SECRET = (
    "no Plane webhook secret is configured "
    "(trackers.plane.webhook_secret / CONVEYOR_PLANE_WEBHOOK_SECRET); refusing"
)
BAD_SIGNATURE = (
    "X-Plane-Signature is missing or does not match the body "
    "(check that Plane's webhook secret is CONVEYOR_PLANE_WEBHOOK_SECRET)"
)
TOO_LARGE = f"body is larger than {MAX_BODY_BYTES} bytes; refusing"
BAD_ID = "field {field} is not a Plane id (at most {limit} characters, no NUL)"

_NOT_A_STATE_CHANGE = {
    EventKind.NOT_AN_ISSUE: "not_an_issue_event",
    EventKind.DELETED: "deleted",
    EventKind.CREATED: "not_a_state_change",
    EventKind.OTHER_FIELD: "not_a_state_change",
}


class Refused(Exception):
    """A delivery answered with an error before anything was stored."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


async def plane_webhook(request: Request) -> Response:
    """Answer a Plane delivery: 202 with the outcome, or 4xx for input we refuse."""
    svc = services(request)
    delivery = _delivery_id(request)
    try:
        answer = await receive(request, svc, delivery)
    except Refused as refusal:
        _account(svc, delivery, task=None, outcome="refused", reason=refusal.reason)
        return error(refusal.status, refusal.message)
    _account(svc, delivery, task=answer.task, outcome=answer.outcome, reason=answer.reason)
    return JSONResponse(answer.as_json(), status_code=202)


async def receive(request: Request, svc: Services, delivery: str | None) -> Answer:
    """Check size, secret and signature over the raw bytes; read the event; act on it."""
    _check_declared_length(request)
    secret = svc.settings.trackers.plane.webhook_secret.get_secret_value()
    if not secret:
        raise Refused(401, NO_SECRET, "no_secret")
    body = await read_body(request)
    if not plane.verify_signature(secret, body, request.headers.get("X-Plane-Signature")):
        raise Refused(401, BAD_SIGNATURE, "bad_signature")
    event = parse(body, request.headers.get("X-Plane-Event"))
    return await intake(svc, event, delivery)


def _check_declared_length(request: Request) -> None:
    declared = request.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refused(413, TOO_LARGE, "too_large")


async def read_body(request: Request) -> bytes:
    """The raw body, read chunk by chunk and abandoned as soon as it passes the limit."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Refused(413, TOO_LARGE, "too_large")
    return bytes(body)


def parse(body: bytes, event_header: str | None) -> PlaneEvent:
    """The event, with ids fit for the store; Refused(400) saying what is wrong."""
    try:
        event = plane.parse_event(body, event_header=event_header)
    except PayloadError as exc:
        raise Refused(400, str(exc), "bad_payload") from None
    for field, value in (("data.id", event.issue_id), ("data.project", event.project_id)):
        if value is not None and (len(value) > MAX_ID_CHARS or "\x00" in value):
            raise Refused(400, BAD_ID.format(field=field, limit=MAX_ID_CHARS), "bad_payload")
    return dataclasses.replace(event, title=event.title.replace("\x00", ""))


async def intake(svc: Services, event: PlaneEvent, delivery: str | None) -> Answer:
    """Ignore what conveyor does not act on; route a state change exactly once."""
    skip = skip_reason(svc.settings, event)
    if skip is not None:
        return ignored(skip, task=_offline_key(svc.settings, event))
    key = plane.task_key(await _identifier(svc, event), event.sequence_id, event.issue_id)
    state_name = await resolve_state_name(svc, event)
    if state_name is None:
        return ignored("unknown_state", task=key)
    change = _status_change(svc, event, key, state_name, delivery)
    return await route_once(svc, _fit_key(event.dedup_key), change)


def skip_reason(settings: Settings, event: PlaneEvent) -> str | None:
    """Why a delivery is no state change conveyor acts on, or None when it is one."""
    if event.kind in _NOT_A_STATE_CHANGE:
        return _NOT_A_STATE_CHANGE[event.kind]
    bot = settings.trackers.plane.bot_actor_id
    if bot and event.actor_id == bot:
        return "own_change"  # conveyor's own API calls come back as webhooks
    if settings.repo_for_project(event.project_id) is None:
        return "unmapped_project"
    return None


def _offline_key(settings: Settings, event: PlaneEvent) -> str | None:
    """The ticket's key for an ignored event, without asking Plane."""
    if event.kind is EventKind.NOT_AN_ISSUE or not event.issue_id:
        return None
    identifiers = settings.trackers.plane.project_identifiers
    identifier = identifiers.get(event.project_id) if event.project_id else None
    return plane.task_key(identifier, event.sequence_id, event.issue_id)


async def _identifier(svc: Services, event: PlaneEvent) -> str | None:
    """The project's short identifier: configured, else asked of Plane (cached)."""
    if event.project_id is None:
        return None
    configured = svc.settings.trackers.plane.project_identifiers.get(event.project_id)
    if configured:
        return configured
    projects = svc.extras.get("plane_projects")
    if projects is None:
        return None
    identifier: str | None = await projects.resolve(event.project_id)
    return identifier


async def resolve_state_name(svc: Services, event: PlaneEvent) -> str | None:
    """The name of the state the ticket moved to: from the body, else from Plane's states."""
    if event.state_name:
        return event.state_name
    states = svc.extras.get("plane_states")
    if states is None or event.project_id is None or event.state_id is None:
        return None
    state = await states.resolve(event.project_id, event.state_id)
    return None if state is None else str(state.name)


def _status_change(
    svc: Services, event: PlaneEvent, key: str, state_name: str, delivery: str | None
) -> StatusChange:
    repo = svc.settings.repo_for_project(event.project_id)
    assert repo is not None  # skip_reason answered "unmapped_project" otherwise
    actor = (event.actor_name or event.actor_id or "").replace("\x00", "")[:MAX_ACTOR_CHARS]
    return StatusChange(
        tracker="plane",
        issue_id=event.issue_id,
        key=key,
        title=event.title,
        project_id=event.project_id,
        repo=repo.name,
        state_name=state_name,
        actor=actor or None,
        correlation_id=delivery,
    )


def _fit_key(dedup_key: str) -> str:
    """A v2 event id is Plane's to choose: hash one too long for the column."""
    if len(dedup_key) <= MAX_DEDUP_KEY_CHARS:
        return dedup_key
    return "plane:sha256:" + hashlib.sha256(dedup_key.encode("utf-8", "replace")).hexdigest()


def _delivery_id(request: Request) -> str | None:
    """X-Plane-Delivery (new on every retry: a correlation id, never a dedup key)."""
    value = request.headers.get("X-Plane-Delivery", "").strip()
    return value[:MAX_DELIVERY_CHARS] or None


def _account(
    svc: Services, delivery: str | None, *, task: str | None, outcome: str, reason: str | None
) -> None:
    """One log line and one metric per delivery; never the secret or the signature."""
    log.info(
        "plane delivery",
        extra={"delivery": delivery, "task": task, "outcome": outcome, "reason": reason},
    )
    count = getattr(svc.extras.get("metrics"), "webhook", None)
    if callable(count):
        count("plane", outcome)


routes = [Route("/webhooks/plane", plane_webhook, methods=["POST"])]
