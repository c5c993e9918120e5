"""Printing for the CLI verbs: JSON for scripts, or rich tables (imported only when a
table is printed: a `--json` call never pays for rich)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

Render = Callable[["Console", dict[str, Any]], None]


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


def print_tables(doc: dict[str, Any], render: Render) -> None:
    from rich.console import Console

    render(Console(soft_wrap=False, highlight=False), doc)
