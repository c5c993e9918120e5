"""Ticket text between the trackers' markups and the Markdown an agent reads."""

from __future__ import annotations

import html
import re

from markdownify import markdownify

from integrations.trackers.base import Notice

_BLANK_RUNS = re.compile(r"\n{3,}")
# Plane's empty description: no need to run the converter (slow) over it.
_EMPTY_HTML = re.compile(r"(\s|<p>|</p>|<br\s*/?>)*")


def html_to_markdown(text: str) -> str:
    """A tracker's HTML description (Plane's ``description_html``) as Markdown."""
    if _EMPTY_HTML.fullmatch(text):
        return ""
    converted = markdownify(
        text, heading_style="ATX", bullets="-", strip=["script", "style", "img"]
    )
    return _BLANK_RUNS.sub("\n\n", converted).strip()


def notice_html(notice: Notice) -> str:
    """A Notice as the small HTML a tracker's comment box takes (Plane)."""
    parts = [f"<p>{html.escape(notice.headline)}</p>"]
    if notice.items:
        parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in notice.items) + "</ul>")
    if notice.closing:
        parts.append(f"<p>{html.escape(notice.closing)}</p>")
    if notice.marker:
        parts.append(f"<!-- {html.escape(notice.marker)} -->")
    return "".join(parts)
