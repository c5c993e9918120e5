"""What the benchmarks share: a throw-away workspace (a git clone with a bare remote),
settings written as TOML for a real `conveyor serve` process on a loopback port, signed
Plane deliveries, a watch on process groups, and percentiles."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from integrations.processes import processes_with_env
from integrations.trackers.plane.payloads import build_v1_payload
from integrations.trackers.plane.webhook import sign

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # every server and every request of the benchmarks stays on loopback

SECRET = "plane_wh_bench_secret"
PROJECT = "8f0c6a52-3d1e-4b7a-9c2d-5e6f7a8b9c0d"
IDENTIFIER = "BENCH"
ACTOR = "3c9a1f7e-2b4d-4e6f-8a0b-1c2d3e4f5a6b"
STATES = {
    "To Analyse": ("c490adf0-9b37-4095-b695-b1523c9091f0", "unstarted"),
    "In Progress": ("5e2d6691-2878-4fe7-b8e1-d2ccb149c5cd", "started"),
    "STOP": ("e14a6af2-d4b4-42dc-8e20-d57645086590", "cancelled"),
}
# Every process a benchmark starts (servers, agents, their children) carries this
# variable with the run's token, so survivors can be found and nothing else is touched.
MARK = "CONVEYOR_BENCH_RUN"


# -- numbers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Percentiles of a sample, in seconds."""

    n: int
    p50: float
    p99: float
    max: float
    mean: float

    def ms(self, name: str) -> str:
        return f"{getattr(self, name) * 1000:.1f}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    return Summary(
        n=len(values),
        p50=percentile(values, 50),
        p99=percentile(values, 99),
        max=max(values),
        mean=statistics.fmean(values),
    )


def ratio(a: float, b: float) -> float:
    """a / b, nan when b is not a positive number."""
    return a / b if b > 0 and not math.isnan(b) else math.nan


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


# -- git -------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd`; its stripped stdout, or RuntimeError with git's complaint."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def make_repo(root: Path, name: str = "app") -> tuple[Path, Path]:
    """A clone at root/<name> with one commit pushed to a bare remote; (clone, bare)."""
    bare, clone = root / f"{name}-remote.git", root / name
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    git(root, "init", "-q", "-b", "main", str(clone))
    for key, value in (
        ("user.name", "Conveyor Bench"),
        ("user.email", "bench@conveyor.invalid"),
        ("commit.gpgsign", "false"),
    ):
        git(clone, "config", key, value)
    git(clone, "remote", "add", "origin", str(bare))
    (clone / "README.md").write_text("bench\n")
    git(clone, "add", "README.md")
    git(clone, "commit", "-q", "-m", "initial commit")
    git(clone, "push", "-q", "-u", "origin", "main")
    return clone, bare


# -- settings --------------------------------------------------------------------------------


def settings_doc(
    root: Path,
    clone: Path,
    port: int,
    *,
    database_url: str | None = None,
    agents: Mapping[str, str] | None = None,
    workers: Mapping[str, Any] | None = None,
    stop: Mapping[str, Any] | None = None,
    log_format: str = "text",
) -> dict[str, Any]:
    """conveyor.toml as a dict: one repo `app` mapped to the bench's Plane project."""
    return {
        "server": {
            "host": HOST,
            "port": port,
            "database_url": database_url or f"sqlite:///{root / 'conveyor.db'}",
            "data_dir": str(root / "data"),
            "admin_token": "bench-admin-token",
            "log_format": log_format,
        },
        "workers": {"concurrency": 2, **(workers or {})},
        "stop": {"grace_seconds": 1, **(stop or {})},
        "trackers": {
            "plane": {"webhook_secret": SECRET, "project_identifiers": {PROJECT: IDENTIFIER}}
        },
        "agents": dict(agents or {}),
        "repos": [{"name": "app", "path": str(clone), "tracker_project": PROJECT}],
    }


def to_toml(doc: Mapping[str, Any]) -> str:
    """Just enough TOML for a settings dict: tables, arrays of tables, scalars, lists."""
    lines: list[str] = []
    for section, body in doc.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in item.items()]
        else:
            _table(lines, section, body)
    return "\n".join(lines) + "\n"


def _table(lines: list[str], name: str, body: Mapping[str, Any]) -> None:
    lines.append(f"[{name}]")
    nested = {k: v for k, v in body.items() if isinstance(v, Mapping)}
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in body.items() if k not in nested]
    for key, sub in nested.items():
        _table(lines, f"{name}.{json.dumps(key)}", sub)


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def child_env(token: str, **extra: str) -> dict[str, str]:
    """This environment without any CONVEYOR_* setting (the config file rules), marked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env[MARK] = token
    env.update(extra)
    return env


class Server:
    """A server subprocess on 127.0.0.1:<port>, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, port: int, log: Path):
        self.argv, self.env, self.cwd, self.port, self.log = argv, env, cwd, port, log
        self.url = f"http://{HOST}:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /healthz in {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL if it does not exit in time; the status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def conveyor_server(
    root: Path, doc: Mapping[str, Any], token: str, name: str = "conveyor"
) -> Server:
    """`conveyor serve` (the real CLI) with `doc` as its conveyor.toml."""
    config = root / f"{name}.toml"
    config.write_text(to_toml(doc))
    env = child_env(token, CONVEYOR_CONFIG=str(config))
    argv = [sys.executable, "-m", "bot.cli.main", "serve"]
    return Server(argv, env, root, int(doc["server"]["port"]), root / f"{name}.log")


def bare_server(root: Path, token: str) -> Server:
    """The floor: a bare Starlette endpoint on the same uvicorn settings."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_app", "--port", str(port)]
    return Server(argv, child_env(token), root, port, root / "bare.log")


def survivors(token: str) -> list[int]:
    """Live processes a benchmark run started (servers excluded once they have exited)."""
    return [pid for pid in processes_with_env(MARK, token) if pid != os.getpid()]


def kill_survivors(token: str) -> list[int]:
    """SIGKILL, by pid, whatever this run started and left behind; the pids found."""
    found = survivors(token)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return found


def new_token() -> str:
    return uuid.uuid4().hex


# -- Plane deliveries ------------------------------------------------------------------------


def issue_id(ticket: int) -> str:
    """A stable Plane-like issue UUID for ticket number `ticket`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor-bench:issue:{ticket}"))


def plane_body(ticket: int, state: str, stamp: str, *, field: str = "state_id") -> bytes:
    """A v1 issue update as Plane sends it; `field` other than state_id is ignored."""
    state_id, group = STATES[state]
    doc = build_v1_payload(
        issue_id=issue_id(ticket),
        project_id=PROJECT,
        sequence_id=ticket,
        title=f"Bench ticket {ticket}",
        state_id=state_id,
        state_name=state,
        state_group=group,
        old_state_id=None,
        actor_id=ACTOR,
        actor_name="bench",
        updated_at=stamp,
        field=field,
    )
    if field != "state_id":
        doc["activity"].update(new_value="high", old_value="none")
    return json.dumps(doc).encode()


def stamp(n: int) -> str:
    """A distinct updated_at for event number n."""
    return f"2026-11-21T10:00:00.{n:09d}Z"


def plane_headers(body: bytes) -> dict[str, str]:
    """Signed, with a fresh X-Plane-Delivery as Plane sends on every try."""
    return {
        "Content-Type": "application/json",
        "X-Plane-Event": "issue",
        "X-Plane-Delivery": uuid.uuid4().hex,
        "X-Plane-Signature": sign(SECRET, body),
    }


def task_key(ticket: int) -> str:
    return f"{IDENTIFIER}-{ticket}"


# -- process groups --------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, start time) of a pid, None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[19])


def group_snapshot(pgid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live member of a process group, read from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) and st[1] == pgid and st[0] not in "ZX":
            found.append((int(name), st[2]))
    return found


def members_gone(members: Sequence[tuple[int, int]]) -> bool:
    """True when none of the snapshot's processes lives (zombies count as gone, as in
    conveyor: an orphan's zombie may never be reaped by PID 1 here)."""
    for pid, start in members:
        st = _stat(pid)
        if st is not None and st[2] == start and st[0] not in "ZX":
            return False
    return True


@contextlib.contextmanager
def workspace(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary directory, removed afterwards unless `keep`."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"conveyor-bench-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


class GroupWatcher:
    """A thread that looks at watched process groups every `interval` seconds and notes
    (time.monotonic) when each has no live member left."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.interval = interval
        self.pending: dict[str, Sequence[tuple[int, int]]] = {}
        self.emptied: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="group-watcher", daemon=True)

    def watch(self, name: str, members: Sequence[tuple[int, int]]) -> None:
        with self._lock:
            self.pending[name] = members

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for name, members in list(self.pending.items()):
                    if members_gone(members):
                        self.emptied[name] = time.monotonic()
                        del self.pending[name]

    def wait(self, timeout: float) -> bool:
        """True when every watched group emptied within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.pending:
                    return True
            time.sleep(0.01)
        return False

    def __enter__(self) -> GroupWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
