"""Savepoints at what the database charges for them.

SQLAlchemy's `begin_nested` compiles its SAVEPOINT, RELEASE and ROLLBACK TO afresh every
time (each savepoint has its own name, so the compiled form is never cached): ~75 µs a
SAVEPOINT and RELEASE pair on SQLite, against ~2 µs on the DBAPI connection. A routed
webhook takes up to three (its write's in a group commit, the stop decision's
compare-and-set, the guarded read of the critical window), so on SQLite they are issued
on the driver's connection, in the same transaction. PostgreSQL keeps `begin_nested`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from state.prepared import driver_execute

_names = itertools.count(1)  # unique within a connection's nesting; next() is atomic


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """The block inside a SAVEPOINT of `conn`'s transaction: if it raises, its writes are
    rolled back and the transaction goes on; the exception is raised again."""
    if conn.dialect.name != "sqlite":
        with conn.begin_nested():
            yield
        return
    name = f"conveyor_{next(_names)}"
    driver_execute(conn, f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        # If SQLite ended the whole transaction (a full disk, an I/O error), there is no
        # savepoint left: that error is raised instead, as a database error.
        driver_execute(conn, f"ROLLBACK TO SAVEPOINT {name}")
        driver_execute(conn, f"RELEASE SAVEPOINT {name}")
        raise
    driver_execute(conn, f"RELEASE SAVEPOINT {name}")
