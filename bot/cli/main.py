"""`conveyor` command line: serve, db upgrade, demo, and the operator verbs that talk to a
running server over HTTP (queue, tasks, show, stop, reconcile, send <tracker>).

Every failure a user can cause ends in one readable line and a non-zero exit status:
2 for a bad setting or argument, 1 for what the server refused or could not do.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

from rich.console import Console

from bot.cli import reconcile, senders, tables
from bot.cli.remote import ServerClient, ref_path
from bot.errors import ConfigError, ConveyorError, UsageError
from bot.settings import Settings, load_settings
from state.errors import StateError

log = logging.getLogger(__name__)

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, Settings], int]
Render = Callable[[Console, dict[str, Any]], None]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    parser.add_argument(
        "--config", help="path to conveyor.toml (default: $CONVEYOR_CONFIG or ./conveyor.toml)"
    )
    parser.add_argument("--log-format", choices=["text", "json"], help="log line format")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_db(sub)
    _add_demo(sub)
    _add_views(sub)
    _add_stop(sub)
    _add_send(sub)
    reconcile.add_parser(sub, _url_option)
    return parser


def _add_serve(sub: Subparsers) -> None:
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_serve)


def _add_db(sub: Subparsers) -> None:
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="bring the schema up to date").set_defaults(func=_db_upgrade)


def _add_demo(sub: Subparsers) -> None:
    demo = sub.add_parser(
        "demo", help="a whole start-and-STOP run in a temporary directory, no network"
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory")
    demo.add_argument("--scenario", choices=["basic", "deferred"], default="basic")
    demo.set_defaults(func=None)  # needs no settings: see main()


def _url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the server (default: server.url, else http://host:port)")


def _add_views(sub: Subparsers) -> None:
    queue = sub.add_parser("queue", help="what is running and what the stop plane is doing")
    queue.set_defaults(func=_queue)
    tasks = sub.add_parser("tasks", help="the most recently changed tasks")
    tasks.add_argument("--limit", type=int, default=50, help="how many (1-500, default 50)")
    tasks.set_defaults(func=_tasks)
    show = sub.add_parser("show", help="one task: its jobs, stops and audit trail")
    show.add_argument("ref", metavar="REF", help="task id, issue id or key such as PROJ-42")
    show.set_defaults(func=_show)
    for parser in (queue, tasks, show):
        parser.add_argument("--json", action="store_true", help="print the server's JSON")
        _url_option(parser)


def _add_stop(sub: Subparsers) -> None:
    stop = sub.add_parser("stop", help="stop a task now (or after its merge/deploy)")
    stop.add_argument("ref", metavar="REF", help="task id, issue id or key such as PROJ-42")
    stop.add_argument("--reason", help="why; kept with the stop record")
    _url_option(stop)
    stop.set_defaults(func=_stop)


def _add_send(sub: Subparsers) -> None:
    send = sub.add_parser("send", help="send a signed tracker webhook to the server")
    trackers = send.add_subparsers(dest="tracker", required=True, metavar="TRACKER")
    plane = trackers.add_parser("plane", help="a Plane work-item state change")
    plane.add_argument("--issue", required=True, metavar="KEY", help="ticket key, e.g. PROJ-42")
    plane.add_argument("--state", required=True, metavar="NAME", help="e.g. 'To Analyse', STOP")
    plane.add_argument("--project", metavar="ID", help="default: the first repo's project")
    plane.add_argument("--issue-id", metavar="UUID", help="default: a stable id for KEY")
    plane.add_argument("--actor", default="conveyor-cli", metavar="NAME")
    plane.add_argument("--title", metavar="TEXT")
    _url_option(plane)
    plane.set_defaults(func=_send_plane)
    senders.add_parsers(trackers, _url_option)


# -- serve, db ---------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.serve import serve

    return serve(settings, host=args.host, port=args.port)


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from state.db import current_revision, make_engine, upgrade

    engine = make_engine(settings.server.database_url)
    try:
        upgrade(engine)
        print(f"database is at revision {current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


# -- the operator verbs --------------------------------------------------------------------


def _client(args: argparse.Namespace, settings: Settings) -> ServerClient:
    return ServerClient(args.url or settings.server_url())


def _output(args: argparse.Namespace, doc: dict[str, Any], render: Render) -> int:
    """The server's JSON as it came (--json), else as tables."""
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        render(Console(soft_wrap=False, highlight=False), doc)
    return 0


def _queue(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        doc = client.get("/queue").doc
    return _output(args, doc, tables.render_queue)


def _tasks(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        doc = client.get("/tasks", params={"limit": args.limit}).doc
    return _output(args, doc, tables.render_tasks)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        doc = client.get(ref_path("/tasks", args.ref)).doc
    return _output(args, doc, tables.render_task)


def _stop(args: argparse.Namespace, settings: Settings) -> int:
    """POST /tasks/{ref}/stop with the admin token; one line with what the server did."""
    headers = {"X-Request-Id": uuid.uuid4().hex}
    token = settings.server.admin_token.get_secret_value()
    if token:  # without one the server says what is missing (401/403)
        headers["X-Admin-Token"] = token
    body = {"reason": args.reason} if args.reason else None
    with _client(args, settings) as client:
        reply = client.post(ref_path("/tasks", args.ref, "/stop"), json=body, headers=headers)
    print(describe_stop(reply.status, reply.doc, args.ref))
    return 0


def describe_stop(status: int, doc: dict[str, Any], ref: str) -> str:
    """`STOP_REQUESTED PROJ-42 stop_id=… (202)`, `ALREADY_TERMINAL PROJ-42 (200)`."""
    parts = [str(doc.get("status", "?")), str(doc.get("task") or ref)]
    if doc.get("stop_id"):
        parts.append(f"stop_id={doc['stop_id']}")
    return " ".join([*parts, f"({status})"])


def _send_plane(args: argparse.Namespace, settings: Settings) -> int:
    """Build, sign and post a Plane state change; print the answer in one line."""
    from integrations.trackers.plane.payloads import Ticket

    ticket = Ticket(
        key=args.issue,
        state=args.state,
        project_id=args.project,
        issue_id=args.issue_id,
        actor=args.actor,
        title=args.title,
    )
    delivery = senders.plane_delivery(settings, ticket, datetime.now(UTC), uuid.uuid4().hex)
    with _client(args, settings) as client:
        reply = client.post("/webhooks/plane", content=delivery.body, headers=delivery.headers)
    print(senders.describe_answer(reply.status, reply.doc))
    return 0


# -- entry point ---------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(path=args.config)
    if args.log_format:
        server = settings.server.model_copy(update={"log_format": args.log_format})
        settings = settings.model_copy(update={"server": server})
    return settings


# Commands that log as they work. The operator verbs print their answer and their one
# error line themselves; they leave logging alone (warnings only), so that nothing but
# that line reaches the terminal.
_LOGGING_COMMANDS = {"serve", "db"}


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        # The demo builds its own settings: no conveyor.toml or env var changes it.
        from bot.cli.demo import run as demo

        return demo.main(args)
    settings = _settings(args)
    if args.command in _LOGGING_COMMANDS:
        from bot.logs import configure_logging, secrets_of

        configure_logging(settings.server.log_format, secrets=secrets_of(settings))
    func: Handler = args.func
    return func(args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `conveyor` script."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ConfigError, UsageError) as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConveyorError, StateError) as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
