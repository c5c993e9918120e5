"""Counts kept by the database: tasks per stage and jobs per status.

GET /queue reads these rows instead of counting whole tables, so it stays flat as the
store grows. Triggers keep them exact on every insert, update and delete, whichever
code path (or operator with psql) changes a row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STAGES = ("analysis", "implementation", "review", "merge", "deploy", "blocked", "done", "cancelled")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
WATCHED = (("tasks", "task", "stage"), ("jobs", "job", "status"))


def upgrade() -> None:
    op.create_table(
        "counts",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False, server_default="0"),
    )
    rows = [{"kind": "task", "name": s} for s in STAGES]
    rows += [{"kind": "job", "name": s} for s in STATUSES]
    counts = sa.table("counts", sa.column("kind"), sa.column("name"))
    op.bulk_insert(counts, rows)
    for table, kind, column in WATCHED:
        _backfill(table, kind, column)
        if op.get_bind().dialect.name == "postgresql":
            _postgres_triggers(table, kind, column)
        else:
            _sqlite_triggers(table, kind, column)


def _backfill(table: str, kind: str, column: str) -> None:
    # Stages or statuses not listed above still get a row, so the triggers' UPDATEs land.
    op.execute(
        f"INSERT INTO counts (kind, name, n) SELECT '{kind}', {column}, 0 FROM {table} "
        f"WHERE {column} NOT IN (SELECT name FROM counts WHERE kind = '{kind}') "
        f"GROUP BY {column}"
    )
    op.execute(
        f"UPDATE counts SET n = (SELECT count(*) FROM {table} WHERE {table}.{column} = "
        f"counts.name) WHERE kind = '{kind}'"
    )


def _sqlite_triggers(table: str, kind: str, column: str) -> None:
    plus = f"UPDATE counts SET n = n + 1 WHERE kind = '{kind}' AND name = NEW.{column};"
    minus = f"UPDATE counts SET n = n - 1 WHERE kind = '{kind}' AND name = OLD.{column};"
    op.execute(f"CREATE TRIGGER {table}_count_ins AFTER INSERT ON {table} BEGIN {plus} END")
    op.execute(
        f"CREATE TRIGGER {table}_count_upd AFTER UPDATE OF {column} ON {table} "
        f"WHEN OLD.{column} IS NOT NEW.{column} BEGIN {minus} {plus} END"
    )
    op.execute(f"CREATE TRIGGER {table}_count_del AFTER DELETE ON {table} BEGIN {minus} END")


def _postgres_triggers(table: str, kind: str, column: str) -> None:
    op.execute(f"""
        CREATE FUNCTION {table}_count() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP IN ('UPDATE', 'DELETE') THEN
            UPDATE counts SET n = n - 1 WHERE kind = '{kind}' AND name = OLD.{column};
          END IF;
          IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO counts (kind, name, n) VALUES ('{kind}', NEW.{column}, 1)
              ON CONFLICT (kind, name) DO UPDATE SET n = counts.n + 1;
          END IF;
          RETURN NULL;
        END $$
    """)
    op.execute(f"""
        CREATE TRIGGER {table}_count AFTER INSERT OR DELETE OR UPDATE OF {column} ON {table}
        FOR EACH ROW EXECUTE FUNCTION {table}_count()
    """)


def downgrade() -> None:
    for table, _kind, _column in WATCHED:
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_count ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_count()")
        else:
            for suffix in ("ins", "upd", "del"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_count_{suffix}")
    op.drop_table("counts")
