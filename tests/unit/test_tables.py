"""The CLI's tables: every section shown, server text shown as text, never as markup."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from bot.cli.tables import render_queue, render_task, render_tasks, short_time

QUEUE: dict[str, Any] = {
    "tasks": {"analysis": 1, "implementation": 0, "done": 4, "cancelled": 2},
    "jobs": {"queued": 0, "running": 1, "cancelled": 3},
    "running": [
        {
            "task": "PROJ-42",
            "job": 17,
            "stage": "implementation",
            "pid": 4242,
            "started_at": "2026-11-21T10:00:01.123456Z",
        }
    ],
    "stop": {
        "enabled": True,
        "repos": ["app"],
        "deferred": [{"task": "PROJ-7", "requested_at": "2026-11-21T10:00:02Z", "window": "merge"}],
        "in_progress": [],
        "cleanup_pending": [
            {"task": "PROJ-3", "step": "remote_branch", "attempts": 2, "last_error": "remote down"}
        ],
        "recent": [
            {
                "task": "PROJ-9",
                "outcome": "cancelled_graceful",
                "cancelled_at": "2026-11-21T10:00:03Z",
                "by": "plane:ada",
            }
        ],
    },
}


def rendered(render: Any, doc: dict[str, Any]) -> str:
    out = io.StringIO()
    render(Console(file=out, width=160, color_system=None), doc)
    return out.getvalue()


def test_queue_shows_counts_running_and_the_stop_plane() -> None:
    text = rendered(render_queue, QUEUE)
    for expected in (
        "Tasks by stage",
        "Jobs by status",
        "4242",
        "2026-11-21 10:00:01",
        "Stop plane: enabled; app",
        "PROJ-7",
        "merge",
        "remote down",
        "cancelled_graceful",
        "plane:ada",
    ):
        assert expected in text
    assert "(none)" in text  # in_progress is empty


def test_tasks_and_show_keep_brackets_as_text() -> None:
    title = "[bold red]Fix[/] the [link=x]login[/link]"
    tasks = {"tasks": [{"id": 1, "key": "PROJ-1", "stage": "analysis", "title": title}]}
    assert "PROJ-1" in rendered(render_tasks, tasks)
    detail = {
        "task": {
            "id": 1,
            "key": "PROJ-1",
            "title": title,
            "stage": "cancelled",
            "tombstoned": True,
        },
        "jobs": [{"id": 1, "stage": "analysis", "status": "cancelled", "error": "[x]"}],
        "stops": [
            {"id": "s1", "status": "done", "steps": {"processes": {}, "processes_signalled_at": 1}}
        ],
        "audit": [{"at": "2026-11-21T10:00:03Z", "kind": "cancelled", "detail": {"n": 1}}],
        "cleanups": [],
    }
    text = rendered(render_task, detail)
    assert title in text and "[x]" in text and "n=1" in text  # objects summarised
    assert "step processes_signalled_at │ 1970-01-01 00:00:01.000" in text


def test_short_time_leaves_other_text_alone() -> None:
    assert short_time("2026-11-21T10:00:01.5Z") == "2026-11-21 10:00:01"
    assert short_time("PROJ-42") == "PROJ-42"
