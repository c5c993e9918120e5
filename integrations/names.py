"""The one sanitiser for every name made from tracker data: branch, worktree, docs and
log directories (DESIGN "Trackers").

A tracker's ids and keys are the sender's to choose; a name made from them must never
leave its root, never be a git ref git refuses, and never be shared by two tickets. So
every name is lowercase letters, digits, ``.``, ``_`` and ``-``; never ``..``, never a
leading ``-`` or ``.``; at most ``MAX_NAME`` characters. A key that needed more than
lowercasing (and the ``#`` of ``app#12`` becoming ``-``) gets a digest of the original
appended, so two keys that sanitise alike stay apart; a suffix (the task id) makes a
name unique per task.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_NAME = 64
SAFE_NAME = re.compile(r"[a-z0-9_][a-z0-9._-]*")
_UNSAFE_RUN = re.compile(r"[^a-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
_DIGEST_CHARS = 10


def safe_name(text: str, suffix: str = "") -> str:
    """`text` (and `suffix`, joined by ``-``) as one safe path component and ref name."""
    lowered = text.lower()
    slug = _clean(unicodedata.normalize("NFKD", lowered).encode("ascii", "ignore").decode())
    tail = _clean(suffix.lower())
    room = MAX_NAME - (len(tail) + 1 if tail else 0)
    if not slug or slug != lowered.replace("#", "-") or len(slug) > room:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        head = _clean(slug[: room - _DIGEST_CHARS - 1]) or "task"
        slug = f"{head}-{digest[:_DIGEST_CHARS]}"
    name = f"{slug}-{tail}" if tail else slug
    return name.removesuffix(".lock") + "-lock" if name.endswith(".lock") else name


def _clean(text: str) -> str:
    """The safe alphabet only, no ``..``, no leading or trailing ``-`` or ``.``."""
    return _DOTS.sub(".", _UNSAFE_RUN.sub("-", text)).strip("-.")


def task_dir_name(key: str, task_id: int) -> str:
    """A task's directory name (worktree, docs, logs): its key made safe, and its id, so
    that no two tasks (of one ticket or of two) ever share one."""
    return safe_name(key, str(task_id))


def is_safe_name(name: str) -> bool:
    """True when `name` is something `safe_name` could have made."""
    return (
        0 < len(name) <= MAX_NAME
        and SAFE_NAME.fullmatch(name) is not None
        and ".." not in name
        and not name.endswith((".", ".lock"))
    )
