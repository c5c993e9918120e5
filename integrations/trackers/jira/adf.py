"""Atlassian Document Format (Jira Cloud's rich text, REST v3) to Markdown and back.

To Markdown: paragraphs, headings, bullet and ordered lists (nested), code blocks,
blockquotes, rules, tables, and inline code, strong, emphasis, strike-through, links
and hard breaks; any other node becomes its text. From a Notice: the document
conveyor posts as a comment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from integrations.trackers.base import Notice

Node = dict[str, Any]

# Containers whose children are blocks: rendered as those blocks.
_BLOCK_CONTAINERS = frozenset(
    {"doc", "panel", "expand", "nestedExpand", "layoutSection", "layoutColumn", "listItem"}
)
_MARKS = {"strong": "**", "em": "*", "strike": "~~"}


def to_markdown(doc: Any) -> str:
    """An ADF document (or node) as Markdown; "" for anything that is not one."""
    if not isinstance(doc, dict):
        return ""
    try:
        return _block(doc).strip("\n")
    except RecursionError:  # absurdly deep nesting: keep the words, drop the shape
        return plain_text(doc)


def plain_text(doc: Any) -> str:
    """Every text of the document in order, one paragraph a line (no recursion)."""
    out: list[str] = []
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if node.get("type") in ("paragraph", "heading", "hardBreak") and out:
            out.append("\n")
        inline = _leaf_text(node)
        if inline:
            out.append(inline)
        content = node.get("content")
        if isinstance(content, list):
            stack.extend(reversed(content))
    return "".join(out).strip()


def notice_document(notice: Notice) -> Node:
    """A Notice as an ADF document: the headline, a bullet list of items, the closing, and
    the marker as a last paragraph of inline code. ADF has no hidden node (an HTML comment
    does not survive Jira's conversion), so the marker is visible text, which Jira keeps
    exactly and ``has_comment`` finds in the comments' bodies."""
    content = [_paragraph(notice.headline)]
    items = [item for item in notice.items if item]
    if items:
        entries = [{"type": "listItem", "content": [_paragraph(item)]} for item in items]
        content.append({"type": "bulletList", "content": entries})
    if notice.closing:
        content.append(_paragraph(notice.closing))
    if notice.marker:
        code = {"type": "text", "text": notice.marker, "marks": [{"type": "code"}]}
        content.append({"type": "paragraph", "content": [code]})
    return {"type": "doc", "version": 1, "content": content}


# -- ADF → Markdown ----------------------------------------------------------------------


def _children(node: Node) -> list[Node]:
    content = node.get("content")
    if not isinstance(content, list):
        return []
    return [child for child in content if isinstance(child, dict)]


def _attrs(node: Node) -> dict[str, Any]:
    attrs = node.get("attrs")
    return attrs if isinstance(attrs, dict) else {}


def _number(attrs: dict[str, Any], name: str, default: int) -> int:
    value = attrs.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _blocks(nodes: list[Node], separator: str = "\n\n") -> str:
    rendered = (_block(node) for node in nodes)
    return separator.join(text for text in rendered if text)


def _block(node: Node) -> str:
    kind = node.get("type")
    attrs = _attrs(node)
    if kind == "paragraph":
        return _inline(_children(node))
    if kind == "heading":
        level = min(max(_number(attrs, "level", 1), 1), 6)
        return "#" * level + " " + _inline(_children(node))
    if kind in ("bulletList", "orderedList"):
        return _list(node, attrs)
    if kind == "codeBlock":
        return _code_block(node, attrs)
    if kind == "blockquote":
        return "\n".join(f"> {line}".rstrip() for line in _blocks(_children(node)).split("\n"))
    if kind == "rule":
        return "---"
    if kind == "table":
        return _table(node)
    if kind in _BLOCK_CONTAINERS:
        return _blocks(_children(node))
    return plain_text(node)


def _list(node: Node, attrs: dict[str, Any]) -> str:
    ordered = node.get("type") == "orderedList"
    start = _number(attrs, "order", 1)
    lines = []
    for number, item in enumerate(_children(node), start=start):
        marker = f"{number}. " if ordered else "- "
        body = _blocks(_children(item), separator="\n") or ""
        first, *rest = body.split("\n")
        lines.append(marker + first)
        lines += [(" " * len(marker) + line) if line else "" for line in rest]
    return "\n".join(lines)


def _code_block(node: Node, attrs: dict[str, Any]) -> str:
    code = "".join(_leaf_text(child) for child in _children(node))
    fence = "```"
    while fence in code:
        fence += "`"
    language = attrs.get("language") if isinstance(attrs.get("language"), str) else ""
    return f"{fence}{language}\n{code}\n{fence}"


def _table(node: Node) -> str:
    rows = [[_cell(cell) for cell in _children(row)] for row in _children(node)]
    lines = ["| " + " | ".join(cells) + " |" for cells in rows]
    if lines:
        lines.insert(1, "|" + " --- |" * len(rows[0]))
    return "\n".join(lines)


def _cell(cell: Node) -> str:
    return plain_text(cell).replace("\n", " ").replace("|", "\\|")


def _inline(nodes: list[Node]) -> str:
    return "".join(_inline_node(node) for node in nodes)


def _inline_node(node: Node) -> str:
    if node.get("type") == "hardBreak":
        return "  \n"
    text = _leaf_text(node)
    if node.get("type") != "text" or not text:
        return text
    marks = node.get("marks")
    marks = marks if isinstance(marks, list) else []
    kinds = {m.get("type"): m for m in marks if isinstance(m, dict)}
    if "code" in kinds:
        text = f"`{text}`"
    for mark, wrap in _MARKS.items():
        if mark in kinds:
            text = f"{wrap}{text}{wrap}"
    href = _attr(kinds.get("link"), "href")
    return f"[{text}]({href})" if href else text


def _leaf_text(node: Node) -> str:
    """The text a leaf node shows: a text run, a mention, an emoji, a card's URL, …"""
    kind = node.get("type")
    if kind == "text":
        value = node.get("text")
        return value if isinstance(value, str) else ""
    if kind in ("mention", "emoji", "status"):
        return _attr(node, "text") or _attr(node, "shortName")
    if kind in ("inlineCard", "blockCard", "embedCard"):
        url = _attr(node, "url")
        return f"<{url}>" if url else ""
    if kind == "date":
        return _date(_attr(node, "timestamp"))
    return ""


def _attr(node: Any, name: str) -> str:
    value = _attrs(node).get(name) if isinstance(node, dict) else None
    return value if isinstance(value, str) else ""


def _date(millis: str) -> str:
    try:
        return datetime.fromtimestamp(int(millis) / 1000, UTC).date().isoformat()
    except (ValueError, OverflowError, OSError):
        return ""


# -- Notice → ADF ------------------------------------------------------------------------


def _paragraph(text: str) -> Node:
    """A paragraph of plain text; newlines become hard breaks (ADF text has none)."""
    content: list[Node] = []
    for number, line in enumerate(text.split("\n")):
        if number:
            content.append({"type": "hardBreak"})
        if line:
            content.append({"type": "text", "text": line})
    return {"type": "paragraph", "content": content} if content else {"type": "paragraph"}
