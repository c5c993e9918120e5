"""Two real `conveyor serve` processes on one PostgreSQL database, as an operator scaling
out runs them: each with its own clone (of one bare remote) and its own data dir, the
second in its own UTS namespace (`unshare --uts`, root) so that its host name differs,
as on another machine. Shared by the cross-host stop benchmark and the acceptance test.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import (
    Server,
    child_env,
    free_port,
    git,
    make_repo,
    settings_doc,
    to_toml,
)
from state.db import make_engine, normalise_url, upgrade

HOST_B = "conveyor-b"


def unshare_problem() -> str | None:
    """Why a server cannot get a host name of its own here (None: it can)."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    done = subprocess.run(
        ["unshare", "--uts", "hostname", HOST_B], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"unshare --uts is not allowed here (needs root): {done.stderr.strip()}"
    return None


@contextlib.contextmanager
def postgres_database(base_url: str, prefix: str = "conveyor_two") -> Iterator[str]:
    """A fresh database of its own on the server of `base_url`, migrated; dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(base_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalise_url(base_url)).set(database=name).render_as_string(False)
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Pair:
    """Server A (this host's name) and server B (HOST_B), their data dirs and remote."""

    a: Server
    b: Server
    data_a: Path
    data_b: Path
    bare: Path

    def servers(self) -> tuple[Server, Server]:
        return self.a, self.b

    def data_dir(self, server: Server) -> Path:
        return self.data_a if server is self.a else self.data_b

    def stop(self) -> None:
        for server in (self.a, self.b):
            server.stop()


def make_pair(
    root: Path,
    database_url: str,
    token: str,
    *,
    agents: Mapping[str, str],
    workers: Mapping[str, Any] | None = None,
    workers_b: Mapping[str, Any] | None = None,
    stop: Mapping[str, Any] | None = None,
    host_b: str | None = HOST_B,
) -> Pair:
    """Two configured (not yet started) servers sharing `database_url`; B under the
    host name `host_b` (None: this host's, as two servers on one machine)."""
    for side in ("a", "b"):
        (root / side).mkdir(parents=True, exist_ok=True)
    clone_a, bare = make_repo(root / "a")
    clone_b = root / "b" / "app"
    git(root, "clone", "-q", str(bare), str(clone_b))
    for key, value in (("user.name", "Conveyor B"), ("user.email", "b@conveyor.invalid")):
        git(clone_b, "config", key, value)
    servers = []
    for side, clone, extra in (("a", clone_a, workers), ("b", clone_b, workers_b or workers)):
        doc = settings_doc(
            root / side,
            clone,
            free_port(),
            database_url=database_url,
            agents=dict(agents),
            workers=dict(extra or {}),
            stop=dict(stop or {}),
        )
        servers.append(_server(root / side, doc, token, host_b if side == "b" else None))
    return Pair(servers[0], servers[1], root / "a" / "data", root / "b" / "data", bare)


def _server(root: Path, doc: Mapping[str, Any], token: str, hostname: str | None) -> Server:
    config = root / "conveyor.toml"
    config.write_text(to_toml(doc))
    env = child_env(token, CONVEYOR_CONFIG=str(config))
    argv = [sys.executable, "-m", "bot.cli.main", "serve"]
    if hostname is not None:  # its own UTS namespace: another host name, as elsewhere
        argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
    return Server(argv, env, root, int(doc["server"]["port"]), root / "server.log")


def running_hosts(client: httpx.Client) -> dict[str, str]:
    """Task key → host name of the server running its job, from GET /queue."""
    doc = client.get("/queue").json()
    return {row["task"]: row["host"] for row in doc["running"]}


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """`check()` until it returns something truthy (that value), else RuntimeError."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)
