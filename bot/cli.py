"""`conveyor` command line: serve, db upgrade, and the operator verbs.

Every failure a user can cause ends in one readable line and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from bot.errors import ConfigError, ConveyorError
from bot.settings import Settings, load_settings
from state.errors import StateError

log = logging.getLogger(__name__)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    parser.add_argument(
        "--config", help="path to conveyor.toml (default: $CONVEYOR_CONFIG or ./conveyor.toml)"
    )
    parser.add_argument("--log-format", choices=["text", "json"], help="log line format")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_serve)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="bring the schema up to date").set_defaults(func=_db_upgrade)
    return parser


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


Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `conveyor` script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(path=args.config)
        if args.log_format:
            server = settings.server.model_copy(update={"log_format": args.log_format})
            settings = settings.model_copy(update={"server": server})
        from bot.logs import configure_logging

        configure_logging(settings.server.log_format)
        func: Handler = args.func
        return func(args, settings)
    except ConfigError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConveyorError, StateError) as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
