"""`conveyor serve` as a user runs it: a real process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.app import create_app
from bot.settings import settings_from_dict
from tests.apptools import app_client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, "CONVEYOR_PORT": str(port)}
    env.pop("CONVEYOR_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli.main", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200
        assert (tmp_path / ".conveyor" / "conveyor.db").exists()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "Application shutdown complete" in out


async def test_readyz_is_503_when_the_database_does_not_answer(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = settings_from_dict(
        {
            "server": {
                "database_url": f"postgresql://nobody@127.0.0.1:{port}/none",
                "data_dir": str(tmp_path / "data"),
            }
        }
    )
    async with app_client(create_app(settings, start_background=False)) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["database"] == "unreachable"
