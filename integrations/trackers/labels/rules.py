"""The label trackers' shared settings, and what their labels and closing ask."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr, field_validator

from integrations.trackers.base import Signal, TrackerSettings
from integrations.trackers.labels.fields import MAX_ID_CHARS
from integrations.trackers.vocabulary import Vocabulary

StopOnClose = Literal["never", "not_planned", "any"]


class LabelTrackerSettings(TrackerSettings):
    """The keys `[trackers.github]` and `[trackers.gitea]` share (DESIGN: Configuration)."""

    token: SecretStr = SecretStr("")
    bot_login: str = ""
    start_labels: tuple[str, ...] = ("conveyor:analyse",)
    stop_labels: tuple[str, ...] = ("conveyor:stop",)
    confirm_deploy_labels: tuple[str, ...] = ("conveyor:deploy",)

    @field_validator("start_labels", "stop_labels", "confirm_deploy_labels")
    @classmethod
    def _labels_are_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(name.strip() for name in value)
        if any(not name or len(name) > MAX_ID_CHARS or "\x00" in name for name in cleaned):
            raise ValueError(f"label names must be 1 to {MAX_ID_CHARS} characters")
        return cleaned

    @field_validator("bot_login")
    @classmethod
    def _login_is_bounded(cls, value: str) -> str:
        if len(value) > MAX_ID_CHARS or "\x00" in value:
            raise ValueError(f"bot_login must be at most {MAX_ID_CHARS} characters")
        return value.strip()

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.of(self.start_labels, self.stop_labels, self.confirm_deploy_labels)


def http_url(value: str, name: str) -> str:
    """A base URL for an API: http(s), no trailing slash (a settings validator helper)."""
    value = value.strip().rstrip("/")
    if value and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"{name} must be an http(s) URL such as https://git.example.com")
    return value


@dataclass(frozen=True)
class LabelRules:
    """Which labels start, stop and confirm, and whether closing an issue stops it."""

    vocabulary: Vocabulary
    stop_on_close: StopOnClose

    def close_stops(self, state_reason: str | None) -> bool:
        if self.stop_on_close == "any":
            return True
        return self.stop_on_close == "not_planned" and state_reason == "not_planned"

    def for_labels(self, labels: Iterable[str]) -> Signal | None:
        """What adding these labels asks (STOP wins)."""
        return self.vocabulary.signal_for_labels(labels)

    def level(
        self, labels: Iterable[str], *, closed: bool, state_reason: str | None
    ) -> Signal | None:
        """What an issue's current labels and state ask, as a level (STOP wins).

        A closed issue that does not stop never asks to start or confirm: a leftover start
        label on a finished issue must not start it again when reconciliation reads it.
        """
        signal = self.for_labels(labels)
        if closed and (signal is Signal.STOP or self.close_stops(state_reason)):
            return Signal.STOP
        return None if closed else signal
