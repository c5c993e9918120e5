"""PostgreSQL LISTEN: one connection per server that hears the database's notifications
(a job queued, a reset step handed to this server) and reconnects when it is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

JOBS_CHANNEL = "conveyor_jobs"  # payload: empty (migration 0004's trigger on jobs)
HOST_STEPS_CHANNEL = "conveyor_host_steps"  # payload: the owner's server id
KEEPALIVE_SECONDS = 15.0  # a silent connection is checked this often
RETRY_SECONDS = 1.0

OnNotify = Callable[[str, str], None]
OnConnected = Callable[[bool], None]


APPLICATION_PREFIX = "conveyor-listen:"  # + the server id: who is listening, seen by all


def conninfo(url: URL, server_id: str) -> str:
    """The libpq URL of an SQLAlchemy PostgreSQL URL (psycopg wants no driver name),
    naming the session after the server, so other servers see that it is there."""
    named = url.set(drivername="postgresql").update_query_dict(
        {"application_name": APPLICATION_PREFIX + server_id}
    )
    return named.render_as_string(hide_password=False)


def listening_servers(conn: Connection) -> set[str] | None:
    """The ids of the servers whose LISTEN session is connected right now (PostgreSQL:
    a killed server's session ends with it); None on SQLite."""
    if conn.dialect.name != "postgresql":
        return None
    rows = conn.execute(
        text("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE :p"),
        {"p": APPLICATION_PREFIX + "%"},
    )
    return {str(r[0])[len(APPLICATION_PREFIX) :] for r in rows}


async def listen(
    info: str,
    channels: Sequence[str],
    on_notify: OnNotify,
    on_connected: OnConnected,
    *,
    retry_seconds: float = RETRY_SECONDS,
) -> None:
    """Hear `channels` until cancelled; `on_connected(True)` after each (re)connect, so
    the caller can catch up on what was sent while nobody listened."""
    while True:
        try:
            await _session(info, channels, on_notify, on_connected)
        except psycopg.Error as exc:
            log.warning("notification connection lost; retrying", extra={"error": str(exc)})
        finally:
            on_connected(False)
        await asyncio.sleep(retry_seconds)


async def _session(
    info: str, channels: Sequence[str], on_notify: OnNotify, on_connected: OnConnected
) -> None:
    async with await psycopg.AsyncConnection.connect(info, autocommit=True) as conn:
        for channel in channels:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        on_connected(True)
        while True:
            async for note in conn.notifies(timeout=KEEPALIVE_SECONDS):
                on_notify(note.channel, note.payload)
            await conn.execute("SELECT 1")  # a dead connection raises here
