"""Alembic environment: the engine comes from `state.db.upgrade()` (or alembic.ini's URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine

from state.schema import metadata


def _engine() -> Engine:
    engine = context.config.attributes.get("engine")
    if engine is not None:
        return engine  # type: ignore[no-any-return]
    return create_engine(context.config.get_main_option("sqlalchemy.url") or "")


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
