"""The store's idea of the reset's step order is the reset's own."""

from __future__ import annotations

from bot.stopplane.reset import STEPS, STORE_STEPS
from state.models import RESET_STEP_ORDER, step_rank


def test_the_store_knows_the_reset_steps_in_their_order() -> None:
    assert tuple(name for name, _ in STEPS) == RESET_STEP_ORDER
    assert step_rank("tombstone") < step_rank("terminal")  # one transaction, one `at`
    assert step_rank("not-a-step") == len(RESET_STEP_ORDER)


def test_the_step_that_closes_the_stop_is_not_a_store_step() -> None:
    # Store steps record themselves without closing the stop; the last step closes it.
    assert STEPS[-1][0] not in STORE_STEPS
