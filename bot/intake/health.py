"""What this process knows of each tracker's reconciliation, for GET /queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class TrackerHealth:
    """What this process knows of one tracker's reconciliation (GET /queue)."""

    last_ok_at: float | None = None
    last_error: str | None = None
    passes: int = 0
    failures: int = 0  # in a row
    stops_found: int = 0
    starts_found: int = 0
    missed_webhooks: int = 0
    missed_in_a_row: int = 0
    backoff_until: float = 0.0
    cursor: int = 0  # the live task read last (round-robin by task id)
    gone_once: set[str] = field(default_factory=set)  # issue ids gone on the last read

    def as_json(self, now: float) -> dict[str, object]:
        return {
            "last_ok_at": _iso(self.last_ok_at),
            "lag_seconds": None if self.last_ok_at is None else round(now - self.last_ok_at, 3),
            "last_error": self.last_error,
            "passes": self.passes,
            "stops_found": self.stops_found,
            "starts_found": self.starts_found,
            "missed_webhooks": self.missed_webhooks,
            "backoff_until": _iso(self.backoff_until) if self.backoff_until > now else None,
        }


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
