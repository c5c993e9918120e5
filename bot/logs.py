"""Logging: readable text by default, JSON lines on request; context travels as fields."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

CONTEXT_FIELDS = (
    "task",
    "stop_id",
    "delivery",
    "job",
    "run_id",
    "action",
    "outcome",
    "repo",
    "reason",
    "stage",
    "pid",
    "pgid",
    "error",
)
_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every context field."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_context(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value …`"""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _context(record).items())
        return f"{base} {extra}" if extra else base


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v
        for k, v in vars(record).items()
        if k not in _RESERVED
        and not k.startswith("_")
        and k not in ("message", "asctime", "color_message")
    }


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Install one stderr handler on the root logger in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
