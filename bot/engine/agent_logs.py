"""Agent log files: where a job's output goes, its last lines for the job's `error`, and
byte ranges of it for `GET /tasks/{ref}/logs` (a live log is read while it grows)."""

from __future__ import annotations

import os
from pathlib import Path

TAIL_LINES = 10
TAIL_BYTES = 8192
MAX_ERROR = 2000


def job_log_path(logs_dir: Path, job_id: int) -> Path:
    """`<data_dir>/logs/<task>/<job>.log` (DESIGN "Agent process contract")."""
    return logs_dir / f"{job_id}.log"


def tail(path: Path, lines: int, *, max_bytes: int = 1 << 20, end: int | None = None) -> bytes:
    """The last `lines` lines of the file before `end` (at most `max_bytes`); b"" when it
    is missing."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END) if end is None else end
            chunk, found = 4096, b""
            while True:
                start = max(0, size - chunk)
                f.seek(start)
                found = f.read(size - start)
                if start == 0 or found.count(b"\n") > lines or len(found) >= max_bytes:
                    break
                chunk *= 2
    except OSError:
        return b""
    kept = found.splitlines(keepends=True)[-lines:]
    return b"".join(kept)[-max_bytes:]


def read_from(path: Path, offset: int, *, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
    """The bytes from `offset` (at most `max_bytes`) and the offset after them."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(max_bytes)
    except OSError:
        return b"", offset
    return data, offset + len(data)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def failure(exit_code: int, path: Path) -> str:
    """A failed agent's `error`: its exit status on the first line (the reason a task is
    blocked with), then the last lines it printed."""
    head = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit status {exit_code}"
    text = tail(path, TAIL_LINES, max_bytes=TAIL_BYTES).decode("utf-8", "replace").strip()
    if not text:
        return f"{head}\nthe agent printed nothing (log {path})"
    if len(text) > MAX_ERROR:
        text = "…" + text[-(MAX_ERROR - 1) :]
    return f"{head}\nlast output:\n{text}"
