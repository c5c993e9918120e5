"""Logging: readable text by default, JSON lines on request; context travels as fields.

Whatever the format, a filter on the one handler replaces the configured secret values
(admin token, webhook secret, API key, database password) wherever they would appear: in
the message, in a field, in a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from bot.settings import Settings

# The fields most lines carry, first in every line in this order; any other field follows.
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
REDACTED = "[redacted]"
_SCRUBBED = "_conveyor_fields"  # on a record: its context fields once redacted (in order)
_AS_VALUE = r"(?<![A-Za-z0-9]){}(?![A-Za-z0-9])"
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC), level, logger, msg, then the context fields
    that have a value, and `exc` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(context(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value …`, one line per record whatever the
    values hold: a value that is not a plain word is quoted and escaped as a JSON string,
    so no value can end the line or add a field of its own (`x outcome=started` stays
    inside its own quotes). A traceback follows on its own indented lines."""

    def format(self, record: logging.LogRecord) -> str:
        # What logging.Formatter.format does, with the message escaped onto one line and
        # the fields after it, a traceback below; without copying the record (a second
        # LogRecord per line was a third of the line's cost: one line per delivery).
        record.message = one_line(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        fields = getattr(record, _SCRUBBED, None) or list(context(record).items())
        extra = " ".join(f"{k}={text_value(v)}" for k, v in fields)
        if extra:
            line = f"{line} {extra}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}")


def text_value(value: Any) -> str:
    """A field's value for the text format: bare when it is a plain word, else quoted."""
    text = value if isinstance(value, str) else str(value)
    if isinstance(value, bool | int | float) or _PLAIN_VALUE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=True)


def one_line(text: str) -> str:
    """The message part of a line, with line breaks and control characters escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else json.dumps(ch)[1:-1] for ch in text)


def utc_timestamp(created: float) -> str:
    """`2026-11-21T10:00:00.123Z`"""
    moment = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra` fields that have a value: the known ones first, in order."""
    fields = {
        k: v
        for k, v in vars(record).items()
        if k not in _RESERVED and not k.startswith("_") and v is not None
    }
    known = {k: fields.pop(k) for k in CONTEXT_FIELDS if k in fields}
    return {**known, **fields}


class RedactSecrets(logging.Filter):
    """Replaces each secret value with `[redacted]` in a record's message, fields and
    traceback, before any formatter sees it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # A secret where it stands as a value: not touching a letter or digit on either
        # side, so a short secret never eats part of another word (`started`).
        self._pattern = (
            re.compile("|".join(_AS_VALUE.format(re.escape(s)) for s in self.secrets))
            if self.secrets
            else None
        )

    def redact(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg, record.args = self.redact(record.getMessage()), None
        scrubbed = [(key, self.scrub(value)) for key, value in context(record).items()]
        for key, value in scrubbed:
            setattr(record, key, value)
        setattr(record, _SCRUBBED, scrubbed)  # the formatter's fields, as they now stand
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def scrub(self, value: Any) -> Any:
        """A field's value with the secrets taken out (containers kept as containers)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        if isinstance(value, bool | int | float):
            return value
        text = str(value)
        cleaned = self.redact(text)
        return value if cleaned == text else cleaned


def secrets_of(settings: Settings) -> list[str]:
    """The secret values in `settings`, as they could appear in a log line."""
    values = settings.secrets()
    password = database_password(settings.server.database_url)
    if password:
        values += [password, quote(password, safe=""), quote_plus(password)]
    return [v for v in values if v]


def database_password(url: str) -> str | None:
    """The password in a database URL, if it has one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return None
    return None if password is None else str(password)


def configure_logging(
    fmt: str = "text", level: int = logging.INFO, *, secrets: Iterable[str] = ()
) -> None:
    """Install one stderr handler on the root logger in the chosen format, redacting
    `secrets` (use `secrets_of(settings)`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(_TEXT_FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
