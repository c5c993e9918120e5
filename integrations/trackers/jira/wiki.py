"""Jira wiki markup to Markdown, for the descriptions in webhook bodies.

Jira Cloud's webhooks render issues as REST v2 does: ``fields.description`` is wiki
markup (``h2. Steps``, ``* item``, ``{code}``), not the ADF that REST v3 answers. This
covers what tickets are written with — headings, lists, code and noformat blocks,
quotes, bold, italics, monospace and links — and leaves anything else as it is.
"""

from __future__ import annotations

import re

_HEADING = re.compile(r"h([1-6])\.\s+(.*)")
_LIST = re.compile(r"([*#-]+)\s+(.*)")
_CODE_OPEN = re.compile(r"\{(code|noformat)(?::([^}|]*))?[^}]*\}(.*)")
_QUOTE = re.compile(r"bq\.\s+(.*)")
_BOLD = re.compile(r"(?<![\w*])\*(\S(?:[^*]*\S)?)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(\S(?:[^_]*\S)?)_(?![\w_])")
_MONOSPACE = re.compile(r"\{\{(.+?)\}\}")
_NAMED_LINK = re.compile(r"\[([^|\]]+)\|([^\]\s]+)\]")
_BARE_LINK = re.compile(r"\[((?:https?|mailto):[^\]\s]+)\]")


def to_markdown(wiki: str) -> str:
    """Wiki markup as Markdown."""
    out: list[str] = []
    fence: str | None = None
    for line in wiki.replace("\r\n", "\n").split("\n"):
        if fence is not None:
            fence = _in_code(line, fence, out)
            continue
        opened = _CODE_OPEN.match(line.strip())
        if opened:
            fence = "{" + opened.group(1) + "}"
            out.append("```" + (opened.group(2) or "").strip())
            if opened.group(3):
                fence = _in_code(opened.group(3), fence, out)
            continue
        out.append(_line(line))
    if fence is not None:
        out.append("```")
    return "\n".join(out).strip("\n")


def _in_code(line: str, fence: str, out: list[str]) -> str | None:
    """Copy a line inside a code block; close the block at its ``{code}`` (then None)."""
    if fence not in line:
        out.append(line)
        return fence
    before = line.split(fence, 1)[0]
    if before:
        out.append(before)
    out.append("```")
    return None


def _line(line: str) -> str:
    stripped = line.strip()
    heading = _HEADING.fullmatch(stripped)
    if heading:
        return "#" * int(heading.group(1)) + " " + _inline(heading.group(2))
    quote = _QUOTE.fullmatch(stripped)
    if quote:
        return "> " + _inline(quote.group(1))
    item = _LIST.fullmatch(stripped)
    if item and (item.group(1)[0] != "-" or len(item.group(1)) == 1):
        markers = item.group(1)
        bullet = "1." if markers[-1] == "#" else "-"
        return "   " * (len(markers) - 1) + f"{bullet} " + _inline(item.group(2))
    return _inline(line)


def _inline(text: str) -> str:
    # Monospace first, so that nothing inside it is read as markup.
    parts = _MONOSPACE.split(text)
    for index in range(0, len(parts), 2):
        parts[index] = _emphasis(parts[index])
    for index in range(1, len(parts), 2):
        parts[index] = f"`{parts[index]}`"
    return "".join(parts)


def _emphasis(text: str) -> str:
    text = _NAMED_LINK.sub(r"[\1](\2)", text)
    text = _BARE_LINK.sub(r"<\1>", text)
    text = _BOLD.sub(r"**\1**", text)
    return _ITALIC.sub(r"*\1*", text)
