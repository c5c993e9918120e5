"""What conveyor knows of a ticket: the task keeps the ticket's link, description and
labels (for the agent's ticket file); `reconcile_watermarks` the time up to which each
tracker project has been reconciled; `tickets_seen` keeps the last state and labels
seen per ticket, from webhooks and reconciliation passes (edges, label diffs); the
task's pull request (number and web URL) for pull-request mode.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("url", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("description", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("labels", sa.Text(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("ticket_state", sa.String(200)))
        batch.add_column(sa.Column("pr_number", sa.Integer()))
        batch.add_column(sa.Column("pr_url", sa.Text()))
    op.create_table(
        "tickets_seen",
        sa.Column("tracker", sa.String(32), primary_key=True),
        sa.Column("issue_id", sa.String(200), primary_key=True),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("state", sa.String(200)),
        sa.Column("labels", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("signal", sa.String(16)),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float()),
    )
    op.create_table(
        "reconcile_watermarks",
        sa.Column("tracker", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("watermark", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reconcile_watermarks")
    op.drop_table("tickets_seen")
    with op.batch_alter_table("tasks") as batch:
        for name in ("pr_url", "pr_number", "ticket_state", "labels", "description", "url"):
            batch.drop_column(name)
