"""A small server-sent-events reader over httpx, for tests of `GET /events`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: dict[str, Any]


def read_events(response: httpx.Response) -> Iterator[SseEvent]:
    """Events as the stream delivers them; comments as `comment` events."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield SseEvent(
                    fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                )
            fields = {}
            continue
        if line.startswith(":"):
            yield SseEvent(None, "comment", {"text": line[1:].strip()})
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def collect(
    url: str,
    until: Any,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    on_open: Any = None,
) -> list[SseEvent]:
    """Events from `url` until `until(events)` is true (reconnecting when the server ends a
    stream, as a browser does), or fail after `timeout` seconds."""
    seen: list[SseEvent] = []
    deadline = time.monotonic() + timeout
    last = None
    opened = False
    while time.monotonic() < deadline:
        sent = dict(headers or {})
        if last:
            sent["Last-Event-ID"] = last
        with httpx.stream("GET", url, headers=sent, timeout=httpx.Timeout(30.0)) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in read_events(response):
                if event.event == "comment":
                    # The stream's first line comes once the server is listening.
                    if not opened and on_open is not None:
                        on_open()
                    opened = True
                    continue
                seen.append(event)
                last = event.id or last
                if until(seen):
                    return seen
                if time.monotonic() > deadline:
                    break
    raise AssertionError(f"timed out; events so far: {[(e.event, e.data) for e in seen]}")
