"""`conveyor send <tracker>`: the signed deliveries each tracker's sender would make,
built by the tracker's own package, and the one-line account of the answer."""

from __future__ import annotations

from datetime import datetime

from bot.errors import ConfigError, UsageError
from bot.settings import Settings
from integrations.trackers.plane import PlaneSettings
from integrations.trackers.plane import payloads as plane_payloads


def plane_delivery(
    settings: Settings, ticket: plane_payloads.Ticket, now: datetime, delivery_id: str
) -> plane_payloads.Delivery:
    """A Plane state change for `ticket`, signed with the configured secret."""
    plane = settings.tracker("plane")
    assert isinstance(plane, PlaneSettings)
    project = next(
        (r.tracker_project for r in settings.repos if r.tracker == "plane" and r.tracker_project),
        None,
    )
    try:
        return plane_payloads.build_delivery(
            plane, ticket, now, delivery_id, default_project=project
        )
    except plane_payloads.DeliveryError as exc:
        message = str(exc)
        raise (ConfigError if "secret" in message else UsageError)(message) from None


def describe_answer(status: int, doc: dict[str, object], sent_key: str | None = None) -> str:
    """One line for a webhook answer: `202 started PROJ-42` (+ reason, stop id), and a
    note when the server named the ticket otherwise than it was sent (then `show` and
    `stop` need the server's name)."""
    task = str(doc.get("task") or "-")
    parts = [str(status), str(doc.get("outcome", "?")), task]
    for name in ("reason", "stop_id"):
        if doc.get(name):
            parts.append(f"{name}={doc[name]}")
    if sent_key and task not in ("-", sent_key):
        parts.append(RENAMED.format(sent=sent_key, task=task))
    return " ".join(parts)


RENAMED = (
    "(sent as {sent}; the server calls it {task}: give its project an identifier in "
    "trackers.plane.project_identifiers, or use {task} with show, logs and stop)"
)
