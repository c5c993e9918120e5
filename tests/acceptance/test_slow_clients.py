"""Slow or idle clients cannot hold a connection: the real server (uvicorn with
conveyor's limits, on a loopback port) drops a request whose headers never finish, whose
body trickles in past the body time limit, or that idles after an answer."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bot.cli.main import main
from bot.http_limits import connection_limits
from bot.serve import serving_in_thread
from tests.acceptance.intake import make_settings

LIMIT = 0.5  # seconds: the configured header, body and keep-alive limits
PATIENCE = 20.0  # far above the limit: the test checks behaviour, never speed


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    settings = make_settings(
        tmp_path,
        server={
            "header_timeout_seconds": LIMIT,
            "body_timeout_seconds": LIMIT,
            "keep_alive_seconds": 1,
        },
        reconcile={"enabled": False},
    )
    with serving_in_thread(settings) as url:
        parts = urlsplit(url)
        yield parts.hostname or "127.0.0.1", parts.port or 80


def closed_by_server(sock: socket.socket, *, trickle: bytes = b"") -> bytes:
    """Wait (sending `trickle` a byte at a time) until the server closes; what it said."""
    received = b""
    deadline = time.monotonic() + PATIENCE
    pending = list(trickle)
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
        elif pending:
            try:
                sock.send(bytes([pending.pop(0)]))
            except OSError:
                return received
    raise AssertionError(f"the server kept the connection open for {PATIENCE} s")


@pytest.mark.timeout(120)
def test_headers_that_never_finish_are_dropped(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        sock.sendall(b"POST /webhooks/plane HTTP/1.1\r\nHost: conveyor\r\n")
        assert closed_by_server(sock) == b""


@pytest.mark.timeout(120)
def test_headers_sent_a_byte_at_a_time_are_dropped(server: tuple[str, int]) -> None:
    endless = b"GET /healthz HTTP/1.1\r\nHost: conveyor\r\nX-Slow: " + b"a" * 100_000
    with socket.create_connection(server) as sock:
        assert closed_by_server(sock, trickle=endless) == b""


@pytest.mark.timeout(120)
def test_a_body_that_trickles_in_gets_408_and_the_connection_closes(
    server: tuple[str, int],
) -> None:
    head = (
        b"POST /webhooks/plane HTTP/1.1\r\nHost: conveyor\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )
    with socket.create_connection(server) as sock:
        sock.sendall(head)
        answer = closed_by_server(sock, trickle=b" " * 100_000)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive in time" in answer


@pytest.mark.timeout(120)
def test_a_refused_body_lingers_so_the_client_reads_its_answer(
    server: tuple[str, int],
) -> None:
    """After the 408 the server shuts its write side and drains what the client still
    sends for a while: a client that keeps sending is not reset (a reset can destroy the answer
    before the client reads it, the way a loaded machine once lost this 408)."""
    head = (
        b"POST /webhooks/plane HTTP/1.1\r\nHost: conveyor\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )
    with socket.create_connection(server) as sock:
        sock.sendall(head)
        answer = closed_by_server(sock)  # the body stalls: 408, then end of stream
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        sock.sendall(b" " * 4096)  # the client has not noticed yet and sends on
        time.sleep(0.3)  # a closed socket would have answered those bytes with a reset
        sock.sendall(b" " * 4096)  # so this raises BrokenPipeError unless the server drains


@pytest.mark.timeout(120)
def test_an_idle_keep_alive_connection_is_closed(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: conveyor\r\n\r\n")
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("variable", "key"),
    [
        ("CONVEYOR_ADMIN_TOKEN", "server.admin_token"),
        ("CONVEYOR_PLANE_WEBHOOK_SECRET", "trackers.plane.webhook_secret"),
        ("CONVEYOR_GITHUB_WEBHOOK_SECRET", "trackers.github.webhook_secret"),
        ("CONVEYOR_JIRA_WEBHOOK_SECRET", "trackers.jira.webhook_secret"),
    ],
)
def test_serve_refuses_to_start_with_a_short_secret_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    key: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, "short-secret")
    monkeypatch.setenv("CONVEYOR_PORT", "1")  # never reached: it refuses before binding
    code = main(["serve"])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and key in err and "16 characters" in err
    assert "short-secret" not in err
    assert not (tmp_path / ".conveyor").exists()  # nothing was started or created


def test_the_server_is_given_its_connection_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"max_connections": 7, "keep_alive_seconds": 3})
    limits = connection_limits(settings)
    assert (limits["limit_concurrency"], limits["timeout_keep_alive"]) == (7, 3)
    assert limits["http"].header_timeout == settings.server.header_timeout_seconds
