"""The last check on what a tracker says a ticket is called, before anything is stored
or named from it: whatever the adapter, an issue id or key that is too long for the
store, carries control characters, or reads as a tombstone (``…#cancelled-<n>``, so it
could take another task's freed name and block its stop) is refused. Each adapter has
already refused ids without its tracker's own shape (a UUID for Plane and Linear,
digits for Jira, ``owner/name#12`` for GitHub and Gitea)."""

from __future__ import annotations

from integrations.trackers.base import BadPayload, TicketRef
from state.store import parse_tombstone

MAX_REF_CHARS = 200  # the store's issue_id and key columns
BAD_REF = "{field} {problem}; refusing the delivery"


def ref_problem(ref: TicketRef) -> str | None:
    """What is wrong with a ticket's issue id or key, or None."""
    for field, value in (("issue id", ref.issue_id), ("key", ref.key)):
        problem = _value_problem(value)
        if problem is not None:
            return BAD_REF.format(field=field, problem=problem)
    return None


def _value_problem(value: str) -> str | None:
    if not value.strip():
        return "is empty"
    if len(value) > MAX_REF_CHARS:
        return f"is longer than {MAX_REF_CHARS} characters"
    if not value.isprintable():
        return "has control characters"
    if parse_tombstone(value) is not None or "#cancelled-" in value:
        return "has the shape of a tombstone (#cancelled-<n>)"
    return None


def check_ref(ref: TicketRef) -> None:
    """Raise BadPayload (400) when `ref_problem` finds something."""
    problem = ref_problem(ref)
    if problem is not None:
        raise BadPayload(problem)
