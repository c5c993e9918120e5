"""The sleep and clock ports of JsonApi for tests: nothing really waits."""

from __future__ import annotations


class Sleeps:
    """Records how long the client asked to wait; never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class Clock:
    """A fixed epoch-seconds clock."""

    def __init__(self, now: float = 1_796_035_300.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
