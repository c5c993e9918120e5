"""The server's JSON as readable tables (rich), for the CLI verbs.

Every value from the server goes in as plain `Text`, never as markup: a ticket title
with brackets in it is shown, not interpreted. Tables fit 80 columns: a time column
(its header says UTC) never wraps, every other column folds; objects are summarised as
`key=value` pairs, never printed as raw JSON.
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


IN_UTC = " (UTC)"  # a column header ending so holds times: never wrapped
TIME_WIDTH = len("2026-11-21 10:00:01")
MAX_SUMMARY = 300


def cell(value: Any) -> Text:
    """One value as plain text: times shortened, nothing as `-`, objects summarised."""
    if value is None or value == "":
        return Text("-")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, dict | list):
        return Text(summary(value))
    return Text(short_time(value) if isinstance(value, str) else str(value))


def summary(value: Any) -> str:
    """`{"a": 1, "b": [2, 3]}` → `a=1 b=2,3`: readable, and bounded in length."""
    if isinstance(value, dict):
        text = " ".join(f"{k}={_flat(v)}" for k, v in value.items())
    else:
        text = ", ".join(_flat(v) for v in value)
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def _flat(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_flat(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return short_time(value) if isinstance(value, str) else str(value)


def short_time(value: str) -> str:
    """`2026-11-21T10:00:01.123456Z` → `2026-11-21 10:00:01`; other text unchanged."""
    if len(value) >= 20 and value[10] == "T" and value.endswith("Z"):
        return value[:19].replace("T", " ")
    return value


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table, or one line saying there is nothing, when rows is empty."""
    out = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        if column.endswith(IN_UTC):
            out.add_column(column, no_wrap=True, min_width=TIME_WIDTH)
        else:
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
    console.print(table("Running", ["task", "job", "stage", "pid", "started" + IN_UTC], running))
    render_stop_block(console, doc["stop"])


def render_stop_block(console: Console, stop: Doc) -> None:
    repos = ", ".join(stop.get("repos") or []) or "all repos"
    state = "enabled" if stop.get("enabled") else "DISABLED (STOP webhooks are ignored)"
    console.print(Text(f"Stop plane: {state}; {repos}"))
    deferred = _pick(stop["deferred"], "task", "window", "requested_at", "by", "stop_id")
    console.print(
        table("Deferred", ["task", "window", "requested" + IN_UTC, "by", "stop"], deferred)
    )
    moving = _pick(stop["in_progress"], "task", "steps", "requested_at", "by", "stop_id")
    console.print(
        table("In progress", ["task", "steps done", "requested" + IN_UTC, "by", "stop"], moving)
    )
    pending = _pick(
        stop["cleanup_pending"], "task", "step", "attempts", "last_error", "next_attempt_at"
    )
    console.print(
        table("Cleanup pending", ["task", "step", "tries", "last error", "next" + IN_UTC], pending)
    )
    recent = _pick(stop["recent"], "task", "outcome", "cancelled_at", "by")
    console.print(table("Recent stops", ["task", "outcome", "cancelled" + IN_UTC, "by"], recent))


# -- conveyor tasks / show -----------------------------------------------------------------


def render_tasks(console: Console, doc: Doc) -> None:
    """GET /tasks: the most recently changed tasks."""
    rows = _pick(doc["tasks"], "id", "key", "stage", "outcome", "repo", "updated_at")
    columns = ["id", "key", "stage", "outcome", "repo", "updated" + IN_UTC]
    console.print(table("Tasks", columns, rows))


JOB_COLUMNS = {
    "id": "id",
    "stage": "stage",
    "status": "status",
    "attempt": "try",
    "exit_code": "exit",
    "started_at": "started" + IN_UTC,
    "took": "took",
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
    console.print(
        table(f"Task {task.get('key')} (times in UTC)", ["field", "value"], _task_rows(task))
    )
    jobs = _pick([{**job, "took": took(job)} for job in doc["jobs"]], *JOB_COLUMNS)
    console.print(table("Jobs", list(JOB_COLUMNS.values()), jobs))
    errors = [[job.get("id"), job["error"]] for job in doc["jobs"] if job.get("error")]
    if errors:
        console.print(table("Errors", ["job", "error"], errors))
    for job in doc["jobs"]:
        if job.get("log_path"):  # never wrapped: a path to copy whole
            console.print(Text(f"job {job.get('id')} log: {job['log_path']}"), soft_wrap=True)
    for stop in doc["stops"]:
        console.print(
            table(f"Stop {stop.get('id')} (times in UTC)", ["field", "value"], _stop_rows(stop))
        )
    if not doc["stops"]:
        console.print(Text("No stop records."))
    if doc.get("cleanups"):
        cleanups = _pick(doc["cleanups"], "step", "status", "attempts", "last_error")
        console.print(table("Cleanups", ["step", "status", "attempts", "last error"], cleanups))
    audit = _pick(doc["audit"], "at", "kind", "actor", "detail")
    console.print(table("Audit trail", ["at" + IN_UTC, "event", "by", "detail"], audit))


def took(job: Doc) -> str | None:
    """`12.3s`, `4m05s`: how long a job ran (or has run so far: `…`)."""
    start, end = _epoch(job.get("started_at")), _epoch(job.get("finished_at"))
    if start is None:
        return None
    if end is None:
        return "…" if job.get("status") == "running" else None
    seconds = max(0.0, end - start)
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


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
