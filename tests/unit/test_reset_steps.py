"""The store's idea of the reset's step order is the reset's own."""

from __future__ import annotations

from bot.stopplane.reset import STEPS
from state.stops import RESET_STEP_ORDER, step_rank


def test_the_store_knows_the_reset_steps_in_their_order() -> None:
    assert tuple(name for name, _ in STEPS) == RESET_STEP_ORDER
    assert step_rank("tombstone") < step_rank("terminal")  # one transaction, one `at`
    assert step_rank("not-a-step") == len(RESET_STEP_ORDER)
