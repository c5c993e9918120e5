"""POST /webhooks/{tracker}: one route for every tracker. Read the body within the size
limit, verify its signature, parse it into the port's event, complete it from the API
where the delivery lacks a name, deduplicate, and route it to the lifecycle.

Bad input is refused before anything is stored: an unknown tracker (404), an oversized
body (413), no secret or a bad signature (401), a body that is not the tracker's event
(400). Only events that will be routed are recorded as deliveries.
"""

from __future__ import annotations

import hashlib
import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.bodies import BodyTooLarge, BodyTooSlow, read_limited
from bot.api.http import error, services
from bot.intake.answers import Answer, ignored
from bot.intake.lifecycle import remember_ignored, route_once
from bot.intake.refs import check_ref
from bot.services import Services
from integrations.trackers.base import Refused, Tracker, TrackerEvent

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_DEDUP_KEY_CHARS = 200  # the store's column; longer keys are hashed
TOO_LARGE = f"body is larger than {MAX_BODY_BYTES} bytes; refusing"
TOO_SLOW = "the body did not arrive in time; refusing"
UNKNOWN_TRACKER = "no tracker named {name!r} (this server knows: {known})"


# Ignored events that still show the ticket as it is now (its labels): worth keeping.
_SEEN_WHEN_IGNORED = frozenset(
    {"not_a_state_change", "label_not_handled", "closed_not_stopping", "own_change"}
)


class TooLarge(Refused):
    status = 413
    reason = "too_large"


class TooSlow(Refused):
    status = 408
    reason = "too_slow"


async def tracker_webhook(request: Request) -> Response:
    """Answer a delivery: 202 with the outcome, or 4xx for input we refuse."""
    svc = services(request)
    name = request.path_params["tracker"]
    tracker = svc.trackers.get(name)
    if tracker is None:
        known = ", ".join(sorted(svc.trackers)) or "none"
        return error(404, UNKNOWN_TRACKER.format(name=name[:40], known=known))
    try:
        event = await receive(request, svc, tracker)
    except Refused as refusal:
        # The delivery header is unsigned: it is not logged for a refused request.
        _account(svc, tracker.name, None, task=None, outcome="refused", reason=refusal.reason)
        refused = error(refusal.status, refusal.message)
        if isinstance(refusal, TooSlow):
            refused.headers["Connection"] = "close"  # the rest of the body is not awaited
        return refused
    answer = await intake(svc, tracker, event)
    _account(
        svc,
        tracker.name,
        event.delivery_id[:MAX_DEDUP_KEY_CHARS] if event.delivery_id else None,
        task=answer.task,
        outcome=answer.outcome,
        reason=answer.reason,
    )
    return JSONResponse(answer.as_json(), status_code=202)


async def receive(request: Request, svc: Services, tracker: Tracker) -> TrackerEvent:
    """Size, signature over the raw bytes, then the event (completed from the API)."""
    body = await read_body(request)
    tracker.verify(request.headers, body, now=svc.clock.now())
    event = tracker.parse(request.headers, body)
    if event.ticket is not None:
        check_ref(event.ticket.ref)
    if event.ignore is None:
        event = await tracker.complete(event)
        if event.ticket is not None:
            check_ref(event.ticket.ref)  # a key the tracker's API completed
    return event


async def read_body(request: Request) -> bytes:
    """The raw body, read chunk by chunk, abandoned as soon as it passes the limit or
    takes longer than the body read timeout."""
    try:
        seconds = services(request).settings.server.body_timeout_seconds
        return await read_limited(request, MAX_BODY_BYTES, seconds)
    except BodyTooLarge:
        raise TooLarge(TOO_LARGE) from None
    except (BodyTooSlow, ClientDisconnect):
        raise TooSlow(TOO_SLOW) from None


async def intake(svc: Services, tracker: Tracker, event: TrackerEvent) -> Answer:
    """Ignore what conveyor does not act on; route the rest exactly once."""
    key = event.ticket.ref.key if event.ticket is not None else None
    if event.ignore is not None:
        if event.ignore in _SEEN_WHEN_IGNORED:
            await remember_ignored(svc, event)
        return ignored(event.ignore, task=key)
    if event.ticket is None:
        return ignored("no_ticket")
    repo = svc.settings.repo_for_project(tracker.name, event.ticket.ref.project)
    if repo is None:
        return ignored("unmapped_project", task=key)
    return await route_once(svc, tracker, fit_key(event.delivery_key), event, repo.name)


def fit_key(dedup_key: str) -> str:
    """A delivery key is the sender's to choose: hash one too long for the column."""
    if len(dedup_key) <= MAX_DEDUP_KEY_CHARS and "\x00" not in dedup_key:
        return dedup_key
    digest = hashlib.sha256(dedup_key.encode("utf-8", "replace")).hexdigest()
    return "sha256:" + digest


def _account(
    svc: Services,
    tracker: str,
    delivery: str | None,
    *,
    task: str | None,
    outcome: str,
    reason: str | None,
) -> None:
    """One log line and one metric per delivery; never the secret or the signature."""
    log.info(
        "webhook delivery",
        extra={
            "tracker": tracker,
            "delivery": delivery,
            "task": task,
            "outcome": outcome,
            "reason": reason,
        },
    )
    if svc.metrics is not None:
        svc.metrics.webhook(tracker, outcome)


routes = [Route("/webhooks/{tracker}", tracker_webhook, methods=["POST"])]
