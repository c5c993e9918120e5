"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 10:01:04.756453
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tracker", sa.String(length=32), nullable=False),
        sa.Column("issue_id", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("project_id", sa.String(length=200), nullable=True),
        sa.Column("repo", sa.String(length=200), nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("branch", sa.String(length=300), nullable=True),
        sa.Column("branch_sha", sa.String(length=64), nullable=True),
        sa.Column("worktree_path", sa.Text(), nullable=True),
        sa.Column("blocked_reason", sa.Text(), nullable=True),
        sa.Column("awaiting_confirm", sa.Integer(), server_default="0", nullable=False),
        sa.Column("merge_initiated_at", sa.Float(), nullable=True),
        sa.Column("merged_at", sa.Float(), nullable=True),
        sa.Column("merge_sha", sa.String(length=64), nullable=True),
        sa.Column("cancel_requested_at", sa.Float(), nullable=True),
        sa.Column("cancelled_at", sa.Float(), nullable=True),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("tracker", "issue_id", name=op.f("uq_tasks_tracker_issue_id")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_cancelled_at"), ["cancelled_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_key"), ["key"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_stage"), ["stage"], unique=False)

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tracker", sa.String(length=32), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "tracker", "dedup_key", name=op.f("uq_webhook_deliveries_tracker_dedup_key")
        ),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("stop_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), server_default="{}", nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_audit_events_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_task_id_at"), ["task_id", "at"], unique=False
        )

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pgid", sa.Integer(), nullable=True),
        sa.Column("proc_start_time", sa.BigInteger(), nullable=True),
        sa.Column("run_after", sa.Float(), nullable=False),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("heartbeat_at", sa.Float(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_jobs_task_id_tasks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_jobs_status_run_after"), ["status", "run_after"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_jobs_task_id_status"), ["task_id", "status"], unique=False
        )

    op.create_table(
        "merge_leases",
        sa.Column("repo", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_merge_leases_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("repo", name=op.f("pk_merge_leases")),
    )
    op.create_table(
        "pending_cleanups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("stop_id", sa.String(length=64), nullable=True),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), server_default="{}", nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("resolved_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_pending_cleanups_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_cleanups")),
        sa.UniqueConstraint("task_id", "step", name=op.f("uq_pending_cleanups_task_id_step")),
    )
    with op.batch_alter_table("pending_cleanups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_cleanups_status_next_attempt_at"),
            ["status", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "stop_records",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("window", sa.String(length=16), nullable=True),
        sa.Column("steps", sa.Text(), server_default="{}", nullable=False),
        sa.Column("notified_at", sa.Float(), nullable=True),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_stop_records_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stop_records")),
    )
    with op.batch_alter_table("stop_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stop_records_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_stop_records_task_id"), ["task_id"], unique=False)
        batch_op.create_index(
            "uq_stop_records_open_task",
            ["task_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('open', 'deferred')"),
            postgresql_where=sa.text("status IN ('open', 'deferred')"),
        )


def downgrade() -> None:
    with op.batch_alter_table("stop_records", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_stop_records_open_task",
            sqlite_where=sa.text("status IN ('open', 'deferred')"),
            postgresql_where=sa.text("status IN ('open', 'deferred')"),
        )
        batch_op.drop_index(batch_op.f("ix_stop_records_task_id"))
        batch_op.drop_index(batch_op.f("ix_stop_records_status"))

    op.drop_table("stop_records")
    with op.batch_alter_table("pending_cleanups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_cleanups_status_next_attempt_at"))

    op.drop_table("pending_cleanups")
    op.drop_table("merge_leases")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_task_id_status"))
        batch_op.drop_index(batch_op.f("ix_jobs_status_run_after"))

    op.drop_table("jobs")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_task_id_at"))

    op.drop_table("audit_events")
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_stage"))
        batch_op.drop_index(batch_op.f("ix_tasks_key"))
        batch_op.drop_index(batch_op.f("ix_tasks_cancelled_at"))

    op.drop_table("tasks")
