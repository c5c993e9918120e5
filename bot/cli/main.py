"""`conveyor` command line: serve, check, db upgrade, demo, and the operator verbs that
talk to a running server over HTTP (queue, tasks, show, logs, stop, retry, reconcile,
send <tracker>).

Every failure a user can cause ends in one readable line and a non-zero exit status:
1 for what the server refused or could not do (or could not be reached), 2 for a bad
setting, argument or config file (and for what `conveyor check` finds), 3 when
`conveyor serve` or `conveyor db upgrade` cannot start: the database does not answer,
the port is taken.

Imports are lazy on purpose: `conveyor queue` must answer in well under a second, so
this module and the operator verbs import neither the settings models nor the app;
each verb imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from bot.cli import reconcile, senders, verbs
from bot.cli.output import print_json
from bot.errors import ConfigError, ConveyorError, StartError, UsageError
from state.errors import StateError

if TYPE_CHECKING:
    from bot.cli.reach import Reach
    from bot.settings import Settings

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANNOT_START = 3

Handler = Callable[[argparse.Namespace, "Settings"], int]  # needs the whole settings
Remote = Callable[[argparse.Namespace, "Reach"], int]  # needs the server's URL and tokens
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

CONFIG_HELP = "path to conveyor.toml (default: $CONVEYOR_CONFIG, else ./conveyor.toml)"
JSON_HELP = "print JSON instead of text"


class _Version(argparse.Action):
    """`--version`, read from the installed package only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print conveyor's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kw: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("conveyor")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        print(f"conveyor {found}")  # on stdout, as `--help` is
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--log-format", choices=["text", "json"], help="server log line format")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_check(sub)
    _add_db(sub)
    _add_demo(sub)
    _add_views(sub)
    _add_logs(sub)
    _add_stop(sub)
    _add_retry(sub)
    _add_send(sub)
    reconcile.add_parser(sub, _url_option)
    _config_on_every_verb(parser)
    return parser


def _config_on_every_verb(parser: argparse.ArgumentParser) -> None:
    """`--config` also after the verb (`conveyor serve --config x`), on every verb a
    helper registers; SUPPRESS keeps a value given before the verb."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb in action.choices.values():
                if not any("--config" in a.option_strings for a in verb._actions):
                    verb.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
                _config_on_every_verb(verb)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def _url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the server (default: server.url / $CONVEYOR_URL, else http://host:port)"
    )


def _ref_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", metavar="REF", help="task id, issue id or key such as PROJ-42")


def _add_serve(sub: Subparsers) -> None:
    serve = sub.add_parser("serve", help="check the configuration, then run the server")
    serve.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, 8080)")
    serve.set_defaults(func=_serve)


def _add_check(sub: Subparsers) -> None:
    check = sub.add_parser(
        "check", help="validate the configuration and every repo; exit 2 on a problem"
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask each tracker and forge whether its credentials answer, and each remote",
    )
    _json_option(check)
    check.set_defaults(func=_check)


def _add_db(sub: Subparsers) -> None:
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="bring the schema up to date")
    _json_option(upgrade)
    upgrade.set_defaults(func=_db_upgrade)


def _add_demo(sub: Subparsers) -> None:
    demo = sub.add_parser(
        "demo", help="a whole start-and-STOP run in a temporary directory, no network"
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory")
    demo.add_argument(
        "--scenario",
        choices=["basic", "deferred", "pull-request"],
        default="basic",
        help="basic: STOP while the agent works; deferred: STOP inside the merge; "
        "pull-request: merged through a pull request on a fake forge (default basic)",
    )
    demo.add_argument("--json", action="store_true", help="print only a JSON account at the end")
    demo.set_defaults(func=None)  # needs no settings: see _run()


def _add_views(sub: Subparsers) -> None:
    queue = sub.add_parser("queue", help="what is running and what the stop plane is doing")
    queue.set_defaults(remote=verbs.queue)
    tasks = sub.add_parser("tasks", help="the most recently changed tasks")
    tasks.add_argument("--limit", type=int, default=50, help="how many (1-500, default 50)")
    tasks.set_defaults(remote=verbs.tasks)
    show = sub.add_parser("show", help="one task: its jobs (with log paths), stops and audit")
    _ref_argument(show)
    show.set_defaults(remote=verbs.show)
    for parser in (queue, tasks, show):
        parser.add_argument("--json", action="store_true", help="print the server's JSON")
        _url_option(parser)


def _add_logs(sub: Subparsers) -> None:
    logs = sub.add_parser("logs", help="an agent's log (the task's latest job by default)")
    _ref_argument(logs)
    logs.add_argument("--job", type=int, metavar="N", help="the job id (see `conveyor show`)")
    logs.add_argument("--tail", type=int, metavar="K", help="only the last K lines")
    logs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing as the agent writes, until it ends",
    )
    _json_option(logs)
    _url_option(logs)
    logs.set_defaults(remote=verbs.logs)


def _add_stop(sub: Subparsers) -> None:
    stop = sub.add_parser("stop", help="stop a task now (or after its merge/deploy)")
    _ref_argument(stop)
    stop.add_argument("--reason", help="why; kept with the stop record")
    _json_option(stop)
    _url_option(stop)
    stop.set_defaults(remote=verbs.stop)


def _add_retry(sub: Subparsers) -> None:
    retry = sub.add_parser("retry", help="run a blocked task's blocked stage again")
    _ref_argument(retry)
    _json_option(retry)
    _url_option(retry)
    retry.set_defaults(remote=verbs.retry)


def _add_send(sub: Subparsers) -> None:
    send = sub.add_parser("send", help="send a signed tracker webhook to the server")
    trackers = send.add_subparsers(dest="tracker", required=True, metavar="TRACKER")
    plane = trackers.add_parser("plane", help="a Plane work-item state change")
    plane.add_argument("--issue", required=True, metavar="KEY", help="ticket key, e.g. PROJ-42")
    plane.add_argument("--state", required=True, metavar="NAME", help="e.g. 'To Analyse', STOP")
    plane.add_argument("--project", metavar="ID", help="default: the first repo's project")
    plane.add_argument("--issue-id", metavar="UUID", help="default: a stable id for KEY")
    plane.add_argument(
        "--actor",
        default="conveyor-cli",
        metavar="NAME",
        help="who moved it (default conveyor-cli)",
    )
    plane.add_argument("--title", metavar="TEXT", help="the ticket's title (default: from KEY)")
    _json_option(plane)
    _url_option(plane)
    plane.set_defaults(func=_send_plane)
    senders.add_parsers(trackers, _url_option)


# -- serve, check, db ----------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.serve import serve

    return serve(settings, host=args.host, port=args.port, config=_config_named(args))


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli import checking

    return checking.run(settings, online=args.online, as_json=args.json)


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from bot.startup import upgrade_database

    revision = upgrade_database(settings)
    if args.json:
        print_json({"revision": revision})
    else:
        print(f"database is at revision {revision}")
    return 0


def _send_plane(args: argparse.Namespace, settings: Settings) -> int:
    """Build, sign and post a Plane state change; print the answer in one line."""
    import uuid
    from datetime import UTC, datetime

    from bot.cli import senders
    from bot.cli.remote import ServerClient
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
    with ServerClient(args.url or settings.server_url()) as client:
        reply = client.post("/webhooks/plane", content=delivery.body, headers=delivery.headers)
    if args.json:
        print_json(reply.doc)  # the server's answer as it came
    else:
        print(senders.describe_answer(reply.status, reply.doc, sent_key=args.issue))
    return 0


# -- entry point ---------------------------------------------------------------------------


def _config_named(args: argparse.Namespace) -> str | None:
    """The config file the settings came from, for the start-up log line."""
    import os

    from bot.configfile import config_path

    found = config_path(getattr(args, "config", None), os.environ)
    return str(found.resolve()) if found else None


def _settings(args: argparse.Namespace) -> Settings:
    from bot.settings import load_settings

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
    remote: Remote | None = getattr(args, "remote", None)
    if remote is not None:
        from bot.cli.reach import load_reach

        return remote(args, load_reach(args.config, url=getattr(args, "url", None)))
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
        return _said(exc, EXIT_USAGE)
    except StartError as exc:
        return _said(exc, EXIT_CANNOT_START)
    except (ConveyorError, StateError) as exc:
        return _said(exc, EXIT_FAILED)
    except KeyboardInterrupt:
        return 130


def _said(exc: Exception, status: int) -> int:
    """The error's line (one per problem: serve's check may find several) on stderr."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"conveyor: {line}", file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
