"""The webhook path's statements, prepared once and run on SQLite's own cursor.

Even with its compiled form cached, a Core statement costs ~20 µs of SQLAlchemy's Python
(execution context, cursor result, row objects) around the few microseconds SQLite takes
(a task by id: ~24 µs through Core, ~5 µs on the driver), and a routed STOP runs about a
dozen. On SQLite, a `Prepared` statement is compiled once per set of parameter names (as
SQLAlchemy's own cache keys it) into its SQL text, the order of its placeholders and the
values bound in the statement itself, then run on the DBAPI connection of the same
`Connection`, inside its transaction. Values go through the same bind processors Core
would apply; a statement SQLAlchemy would treat further (expanding IN lists, Python-side
defaults, result processors) runs through Core instead, as does everything on
PostgreSQL and a connection with no transaction begun (Core's autobegin).

Rows come back as plain mappings (column name → value) on both paths.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Executable
from sqlalchemy.exc import DBAPIError

Row = Mapping[str, Any]


@dataclass(frozen=True)
class _Raw:
    sql: str
    order: tuple[str, ...]  # parameter names, in the order of the placeholders
    fixed: dict[str, Any]  # values bound in the statement itself
    convert: dict[str, Callable[[Any], Any]]  # bind processors, by parameter name
    columns: tuple[str, ...]  # result column names ((): no result)


class Prepared:
    """A Core statement (or one per dialect name) to run with parameters by name."""

    def __init__(self, statement: Executable | Mapping[str, Executable]) -> None:
        self._core = statement if isinstance(statement, Mapping) else None
        self._one = None if isinstance(statement, Mapping) else statement
        self._raw: dict[tuple[str, ...], _Raw | None] = {}  # by sorted parameter names

    def statement(self, dialect: str) -> Executable:
        """The Core statement for a dialect."""
        return self._one if self._core is None else self._core[dialect]  # type: ignore[return-value]

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Row]:
        """Every row of the result."""
        raw = self._raw_for(conn, params)
        if raw is None:
            result = conn.execute(self.statement(conn.dialect.name), dict(params))
            return [cast(Row, row._mapping) for row in result]
        cursor = _run(conn, raw, params)
        try:
            return [dict(zip(raw.columns, values, strict=True)) for values in cursor.fetchall()]
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Row | None:
        """The first row, or None."""
        found = self.rows(conn, params)
        return found[0] if found else None

    def value(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None."""
        row = self.first(conn, params)
        return None if row is None else next(iter(row.values()))

    def count(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run it; the rows it changed (an UPDATE's or DELETE's rowcount)."""
        raw = self._raw_for(conn, params)
        if raw is None:
            statement = self.statement(conn.dialect.name)
            return int(conn.execute(statement, dict(params)).rowcount)
        cursor = _run(conn, raw, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _raw_for(self, conn: Connection, params: Mapping[str, Any]) -> _Raw | None:
        if conn.dialect.name != "sqlite" or not conn.in_transaction():
            return None
        keys = tuple(sorted(params))
        try:
            return self._raw[keys]
        except KeyError:
            raw = self._raw[keys] = _compile(self.statement("sqlite"), conn, keys)
            return raw


def _compile(statement: Executable, conn: Connection, keys: Sequence[str]) -> _Raw | None:
    """The statement as SQLite's driver runs it, or None when Core must run it."""
    compiled = statement.compile(dialect=conn.dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    if (
        not conn.dialect.positional
        or compiled.post_compile_params
        or compiled.literal_execute_params
        or compiled.insert_prefetch
        or compiled.update_prefetch
    ):
        return None
    columns = tuple(column.key for column in getattr(statement, "exported_columns", ()))
    for column in getattr(statement, "exported_columns", ()):
        if column.type._cached_result_processor(conn.dialect, None) is not None:
            return None
    binds = compiled.binds
    defaults = compiled.construct_params(_check=False)
    order = tuple(compiled.positiontup or ())
    fixed = {name: defaults[name] for name in order if not binds[name].required}
    convert = {
        name: processor
        for name, processor in compiled._bind_processors.items()
        if name in order and processor is not None
    }
    return _Raw(compiled.string, order, fixed, convert, columns)


def _run(conn: Connection, raw: _Raw, params: Mapping[str, Any]) -> sqlite3.Cursor:
    values = []
    for name in raw.order:
        value = params[name] if name in params else raw.fixed[name]
        convert = raw.convert.get(name)
        values.append(value if convert is None or value is None else convert(value))
    return driver_execute(conn, raw.sql, values)


def driver_execute(conn: Connection, sql: str, values: Sequence[Any] = ()) -> sqlite3.Cursor:
    """`sql` on the SQLite driver's connection under `conn`, in its transaction; a
    driver error raised as SQLAlchemy would have raised it."""
    driver = conn.connection.dbapi_connection
    try:
        return driver.execute(sql, values)  # type: ignore[union-attr,no-any-return]
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
