"""The dashboard's Jinja2 templates (in the package: `bot/ui/templates`) and the small
helpers they use. Autoescaped; nothing secret is ever handed to a template."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

from bot.ui.feed import entered_stage
from state.models import PIPELINE


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bot.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = utc_text
    env.filters["duration"] = duration
    env.filters["ref"] = lambda value: quote(str(value), safe="")
    env.globals["pipeline"] = [stage.value for stage in PIPELINE]
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def refused_page() -> str:
    return render("refused.html")


def utc_text(iso: str | None) -> str:
    """`2026-12-02T13:45:01.5Z` as `2026-12-02 13:45:01 UTC` (the page's script shows
    it in the viewer's time zone and keeps this as the hover text)."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    return max(0.0, (b - a).total_seconds())


def duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s`, `4.2 s`."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def timeline(audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stages a task entered, in order, with when and who: from its audit trail."""
    out = []
    for event in audit:
        stage = entered_stage(event["kind"], event.get("detail") or {})
        if stage:
            out.append({"stage": stage, "at": event["at"], "actor": event.get("actor")})
    return out
