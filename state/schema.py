"""The tables (SQLAlchemy Core). Times are UTC epoch seconds (floats): portable and
cheap to compare on both SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tracker", String(32), nullable=False),
    Column("issue_id", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("project_id", String(200)),
    Column("repo", String(200), nullable=False),
    Column("title", Text, nullable=False, server_default=""),
    Column("stage", String(32), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("branch", String(300)),
    Column("branch_sha", String(64)),  # the head conveyor last pushed/recorded
    Column("worktree_path", Text),
    Column("blocked_reason", Text),
    Column("awaiting_confirm", Integer, nullable=False, server_default="0"),
    Column("merge_initiated_at", Float),
    Column("merged_at", Float),
    Column("merge_sha", String(64)),
    Column("cancel_requested_at", Float),
    Column("cancelled_at", Float),
    Column("done_at", Float),
    Column("outcome", String(64)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The ticket as it was when the task started (0003): for the agent's ticket file.
    Column("url", Text, nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("labels", Text, nullable=False, server_default="[]"),  # JSON list of names
    Column("ticket_state", String(200)),
    Column("pr_number", Integer),  # pull-request mode
    Column("pr_url", Text),
    Column("worktree_server", String(64)),  # the server whose data dir holds it (0004)
    UniqueConstraint("tracker", "issue_id"),
    Index(None, "stage"),
    Index(None, "key"),
    Index(None, "cancelled_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("stage", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # queued running succeeded failed cancelled
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("run_id", String(64)),
    Column("worker_id", String(200)),
    Column("pid", Integer),
    Column("pgid", Integer),
    Column("proc_start_time", BigInteger),
    Column("run_after", Float, nullable=False),
    Column("lease_expires_at", Float),
    Column("heartbeat_at", Float),
    Column("exit_code", Integer),
    Column("error", Text),
    Column("log_path", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("server_id", String(64)),  # the server that claimed it (0004)
    Column("host", String(255)),  # that server's host name, for people reading /queue
    Index(None, "status", "run_after"),
    Index(None, "task_id", "status"),
)

stop_records = Table(
    "stop_records",
    metadata,
    Column("id", String(64), primary_key=True),  # stop_id
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("job_id", Integer),
    Column("run_id", String(64)),  # the attempt this stop targets
    Column("status", String(16), nullable=False),  # open deferred done superseded noop
    Column("requested_at", Float, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("correlation_id", String(200)),
    Column("outcome", String(64)),
    Column("window", String(16)),
    Column("steps", Text, nullable=False, server_default="{}"),  # JSON: step -> result
    Column("notified_at", Float),
    Column("closed_at", Float),
    # The server carrying out the reset, until when (0004): one runner per stop, so
    # the steps that are not host-local run exactly once whichever servers look.
    Column("runner", String(64)),
    Column("runner_until", Float),
    Index(None, "status"),
    Index(None, "task_id"),
    # One open stop per task: concurrent STOPs converge on one record and one stop_id.
    Index(
        "uq_stop_records_open_task",
        "task_id",
        unique=True,
        sqlite_where=text("status IN ('open', 'deferred')"),
        postgresql_where=text("status IN ('open', 'deferred')"),
    ),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("tasks.id")),
    Column("at", Float, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(200)),
    Column("stop_id", String(64)),
    Column("detail", Text, nullable=False, server_default="{}"),
    Index(None, "task_id", "at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tracker", String(32), nullable=False),
    Column("dedup_key", String(200), nullable=False),
    Column("delivery_id", String(200)),
    Column("received_at", Float, nullable=False),
    Column("outcome", String(32)),
    Column("reason", String(200)),
    Column("task_id", Integer),
    UniqueConstraint("tracker", "dedup_key"),
)

merge_leases = Table(
    "merge_leases",
    metadata,
    Column("repo", String(200), primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

pending_cleanups = Table(
    "pending_cleanups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("stop_id", String(64)),
    Column("step", String(32), nullable=False),  # worktree | remote_branch
    Column("status", String(16), nullable=False),  # pending done conflict
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("detail", Text, nullable=False, server_default="{}"),
    Column("next_attempt_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float),
    UniqueConstraint("task_id", "step"),
    Index(None, "status", "next_attempt_at"),
)

# The last state and labels conveyor saw for each ticket (webhooks and reconciliation
# passes): "entered a start state" is an edge against this, and Gitea's full label lists
# are diffed against it.
tickets_seen = Table(
    "tickets_seen",
    metadata,
    Column("tracker", String(32), primary_key=True),
    Column("issue_id", String(200), primary_key=True),
    Column("project", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("state", String(200)),
    Column("labels", Text, nullable=False, server_default="[]"),
    Column("signal", String(16)),
    Column("seen_at", Float, nullable=False),
    Column("updated_at", Float),  # the tracker's own updated_at, epoch seconds
)

# Up to when each tracker project has been reconciled (0003): a pass lists what changed
# since its watermark (less an overlap), so a restart resumes where the last pass ended.
reconcile_watermarks = Table(
    "reconcile_watermarks",
    metadata,
    Column("tracker", String(32), primary_key=True),
    Column("project", String(200), primary_key=True),
    Column("watermark", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Tasks per stage and jobs per status, kept exact by triggers (migration 0002), so that
# GET /queue reads a handful of rows instead of counting whole tables.
counts = Table(
    "counts",
    metadata,
    Column("kind", String(8), primary_key=True),  # task | job
    Column("name", String(32), primary_key=True),  # the stage or status
    Column("n", BigInteger, nullable=False, server_default="0"),
)

# Every server that shares this database (0004): its stable id (kept under its data dir),
# its host name, and when it last said it was alive. A stop made through one server
# hands the steps that only the owner can do to that owner, named here.
servers = Table(
    "servers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("data_dir", Text, nullable=False, server_default=""),
    Column("pid", Integer),
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
    Column("stopped_at", Float),
    Column("retired_at", Float),
)

# The host-local steps of a reset (0004): stopping an agent's process tree, removing a
# worktree under the owner's data dir. The server carrying out the reset records one row
# per owner and step; the owner does it and records its result here.
host_steps = Table(
    "host_steps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("stop_id", String(64), nullable=False),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("server_id", String(64), nullable=False),
    Column("step", String(32), nullable=False),  # processes | worktree
    Column("status", String(16), nullable=False),  # pending done abandoned
    Column("detail", Text, nullable=False, server_default="{}"),  # JSON: what to do
    Column("result", Text),  # JSON: what the owner did
    Column("created_at", Float, nullable=False),
    Column("done_at", Float),
    UniqueConstraint("stop_id", "server_id", "step"),
    Index(None, "server_id", "status"),
    Index(None, "status"),
)
