"""Run the app under uvicorn; SIGINT/SIGTERM shut the lifespan down cleanly, exit 0.

Before anything starts work: the offline checks (`conveyor check`; a problem → one line
each, exit 2), the database answers, the port is bound (else one line, exit 3). Only
then does uvicorn run the lifespan (workers, scheduler) on the socket already held.

`serving_in_thread` runs the same app in a background thread (the demo, tests).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator

import uvicorn

from bot import check, startup
from bot.app import create_app
from bot.errors import ConfigError, ConveyorError
from bot.http_limits import connection_limits
from bot.services import Services
from bot.settings import Settings

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Ending(uvicorn.Server):
    """Ends the dashboard's open streams when shutdown starts: uvicorn waits for every
    response to finish, and an event stream otherwise runs on for up to 15 s."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        from bot.ui.streams import end_streams

        await end_streams(self.config.app)
        await super().shutdown(sockets=sockets)


class _Server(_Ending):
    """uvicorn re-raises the caught signal after shutdown (exit status -15/130); a clean
    shutdown on request is a success for conveyor, so only ask uvicorn to exit."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # What exists once the app has started (modules, the app, its services) lives as
        # long as the process: kept out of the collector's full passes, which otherwise
        # walk all of it and held the GIL for up to ~85 ms in the middle of the webhook
        # load (bench/webhook_intake.py), every request waiting behind them. Only here,
        # in the process `conveyor serve` owns; never in tests or `serving_in_thread`.
        gc.collect()
        gc.freeze()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class CheckFailed(ConfigError):
    """`conveyor serve` found problems in the configuration: one line each."""

    def __init__(self, findings: list[check.Finding]) -> None:
        super().__init__("\n".join(f.line() for f in findings))
        self.findings = findings


def preflight(settings: Settings) -> None:
    """The offline checks, then the database: CheckFailed, or DatabaseUnreachable."""
    findings = check.dedupe(check.offline(settings))
    for finding in findings:
        if finding.level is check.Level.WARNING:
            log.warning(
                "configuration warning", extra={"setting": finding.where, "reason": finding.message}
            )
    problems = check.problems(findings)
    if problems:
        raise CheckFailed(problems)
    startup.probe_database(settings.server.database_url, schema=True)


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    config: str | None = None,
) -> int:
    """Check, bind, then serve until signalled; returns the exit status."""
    preflight(settings)
    host = host or settings.server.host
    port = port or settings.server.port
    sock = startup.bind(host, port)
    try:
        startup.log_start(settings, config=config, url=f"http://{host}:{port}")
        uvicorn_config = uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            **connection_limits(settings),
        )
        server = _Server(uvicorn_config)
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


@contextlib.contextmanager
def serving_in_thread(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    start_timeout: float = 30.0,
    configure: Callable[[Services], None] | None = None,
) -> Iterator[str]:
    """The app under uvicorn in a background thread on a free port of `host`; yields its
    URL and shuts the server (and its lifespan) down on the way out. `configure` may swap
    ports (the demo's fake forge)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))  # the kernel's free port, held from now on: no race with others
    port = sock.getsockname()[1]
    app = create_app(settings, configure=configure)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", **connection_limits(settings)
    )
    server = _Ending(config)
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
