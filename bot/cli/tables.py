"""The server's JSON as readable tables (rich), for the CLI verbs.

Every value from the server goes in as plain `Text`, never as markup: a ticket title
with brackets in it is shown, not interpreted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.columns import Columns
from rich.console import Console
from rich.table import Table
from rich.text import Text

Doc = Mapping[str, Any]

TASK_FIELDS = (
    "id",
    "key",
    "title",
    "repo",
    "stage",
    "outcome",
    "issue_id",
    "tombstoned",
    "branch",
    "branch_sha",
    "pr_number",
    "pr_url",
    "worktree_path",
    "blocked_reason",
    "created_at",
    "updated_at",
    "merge_initiated_at",
    "merged_at",
    "merge_sha",
    "cancel_requested_at",
    "cancelled_at",
    "done_at",
)


def cell(value: Any) -> Text:
    """One value as plain text: times shortened, nothing as `-`, objects as compact JSON."""
    if value is None or value == "":
        return Text("-")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, sort_keys=True))
    return Text(short_time(value) if isinstance(value, str) else str(value))


def short_time(value: str) -> str:
    """`2026-11-21T10:00:01.123456Z` → `2026-11-21 10:00:01`; other text unchanged."""
    if len(value) >= 20 and value[10] == "T" and value.endswith("Z"):
        return value[:19].replace("T", " ")
    return value


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table, or one line saying there is nothing, when rows is empty."""
    out = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(cell(value) for value in row))
    if not out.row_count:
        out.add_row(Text("(none)"), *(Text("") for _ in columns[1:]))
    return out


def _pick(items: Iterable[Doc], *names: str) -> list[list[Any]]:
    return [[item.get(name) for name in names] for item in items]


# -- conveyor queue ------------------------------------------------------------------------


def render_queue(console: Console, doc: Doc) -> None:
    """GET /queue: counts, running jobs and the stop plane."""
    stages = table("Tasks by stage", ["stage", "tasks"], dict(doc["tasks"]).items())
    statuses = table("Jobs by status", ["status", "jobs"], dict(doc["jobs"]).items())
    console.print(Columns([stages, statuses], padding=(0, 4)))
    running = _pick(doc["running"], "task", "job", "stage", "pid", "started_at")
    console.print(table("Running", ["task", "job", "stage", "pid", "started"], running))
    render_stop_block(console, doc["stop"])


def render_stop_block(console: Console, stop: Doc) -> None:
    repos = ", ".join(stop.get("repos") or []) or "all repos"
    state = "enabled" if stop.get("enabled") else "DISABLED (STOP webhooks are ignored)"
    console.print(Text(f"Stop plane: {state}; {repos}"))
    deferred = _pick(stop["deferred"], "task", "window", "requested_at", "by", "stop_id")
    console.print(table("Deferred", ["task", "window", "requested", "by", "stop"], deferred))
    moving = _pick(stop["in_progress"], "task", "steps", "requested_at", "by", "stop_id")
    console.print(table("In progress", ["task", "steps done", "requested", "by", "stop"], moving))
    pending = _pick(
        stop["cleanup_pending"], "task", "step", "attempts", "last_error", "next_attempt_at"
    )
    console.print(
        table("Cleanup pending", ["task", "step", "attempts", "last error", "next"], pending)
    )
    recent = _pick(stop["recent"], "task", "outcome", "cancelled_at", "by")
    console.print(table("Recent stops", ["task", "outcome", "cancelled", "by"], recent))


# -- conveyor tasks / show -----------------------------------------------------------------


def render_tasks(console: Console, doc: Doc) -> None:
    """GET /tasks: the most recently changed tasks."""
    rows = _pick(doc["tasks"], "id", "key", "stage", "outcome", "repo", "updated_at")
    console.print(table("Tasks", ["id", "key", "stage", "outcome", "repo", "updated"], rows))


JOB_COLUMNS = {
    "id": "id",
    "stage": "stage",
    "status": "status",
    "attempt": "try",
    "pid": "pid",
    "exit_code": "exit",
    "started_at": "started",
    "finished_at": "finished",
    "error": "error",
}
STOP_FIELDS = (
    "status",
    "outcome",
    "requested_by",
    "reason",
    "window",
    "requested_at",
    "closed_at",
    "job_id",
    "run_id",
    "correlation_id",
)


def render_task(console: Console, doc: Doc) -> None:
    """GET /tasks/{ref}: the task, its jobs, stops, cleanups and audit trail."""
    task = doc["task"]
    console.print(table(f"Task {task.get('key')}", ["field", "value"], _task_rows(task)))
    jobs = _pick(doc["jobs"], *JOB_COLUMNS)
    console.print(table("Jobs", list(JOB_COLUMNS.values()), jobs))
    for stop in doc["stops"]:
        console.print(table(f"Stop {stop.get('id')}", ["field", "value"], _stop_rows(stop)))
    if not doc["stops"]:
        console.print(Text("No stop records."))
    if doc.get("cleanups"):
        cleanups = _pick(doc["cleanups"], "step", "status", "attempts", "last_error")
        console.print(table("Cleanups", ["step", "status", "attempts", "last error"], cleanups))
    audit = _pick(doc["audit"], "at", "kind", "actor", "detail")
    console.print(table("Audit trail", ["at", "event", "by", "detail"], audit))


def _task_rows(task: Doc) -> list[list[Any]]:
    return [[name, task.get(name)] for name in TASK_FIELDS if task.get(name) not in (None, "")]


def _stop_rows(stop: Doc) -> list[list[Any]]:
    """The record's fields, then each reset step with what it recorded, in order."""
    rows = [[name, stop.get(name)] for name in STOP_FIELDS if stop.get(name) not in (None, "")]
    steps = stop.get("steps") or {}
    return rows + [[f"step {name}", _step_value(name, value)] for name, value in steps.items()]


def _step_value(name: str, value: Any) -> Any:
    """A step's result; the times steps note (`*_at`, epoch seconds) as UTC times."""
    if name.endswith("_at") and isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return value
