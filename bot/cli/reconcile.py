"""`conveyor reconcile`: a reconciliation pass now, on the running server
(`POST /reconcile` with the admin token), and what it found, one line per tracker."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.cli.output import print_json

if TYPE_CHECKING:
    from bot.cli.reach import Reach

AddUrl = Callable[[argparse.ArgumentParser], None]
NOTHING = "no tracker has API credentials and a mapped project: nothing to reconcile"
_FOUND = (("stops", "stopped"), ("deleted", "deleted"), ("starts", "started"))


def add_parser(sub: Any, url_option: AddUrl) -> None:
    """`conveyor reconcile [--json] [--url URL]`."""
    parser = sub.add_parser("reconcile", help="a reconciliation pass now, and what it found")
    parser.add_argument("--json", action="store_true", help="print the server's JSON")
    url_option(parser)
    parser.set_defaults(remote=reconcile)


def reconcile(args: argparse.Namespace, reach: Reach) -> int:
    """POST /reconcile; exit 1 when a tracker's pass failed (its error is printed)."""
    from bot.cli.verbs import admin_headers, client

    with client(reach) as http:
        doc = http.post("/reconcile", headers=admin_headers(reach)).doc
    trackers: dict[str, dict[str, Any]] = doc.get("trackers") or {}
    if args.json:
        print_json(doc)
    else:
        print("\n".join(describe_pass(n, r) for n, r in sorted(trackers.items())) or NOTHING)
    return 1 if any(report.get("error") for report in trackers.values()) else 0


def describe_pass(name: str, report: dict[str, Any]) -> str:
    """`plane: 3 changed tickets; stopped PROJ-7; 1 missed webhook` or `jira: error …`."""
    if report.get("error"):
        return f"{name}: error, nothing changed: {report['error']}"
    parts = [f"{report.get('tickets', 0)} changed tickets"]
    for field, verb in _FOUND:
        if report.get(field):
            parts.append(f"{verb} {', '.join(map(str, report[field]))}")
    if report.get("confirms"):
        parts.append(f"deploy confirmed {', '.join(map(str, report['confirms']))}")
    missed = int(report.get("missed_webhooks") or 0)
    if missed:
        parts.append(f"{missed} missed webhook{'s' if missed != 1 else ''}")
    if len(parts) == 1:
        parts.append("nothing to do")
    return f"{name}: " + "; ".join(parts)
