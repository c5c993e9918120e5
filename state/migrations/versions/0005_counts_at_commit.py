"""Counts on PostgreSQL: applied once at commit, in one fixed key order.

The 0002 triggers updated a `counts` row the moment a task or job row changed, so a
transaction held those row locks from its first status change to its commit, taken in
whatever order its statements ran. A worker claiming a job locks `job/queued` and then
`job/running`; a worker finishing a job locks `job/running`, then (queueing the next
stage) `job/queued`: two such transactions deadlocked, and ten racing agents made
PostgreSQL abort one every second, past the store's retries.

Now the row triggers only add their +1/-1 to a delta map kept in a transaction-local
setting (`conveyor.count_deltas`, rolled back with its savepoint or transaction), and a
deferred constraint trigger applies the map at commit: one upsert per key, in byte order of
"kind:name", zero deltas skipped. Every transaction takes its counts locks last and in
the same order, so the counts cannot be part of a deadlock. Committed counts stay exact
(GET /queue and /metrics read the same rows); only a transaction reading `counts` after
its own uncommitted changes sees them before they are applied.

SQLite has one writer at a time, so its 0002 triggers stay as they are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SETTING = "conveyor.count_deltas"
WATCHED = (("tasks", "task", "stage"), ("jobs", "job", "status"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The delta map: {"kind:name": delta}; kinds never hold a colon, names may.
    op.execute(f"""
        CREATE FUNCTION conveyor_count_note(k text, name text, delta integer)
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
          buf jsonb := COALESCE(NULLIF(current_setting('{SETTING}', true), ''), '{{}}')::jsonb;
          key text := k || ':' || name;
        BEGIN
          buf := buf || jsonb_build_object(key, COALESCE((buf->>key)::bigint, 0) + delta);
          PERFORM set_config('{SETTING}', buf::text, true);
        END $$
    """)
    op.execute(f"""
        CREATE FUNCTION conveyor_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
          buf text := current_setting('{SETTING}', true);
          r record;
        BEGIN
          IF buf IS NULL OR buf = '' THEN
            RETURN NULL;  -- applied already by an earlier row's trigger at this commit
          END IF;
          PERFORM set_config('{SETTING}', '', true);
          FOR r IN
            SELECT split_part(key, ':', 1) AS kind,
                   substr(key, position(':' IN key) + 1) AS name,
                   value::bigint AS delta
            FROM jsonb_each_text(buf::jsonb)
            ORDER BY key COLLATE "C"
          LOOP
            CONTINUE WHEN r.delta = 0;
            INSERT INTO counts (kind, name, n) VALUES (r.kind, r.name, r.delta)
              ON CONFLICT (kind, name) DO UPDATE SET n = counts.n + EXCLUDED.n;
          END LOOP;
          RETURN NULL;
        END $$
    """)
    for table, kind, column in WATCHED:
        op.execute(f"""
            CREATE OR REPLACE FUNCTION {table}_count() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP IN ('UPDATE', 'DELETE') THEN
                PERFORM conveyor_count_note('{kind}', OLD.{column}, -1);
              END IF;
              IF TG_OP IN ('INSERT', 'UPDATE') THEN
                PERFORM conveyor_count_note('{kind}', NEW.{column}, 1);
              END IF;
              RETURN NULL;
            END $$
        """)
        op.execute(f"""
            CREATE CONSTRAINT TRIGGER {table}_count_apply
            AFTER INSERT OR DELETE OR UPDATE OF {column} ON {table}
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION conveyor_counts_apply()
        """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, kind, column in WATCHED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_count_apply ON {table}")
        op.execute(f"""
            CREATE OR REPLACE FUNCTION {table}_count() RETURNS trigger LANGUAGE plpgsql AS $$
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
    op.execute("DROP FUNCTION IF EXISTS conveyor_counts_apply()")
    op.execute("DROP FUNCTION IF EXISTS conveyor_count_note(text, text, integer)")
