"""What `conveyor serve` and `conveyor db upgrade` do before any work starts, each failure
one readable line (what, where, what to do): the database answers, the schema is
current, the port is ours; and the start-up log line that says what is in use."""

from __future__ import annotations

import contextlib
import errno
import logging
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import ConfigError, StartError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from bot.settings import Settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 5
UNREACHABLE = (
    "cannot reach the database {where}: {why}; start it, or fix server.database_url "
    "(CONVEYOR_DATABASE_URL)"
)
PORT_IN_USE = (
    "cannot listen on {host}:{port}: the port is in use (another conveyor?); stop that "
    "process, or choose another port with --port or server.port"
)
CANNOT_LISTEN = "cannot listen on {host}:{port}: {why}; fix --host/--port or server.host/port"
BACKLOG = 2048


class DatabaseUnreachable(StartError):
    """The database does not answer."""


class PortInUse(StartError):
    """Another process listens on the port."""


def describe_database(url: str) -> str:
    """`PostgreSQL postgres@db.example:5432/conveyor`, `SQLite /srv/conveyor.db`: never a
    password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "(not a database URL)"
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite {parsed.database or ':memory:'}"
    user = f"{parsed.username}@" if parsed.username else ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"PostgreSQL {user}{parsed.host or 'localhost'}{port}/{parsed.database or ''}"


@contextlib.contextmanager
def _translated(url: str) -> Iterator[None]:
    """A database that does not answer → DatabaseUnreachable, one line, no password."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseUnreachable(
            UNREACHABLE.format(where=describe_database(url), why=_why(exc))
        ) from None


def _why(exc: Exception) -> str:
    """The driver's reason, shortened to its last clause ("Connection refused")."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    reason = text.rsplit("failed: ", 1)[-1].strip()
    return reason.rstrip(".") or type(exc).__name__


def probe_database(url: str, *, schema: bool = False) -> None:
    """`SELECT 1`, giving up after PROBE_TIMEOUT_SECONDS; DatabaseUnreachable otherwise.
    With `schema`, a shared (PostgreSQL) database whose schema is not at head is a
    ConfigError naming `conveyor db upgrade` (SQLite is upgraded by the server itself)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from state.db import make_engine, normalise_url

    normal = normalise_url(url)
    parsed = make_url(normal)
    if parsed.get_backend_name() == "postgresql":
        args = {"connect_timeout": PROBE_TIMEOUT_SECONDS}
        engine = create_engine(normal, poolclass=NullPool, connect_args=args)
    elif parsed.database and parsed.database != ":memory:":
        if not Path(parsed.database).exists():
            return  # made on first start; its folder is checked with the settings
        engine = make_engine(url)
    else:
        return
    try:
        with _translated(url), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        if schema and parsed.get_backend_name() == "postgresql":
            from bot.runtime import check_schema

            with _translated(url):
                check_schema(engine)
    finally:
        engine.dispose()


def upgrade_database(settings: Settings) -> str | None:
    """`conveyor db upgrade`: the schema at head; returns the revision."""
    from state.db import current_revision, make_engine, upgrade

    url = settings.server.database_url
    probe_database(url)
    try:
        engine: Engine = make_engine(url)
    except OSError as exc:  # SQLite's folder cannot be made
        where = describe_database(url)
        raise ConfigError(
            f"cannot create the database {where}: {exc.strerror}; fix "
            "server.database_url (CONVEYOR_DATABASE_URL)"
        ) from None
    try:
        with _translated(url):
            upgrade(engine)
            return current_revision(engine)
    finally:
        engine.dispose()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts work (workers, scheduler)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise StartError(CANNOT_LISTEN.format(host=host, port=port, why=exc.strerror)) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(PORT_IN_USE.format(host=host, port=port)) from None
        raise StartError(CANNOT_LISTEN.format(host=host, port=port, why=exc.strerror)) from None
    sock.set_inheritable(True)
    return sock


def log_start(settings: Settings, *, config: str | None, url: str) -> None:
    """One line with what is in use: config file, database, repos, trackers, agents."""
    log.info(
        "conveyor starting",
        extra={
            "url": url,
            "config": config or "(none: defaults and env)",
            "database": describe_database(settings.server.database_url),
            "data_dir": str(settings.server.data_dir.absolute()),
            "repos": repos_in_use(settings),
            "trackers": trackers_in_use(settings),
            "agents": agents_in_use(settings),
        },
    )


def repos_in_use(settings: Settings) -> str:
    """`app=/srv/app (plane)`, comma-separated; `none`."""
    found = [f"{r.name}={r.path} ({r.tracker})" for r in settings.repos]
    return ", ".join(found) or "none"


def trackers_in_use(settings: Settings) -> str:
    """The trackers the repos name, each with what it has: `plane (webhooks, api)`."""
    names = sorted({repo.tracker for repo in settings.repos})
    parts = []
    for name in names:
        section = settings.tracker(name)
        has = ["webhooks" if section.webhook_secret.get_secret_value() else "no webhook secret"]
        if _has_api_key(section):
            has.append("api")
        parts.append(f"{name} ({', '.join(has)})")
    return ", ".join(parts) or "none"


def _has_api_key(section: object) -> bool:
    for attr in ("api_key", "token", "api_token"):
        value = getattr(section, attr, None)
        if value is not None and value.get_secret_value():
            return True
    return False


def agents_in_use(settings: Settings) -> str:
    """Per agent stage, the program it runs (its first word, never its arguments: a
    command line may carry a key)."""
    parts = []
    for stage in ("analysis", "implementation", "review"):
        command = getattr(settings.agents, stage).strip()
        parts.append(f"{stage}={_program(command) if command else '-'}")
    return " ".join(parts)


def _program(command: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    words = [w for w in words if "=" not in w or w.startswith("-")]  # VAR=value prefixes
    if words and words[0] == "exec" and len(words) > 1:
        words = words[1:]
    names = [word.rsplit("/", 1)[-1] for word in words[:2]]
    if len(names) == 2 and names[0].rstrip("0123456789.") in _INTERPRETERS:
        return " ".join(names)  # "python3 agent.py": the script says more than python3
    return names[0] if names else "?"


_INTERPRETERS = {"python", "sh", "bash", "node", "ruby", "perl", "uv", "npx"}
