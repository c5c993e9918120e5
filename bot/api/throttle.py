"""Failed admin authentications, counted per client: ten in a minute and the client's
next attempts are answered 429 with `Retry-After` until its window ends. A right token
is never limited. Pure bookkeeping over the time passed in; the route logs and counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MAX_FAILURES = 10
WINDOW_SECONDS = 60.0
MAX_CLIENTS = 10_000  # tracked at once; the oldest windows are forgotten first


@dataclass
class Window:
    started: float
    failures: int = 0
    refusal_logged: bool = False


@dataclass
class AuthThrottle:
    """Fixed one-minute windows of failures per client address."""

    max_failures: int = MAX_FAILURES
    window_seconds: float = WINDOW_SECONDS
    windows: dict[str, Window] = field(default_factory=dict)

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds the client must wait before its next try, or None when it may try."""
        window = self._current(client, now)
        if window is None or window.failures < self.max_failures:
            return None
        return max(1, math.ceil(window.started + self.window_seconds - now))

    def failed(self, client: str, now: float) -> None:
        """Count one failed authentication."""
        window = self._current(client, now)
        if window is None:
            self._forget_oldest()
            window = self.windows[client] = Window(started=now)
        window.failures += 1

    def first_refusal(self, client: str, now: float) -> bool:
        """True once per window: the refusal worth a log line."""
        window = self._current(client, now)
        if window is None or window.refusal_logged:
            return False
        window.refusal_logged = True
        return True

    def _current(self, client: str, now: float) -> Window | None:
        window = self.windows.get(client)
        if window is not None and now - window.started >= self.window_seconds:
            del self.windows[client]
            return None
        return window

    def _forget_oldest(self) -> None:
        if len(self.windows) >= MAX_CLIENTS:
            oldest = min(self.windows, key=lambda c: self.windows[c].started)
            del self.windows[oldest]
