"""A ref names a task: its id, its tracker's issue id or key (`PROJ-42`), optionally
qualified with the tracker (`jira:PROJ-42`) when two trackers share a key.

`resolve_task` is what the HTTP API uses: a bare ref that matches tasks of more than
one tracker is `Ambiguous` (the API answers 409 naming the candidates) rather than a
guess, because a guess could stop the wrong ticket's work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection

from state.models import Task
from state.store import MAX_TASK_ID, get_task, original_key, tasks_matching

# `<tracker>:<rest>`: tracker names are short lowercase words (plane, github, jira, …).
_QUALIFIED = re.compile(r"^(?P<tracker>[a-z][a-z0-9_-]{0,31}):(?P<rest>.+)$", re.DOTALL)


@dataclass(frozen=True)
class Ambiguous:
    """A bare ref that names tasks of several trackers; `candidates` are qualified refs."""

    ref: str
    candidates: tuple[str, ...]


def resolve_task(conn: Connection, ref: str) -> Task | Ambiguous | None:
    """The task `ref` names: by id, else by issue id or key (the live task first, else
    the newest tombstoned one), within the named tracker when the ref is qualified."""
    ref = ref.strip()
    if not ref or "\x00" in ref:  # PostgreSQL refuses NUL in text; nothing matches it
        return None
    if ref.isascii() and ref.isdigit() and 0 < int(ref) <= MAX_TASK_ID:
        task = get_task(conn, int(ref))
        if task is not None:
            return task
    qualified = _QUALIFIED.match(ref)
    if qualified is not None:
        found = tasks_matching(conn, qualified["rest"].strip(), qualified["tracker"])
        if found:
            return found[0]
    # Unqualified, or a key that merely contains a colon.
    found = tasks_matching(conn, ref)
    if len(found) > 1:
        return Ambiguous(ref, tuple(f"{t.tracker}:{original_key(t.key)}" for t in found))
    return found[0] if found else None
