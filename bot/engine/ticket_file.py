"""The ticket as the agent reads it: a Markdown file in the task's docs directory
(`CONVEYOR_TICKET_FILE`) with the title, the link, the state and labels, and the full
description (already converted to Markdown by the tracker's adapter)."""

from __future__ import annotations

import json
from pathlib import Path

from state.models import Task
from state.store import original_key

TICKET_FILE_NAME = "ticket.md"


def ticket_markdown(task: Task) -> str:
    """The file's text for a task (pure)."""
    key = original_key(task.key)
    lines = [f"# {key}: {task.title}".rstrip(": ") if task.title else f"# {key}", ""]
    if task.url:
        lines.append(f"- Link: {task.url}")
    lines.append(f"- Tracker: {task.tracker}")
    if task.ticket_state:
        lines.append(f"- State: {task.ticket_state}")
    labels = _labels(task.labels)
    if labels:
        lines.append(f"- Labels: {', '.join(labels)}")
    lines.append(f"- Branch: {task.branch or '-'}")
    lines += ["", "## Description", "", task.description.strip() or "(no description)", ""]
    return "\n".join(lines)


def write_ticket_file(docs_dir: Path, task: Task) -> Path:
    """Write (or refresh) the ticket file for the agent about to start; its path."""
    path = docs_dir / TICKET_FILE_NAME
    path.write_text(ticket_markdown(task), encoding="utf-8")
    return path


def _labels(raw: str) -> list[str]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(item) for item in value] if isinstance(value, list) else []
