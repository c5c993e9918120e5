"""Shared fixtures: real databases (SQLite in tmp_path, PostgreSQL from a template)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from state.db import make_engine, normalise_url, upgrade
from state.store import Store

PG_ENV = "CONVEYOR_TEST_POSTGRES_URL"
PG_SKIP = f"{PG_ENV} is not set (CI sets it; e.g. postgresql://postgres@127.0.0.1:5432/postgres)"


def _admin_engine(url: str):  # type: ignore[no-untyped-def]
    return create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated template database, cloned for each test that asks for PostgreSQL."""
    url = os.environ.get(PG_ENV)
    if not url:
        yield None
        return
    name = f"conveyor_tpl_{os.getpid()}"
    admin = _admin_engine(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(_with_db(url, name))
    upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _with_db(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(normalise_url(url)).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def postgres_url(pg_template: str | None) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    if pg_template is None:
        pytest.skip(PG_SKIP)
    base = os.environ[PG_ENV]
    name = f"conveyor_t_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(base)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield _with_db(base, name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database with no schema at all (never migrated)."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    name = f"conveyor_e_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(base)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield _with_db(base, name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'conveyor.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Each store test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    upgrade(engine)
    s = Store(engine)
    yield s
    s.dispose()
