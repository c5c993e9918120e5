"""Log lines: one JSON object per line with the context fields, text as `key=value`, and
no configured secret in either, wherever it was put."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from bot.logs import REDACTED, RedactSecrets, configure_logging, secrets_of
from bot.settings import settings_from_dict

TOKEN = "admin-s3cr3t-token"
WEBHOOK_SECRET = "plane_wh_0123456789abcdef"
API_KEY = "plane_api_fedcba9876543210"
DB_PASSWORD = "p@ss/w0rd:x"
DB_URL = "postgresql://conveyor:p%40ss%2Fw0rd%3Ax@db.internal:5432/conveyor"
SECRETS = [TOKEN, WEBHOOK_SECRET, API_KEY, DB_PASSWORD]

log = logging.getLogger("bot.test_logs")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put it back for the next test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn = {n: logging.getLogger(n).handlers[:] for n in ("uvicorn", "uvicorn.error")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in uvicorn.items():
        logging.getLogger(name).handlers[:] = saved


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(capsys)]


def test_a_json_line_has_the_time_level_logger_message_and_context_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    context = {"outcome": "stop_requested", "delivery": "d-1", "stop_id": "s-1", "task": "PROJ-42"}
    log.info("stop %s", "stop_requested", extra={**context, "attempts": 2})
    (doc,) = json_lines(capsys)
    assert list(doc) == [
        "ts",
        "level",
        "logger",
        "msg",
        "task",
        "stop_id",
        "delivery",
        "outcome",
        "attempts",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
    assert doc["level"] == "info" and doc["logger"] == "bot.test_logs"
    assert doc["msg"] == "stop stop_requested"
    assert doc["task"] == "PROJ-42" and doc["attempts"] == 2


def test_fields_without_a_value_are_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    log.info("plane delivery", extra={"delivery": None, "task": None, "outcome": "refused"})
    (doc,) = json_lines(capsys)
    assert "task" not in doc and "delivery" not in doc
    assert doc["outcome"] == "refused"


def test_a_traceback_and_a_multi_line_message_stay_on_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    try:
        raise RuntimeError("worktree\nremoval failed")
    except RuntimeError:
        log.exception("reset step failed\nsee below", extra={"action": "worktree"})
    (line,) = lines(capsys)
    doc = json.loads(line)
    assert doc["level"] == "error" and doc["action"] == "worktree"
    assert "RuntimeError: worktree\nremoval failed" in doc["exc"]


def test_fields_that_are_not_json_are_written_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    log.info("step done", extra={"outcome": {"removed": True, "at": object()}})
    (doc,) = json_lines(capsys)
    assert doc["outcome"]["removed"] is True and doc["outcome"]["at"].startswith("<object")


def test_text_lines_carry_the_context_as_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text")
    log.warning("stop deferred", extra={"task": "PROJ-7", "stop_id": "s-2"})
    (line,) = lines(capsys)
    assert line.endswith("WARNING bot.test_logs: stop deferred task=PROJ-7 stop_id=s-2")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_reaches_a_line(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt, secrets=SECRETS)
    log.info("token %s was presented", TOKEN, extra={"error": f"Bearer {TOKEN}"})
    log.info("calling plane", extra={"outcome": {"headers": {"X-API-Key": API_KEY}}})
    log.info("signature over %s", [WEBHOOK_SECRET])
    try:
        raise ConnectionError(f"could not connect as conveyor:{DB_PASSWORD}")
    except ConnectionError:
        log.exception("database unreachable")
    out = "\n".join(lines(capsys))
    for secret in SECRETS:
        assert secret not in out
    assert out.count(REDACTED) >= 5
    assert "ConnectionError: could not connect as conveyor:[redacted]" in out


def test_a_secret_inside_a_longer_one_does_not_leave_a_piece_behind() -> None:
    redact = RedactSecrets(["abc", "abcdef"]).redact
    assert redact("key=abcdef") == f"key={REDACTED}"


def test_without_secrets_a_record_is_left_alone() -> None:
    record = logging.makeLogRecord({"msg": "hello %s", "args": ("you",), "task": "PROJ-1"})
    assert RedactSecrets([]).filter(record)
    assert record.msg == "hello %s" and record.args == ("you",)


def test_the_secrets_of_the_settings_include_the_database_password_as_written() -> None:
    settings = settings_from_dict(
        {
            "server": {"admin_token": TOKEN, "database_url": DB_URL},
            "trackers": {"plane": {"webhook_secret": WEBHOOK_SECRET, "api_key": API_KEY}},
        }
    )
    found = secrets_of(settings)
    assert set(SECRETS) <= set(found)
    assert "p%40ss%2Fw0rd%3Ax" in found  # as it appears in the URL itself


def test_empty_settings_have_no_secrets() -> None:
    settings = settings_from_dict({"server": {"database_url": "sqlite:///x.db"}})
    assert secrets_of(settings) == []


FORGED = 'x outcome=started task=PROJ-1\nfake line level=info" outcome="started'
_FIELD = re.compile(r' (\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def text_fields(line: str) -> list[tuple[str, str]]:
    """The key=value fields of a text line, as a reader of the format would parse them."""
    return [
        (key, json.loads(value) if value.startswith('"') else value)
        for key, value in _FIELD.findall(line)
    ]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_value_cannot_forge_a_field_or_a_line(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    configure_logging(fmt)
    log.info("webhook delivery", extra={"delivery": FORGED, "outcome": "refused"})
    (line,) = lines(capsys)
    if fmt == "json":
        doc = json.loads(line)
        assert (doc["delivery"], doc["outcome"]) == (FORGED, "refused")
        return
    fields = text_fields(line)
    assert [k for k, _ in fields] == ["delivery", "outcome"]
    assert dict(fields) == {"delivery": FORGED, "outcome": "refused"}


def test_plain_values_stay_bare_in_the_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text")
    log.info("stop", extra={"task": "PROJ-42", "job": 7, "reason": "ticket moved to STOP"})
    (line,) = lines(capsys)
    assert line.endswith('task=PROJ-42 job=7 reason="ticket moved to STOP"')


def test_a_message_with_a_line_break_stays_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text")
    log.info("first\nsecond level=error")
    (line,) = lines(capsys)
    assert line.endswith("first\\nsecond level=error")


def test_a_secret_is_redacted_as_a_value_never_inside_another_word(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("text", secrets=["s", "tok"])
    log.info("started", extra={"outcome": "started", "token": "tok", "url": "http://x/?t=tok"})
    (line,) = lines(capsys)
    assert "started" in line and "outcome=started" in line
    assert "token=[redacted]" in line.replace('"', "") and "t=[redacted]" in line
    assert "tok" not in line.replace("token=", "")
