"""Run the app under uvicorn; SIGINT/SIGTERM shut the lifespan down cleanly, exit 0."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Generator

import uvicorn

from bot.app import create_app
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
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1
