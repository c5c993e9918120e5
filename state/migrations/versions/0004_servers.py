"""Several servers on one database: each server's identity (`servers`), the server and
host that claimed each job, the server whose data dir holds a task's worktree, and the
host-local steps of a reset handed to their owner (`host_steps`), and which server
runs each stop's reset (`stop_records.runner`, until `runner_until`).

On PostgreSQL, triggers NOTIFY `conveyor_jobs` when a job is queued (idle workers on
every server wake without polling) and `conveyor_host_steps` (payload: the owner's
server id) when a host step is recorded, so the owner acts within milliseconds; each
server's own polling stays as the backstop for a lost notification or connection.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JOBS_CHANNEL = "conveyor_jobs"
HOST_STEPS_CHANNEL = "conveyor_host_steps"


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("worktree_server", sa.String(64)))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("server_id", sa.String(64)))
        batch.add_column(sa.Column("host", sa.String(255)))
    with op.batch_alter_table("stop_records") as batch:
        batch.add_column(sa.Column("runner", sa.String(64)))
        batch.add_column(sa.Column("runner_until", sa.Float()))
    op.create_table(
        "servers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("data_dir", sa.Text(), nullable=False, server_default=""),
        sa.Column("pid", sa.Integer()),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("stopped_at", sa.Float()),
        sa.Column("retired_at", sa.Float()),
        sa.PrimaryKeyConstraint("id", name="pk_servers"),
    )
    op.create_table(
        "host_steps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("stop_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("result", sa.Text()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("done_at", sa.Float()),
        sa.PrimaryKeyConstraint("id", name="pk_host_steps"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_host_steps_task_id_tasks"),
        sa.UniqueConstraint(
            "stop_id", "server_id", "step", name="uq_host_steps_stop_id_server_id_step"
        ),
    )
    op.create_index("ix_host_steps_server_id_status", "host_steps", ["server_id", "status"])
    op.create_index("ix_host_steps_status", "host_steps", ["status"])
    if op.get_bind().dialect.name == "postgresql":
        _postgres_notifications()


def _postgres_notifications() -> None:
    # NOTIFY is sent at commit, and identical notifications of one transaction fold into
    # one: a transaction queueing many jobs wakes each listener once.
    op.execute(
        "CREATE OR REPLACE FUNCTION conveyor_notify_job_queued() RETURNS trigger AS $$ "
        f"BEGIN PERFORM pg_notify('{JOBS_CHANNEL}', ''); RETURN NULL; END $$ "
        "LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE TRIGGER conveyor_jobs_queued AFTER INSERT OR UPDATE OF status ON jobs "
        "FOR EACH ROW WHEN (NEW.status = 'queued') "
        "EXECUTE FUNCTION conveyor_notify_job_queued()"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION conveyor_notify_host_step() RETURNS trigger AS $$ "
        f"BEGIN PERFORM pg_notify('{HOST_STEPS_CHANNEL}', NEW.server_id); RETURN NULL; "
        "END $$ LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE TRIGGER conveyor_host_step_pending AFTER INSERT ON host_steps "
        "FOR EACH ROW WHEN (NEW.status = 'pending') "
        "EXECUTE FUNCTION conveyor_notify_host_step()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS conveyor_host_step_pending ON host_steps")
        op.execute("DROP FUNCTION IF EXISTS conveyor_notify_host_step()")
        op.execute("DROP TRIGGER IF EXISTS conveyor_jobs_queued ON jobs")
        op.execute("DROP FUNCTION IF EXISTS conveyor_notify_job_queued()")
    op.drop_index("ix_host_steps_status", table_name="host_steps")
    op.drop_index("ix_host_steps_server_id_status", table_name="host_steps")
    op.drop_table("host_steps")
    op.drop_table("servers")
    with op.batch_alter_table("stop_records") as batch:
        batch.drop_column("runner_until")
        batch.drop_column("runner")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("host")
        batch.drop_column("server_id")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("worktree_server")
