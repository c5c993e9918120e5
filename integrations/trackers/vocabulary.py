"""Which state names (or labels) start, stop and confirm a deploy: one reading for
every tracker's configured lists, case-insensitive, STOP winning over the others."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from integrations.trackers.base import Signal


@dataclass(frozen=True)
class Vocabulary:
    """Which state names (or labels) start, stop and confirm a deploy."""

    start: frozenset[str] = frozenset({"to analyse"})
    stop: frozenset[str] = frozenset({"stop"})
    confirm: frozenset[str] = frozenset({"confirm deploy"})

    @classmethod
    def of(cls, start: Iterable[str], stop: Iterable[str], confirm: Iterable[str]) -> Vocabulary:
        def fold(names: Iterable[str]) -> frozenset[str]:
            return frozenset(n.strip().casefold() for n in names)

        return cls(fold(start), fold(stop), fold(confirm))

    def signal(self, name: str | None) -> Signal | None:
        """STOP wins over start and confirm when a name is in several lists."""
        if name is None:
            return None
        folded = name.strip().casefold()
        for names, signal in (
            (self.stop, Signal.STOP),
            (self.start, Signal.START),
            (self.confirm, Signal.CONFIRM_DEPLOY),
        ):
            if folded in names:
                return signal
        return None

    def signal_for_labels(self, labels: Iterable[str]) -> Signal | None:
        found = {self.signal(label) for label in labels} - {None}
        for signal in (Signal.STOP, Signal.START, Signal.CONFIRM_DEPLOY):
            if signal in found:
                return signal
        return None
