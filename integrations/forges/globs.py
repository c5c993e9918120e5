"""Gitea's branch protection rule names, matched the way Gitea matches them.

Gitea (``models/git/protected_branch.go``) compares a rule name without glob characters
to the branch case-insensitively; any other rule is a gobwas/glob pattern with ``/`` as
the separator: ``*`` and ``?`` stop at ``/``, ``**`` does not, ``[a-z]`` / ``[!a-z]``
are character classes, ``{a,b}`` alternatives and ``\\`` escapes. A pattern that does not
compile is matched literally. Pure functions, no I/O.
"""

from __future__ import annotations

import functools
import re

# gobwas/glob syntax.Special: what makes a rule name a pattern.
_SPECIAL = frozenset("*?\\[]{}")


class _BadGlob(ValueError):
    pass


def gitea_rule_matches(rule: str, branch: str) -> bool:
    """True when the protection rule ``rule`` applies to ``branch``."""
    if not _SPECIAL.intersection(rule):
        return rule.casefold() == branch.casefold()
    pattern = _compiled(rule)
    if pattern is None:
        return rule == branch
    return pattern.fullmatch(branch) is not None


@functools.lru_cache(maxsize=256)
def _compiled(rule: str) -> re.Pattern[str] | None:
    try:
        regex, end = _sequence(rule, 0, in_terms=False)
    except _BadGlob:
        return None
    return re.compile(regex, re.DOTALL) if end == len(rule) else None


def _sequence(text: str, i: int, *, in_terms: bool) -> tuple[str, int]:
    """Translate from ``i`` up to the end, or to a ``,``/``}`` closing an alternative."""
    out: list[str] = []
    while i < len(text):
        char = text[i]
        if in_terms and char in ",}":
            return "".join(out), i
        if char == "*":
            star = text.startswith("**", i)
            out.append(".*" if star else "[^/]*")
            i += 2 if star else 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "\\":
            if i + 1 >= len(text):
                raise _BadGlob("trailing escape")
            out.append(re.escape(text[i + 1]))
            i += 2
        elif char == "[":
            part, i = _char_class(text, i + 1)
            out.append(part)
        elif char == "{":
            part, i = _alternatives(text, i + 1)
            out.append(part)
        else:
            out.append(re.escape(char))
            i += 1
    if in_terms:
        raise _BadGlob("unclosed '{'")
    return "".join(out), i


def _alternatives(text: str, i: int) -> tuple[str, int]:
    options: list[str] = []
    while True:
        part, i = _sequence(text, i, in_terms=True)
        options.append(part)
        if text[i] == "}":
            return "(?:" + "|".join(options) + ")", i + 1
        i += 1  # past the comma


def _char_class(text: str, i: int) -> tuple[str, int]:
    end = text.find("]", i)
    if end == -1:
        raise _BadGlob("unclosed '['")
    body = text[i:end]
    negate = body.startswith("!")
    body = body[1:] if negate else body
    if not body:
        raise _BadGlob("empty character class")
    if len(body) == 3 and body[1] == "-":
        members = f"{re.escape(body[0])}-{re.escape(body[2])}"
    else:
        members = "".join(re.escape(c) for c in body)
    return f"[{'^' if negate else ''}{members}]", end + 1
