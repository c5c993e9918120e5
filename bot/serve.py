"""Run the app under uvicorn; SIGINT/SIGTERM shut the lifespan down cleanly, exit 0.

`serving_in_thread` runs the same app in a background thread (the demo, tests).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Generator, Iterator

import uvicorn

from bot.app import create_app
from bot.errors import ConveyorError
from bot.http_limits import connection_limits
from bot.settings import Settings

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn re-raises the caught signal after shutdown (exit status -15/130); a clean
    shutdown on request is a success for conveyor, so only ask uvicorn to exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> int:
    """Serve until signalled; returns the exit status."""
    config = uvicorn.Config(
        create_app(settings),
        host=host or settings.server.host,
        port=port or settings.server.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        **connection_limits(settings),
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1


@contextlib.contextmanager
def serving_in_thread(
    settings: Settings, *, host: str = "127.0.0.1", start_timeout: float = 30.0
) -> Iterator[str]:
    """The app under uvicorn in a background thread on a free port of `host`; yields its
    URL and shuts the server (and its lifespan) down on the way out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))  # the kernel's free port, held from now on: no race with others
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,
        access_log=False,
        lifespan="on",
        **connection_limits(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="conveyor-server", daemon=True
    )
    thread.start()
    try:
        _wait_started(server, thread, start_timeout)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout)
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConveyorError("the server did not start; its log says why")
        time.sleep(0.02)
