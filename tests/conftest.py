"""Shared fixtures: real databases (SQLite in tmp_path, PostgreSQL from a template)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def _fresh_database(base: str, prefix: str, template: str | None) -> Iterator[str]:
    """A new database on the server of `base` (a copy of `template`, or empty), dropped
    afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = _admin_engine(base)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield _with_db(base, name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(pg_template: str | None, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    # Marked in the JUnit report, so that .ci/run can count the PostgreSQL tests that ran.
    request.node.user_properties.append(("database", "postgresql"))
    if pg_template is None:
        pytest.skip(PG_SKIP)
    with _fresh_database(os.environ[PG_ENV], "conveyor_t_", pg_template) as url:
        yield url


@pytest.fixture
def empty_postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database with no schema at all (never migrated)."""
    request.node.user_properties.append(("database", "postgresql"))
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    with _fresh_database(base, "conveyor_e_", None) as url:
        yield url


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


@contextmanager
def migrated_store(url: str) -> Iterator[Store]:
    """A Store on `url`, its schema brought to head, disposed afterwards."""
    engine = make_engine(url)
    upgrade(engine)
    s = Store(engine)
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with migrated_store(db_url) as s:
        yield s


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app_db(request: pytest.FixtureRequest) -> dict[str, str]:
    """The app's database as a settings override: the stop plane's acceptance tests run
    on SQLite (the harness's default) and on a fresh PostgreSQL database of their own."""
    if request.param == "sqlite":
        return {}
    return {"server.database_url": request.getfixturevalue("postgres_url")}
