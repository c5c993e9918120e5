"""`conveyor send <tracker>`: the signed deliveries each tracker's sender would make,
built by the tracker's own package, and the one-line account of the answer.

The payload modules are imported when a verb runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.cli.output import print_json
from bot.cli.remote import ServerClient
from bot.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from bot.settings import Settings
    from integrations.trackers.plane import payloads as plane_payloads

Headers = dict[str, str]
Sent = tuple[Headers, bytes]
AddUrl = Callable[[argparse.ArgumentParser], None]

NO_SECRET = (
    "no {title} webhook secret is configured ([trackers.{name}] webhook_secret / "
    "CONVEYOR_{upper}_WEBHOOK_SECRET); cannot sign"
)
NO_REPO = (
    'no repo has tracker = "{name}" and a tracker_project to send for; pass --repo '
    "owner/name or map one under [[repos]]"
)
BAD_NUMBER = "--issue must be the issue's number (a positive integer), got {given!r}"
TITLES = {"github": "GitHub", "gitea": "Gitea", "linear": "Linear", "jira": "Jira"}


# -- the parsers ---------------------------------------------------------------------------


def add_parsers(trackers: Any, url_option: AddUrl) -> None:
    """`send github|gitea|linear|jira` beside `send plane` (``trackers`` is its subparsers)."""
    for name, helptext in (
        ("github", "a GitHub issues delivery: a label added or removed, or a close"),
        ("gitea", "a Gitea/Forgejo issues delivery: a label change or a close"),
    ):
        parser = trackers.add_parser(name, help=helptext)
        parser.add_argument("--issue", required=True, metavar="N", help="the issue number")
        parser.add_argument("--label", metavar="NAME", help="e.g. conveyor:analyse, conveyor:stop")
        parser.add_argument(
            "--action",
            choices=["labeled", "unlabeled", "closed"],
            default="labeled",
            help="the label added (default), removed, or the issue closed",
        )
        parser.add_argument("--repo", metavar="OWNER/NAME", help="default: the first mapped repo")
        parser.add_argument("--sender", default="conveyor-cli", metavar="LOGIN", help="who did it")
        parser.add_argument("--title", metavar="TEXT", help="the issue's title")
        if name == "github":
            parser.add_argument(
                "--state-reason",
                choices=["completed", "not_planned"],
                default="not_planned",
                help="why it was closed (default not_planned)",
            )
        _common(parser, url_option)
        parser.set_defaults(func=send_labels)
    for name, helptext in (
        ("linear", "a Linear Issue update (a workflow state change) or remove"),
        ("jira", "a Jira issue_updated status change, or issue_deleted"),
    ):
        parser = trackers.add_parser(name, help=helptext)
        parser.add_argument("--issue", required=True, metavar="KEY", help="e.g. ENG-123, PROJ-42")
        parser.add_argument("--state", required=True, metavar="NAME", help="e.g. 'To Analyse'")
        parser.add_argument("--delete", action="store_true", help="send the deletion instead")
        parser.add_argument("--title", metavar="TEXT", help="the issue's title")
        if name == "jira":
            parser.add_argument(
                "--before", default="To Do", metavar="NAME", help="the status it left"
            )
        _common(parser, url_option)
        parser.set_defaults(func=send_states)


def _common(parser: argparse.ArgumentParser, url_option: AddUrl) -> None:
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer")
    url_option(parser)


# -- the verbs -----------------------------------------------------------------------------


def send_labels(args: argparse.Namespace, settings: Settings) -> int:
    """Build, sign and post a GitHub or Gitea ``issues`` delivery; one line back."""
    return _post(args, settings, label_delivery(args, settings))


def send_states(args: argparse.Namespace, settings: Settings) -> int:
    """Build, sign and post a Linear or Jira state change (or deletion); one line back."""
    return _post(args, settings, state_delivery(args, settings, time.time()))


def _post(args: argparse.Namespace, settings: Settings, sent: Sent) -> int:
    headers, body = sent
    with ServerClient(args.url or settings.server_url()) as client:
        reply = client.post(f"/webhooks/{args.tracker}", content=body, headers=headers)
    if args.json:
        print_json(reply.doc)  # the server's answer as it came
    else:
        print(describe_answer(reply.status, reply.doc))
    return 0


def label_delivery(args: argparse.Namespace, settings: Settings) -> Sent:
    """GitHub's or Gitea's body for the label change or close, signed with the secret."""
    from integrations.trackers.gitea import GiteaSettings
    from integrations.trackers.gitea import payloads as gitea
    from integrations.trackers.github import GitHubSettings
    from integrations.trackers.github import payloads as github

    name = args.tracker
    section = settings.tracker(name)
    common: dict[str, Any] = {
        "secret": _secret(settings, name),
        "full_name": args.repo or _first_project(settings, name),
        "number": _number(args.issue),
        "label": args.label,
        "action": args.action,
        "sender": args.sender,
        "title": args.title or "",
    }
    try:
        if isinstance(section, GitHubSettings):
            web = section.api_url.removesuffix("/api/v3").replace(
                "//api.github.com", "//github.com"
            )
            return github.build_delivery(
                **common, state_reason=args.state_reason, web_url=web, api_url=section.api_url
            )
        assert isinstance(section, GiteaSettings)
        if section.base_url:
            common["base_url"] = section.base_url
        return gitea.build_delivery(**common)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def state_delivery(args: argparse.Namespace, settings: Settings, now: float) -> Sent:
    """Linear's or Jira's body for the state change (or deletion), signed."""
    from integrations.trackers.jira import payloads as jira
    from integrations.trackers.linear import payloads as linear

    secret = _secret(settings, args.tracker)
    key, state = args.issue.strip(), args.state
    try:
        if args.tracker == "linear":
            if args.delete:
                return linear.issue_remove(key=key, state=state, secret=secret, now=now)
            kind = linear_state_type(settings, state)
            return linear.issue_update(
                key=key, state=state, secret=secret, now=now, state_type=kind, title=args.title
            )
        site = getattr(settings.tracker("jira"), "base_url", "") or jira.DEFAULT_SITE
        if args.delete:
            return jira.issue_deleted(key=key, state=state, secret=secret, now=now, base_url=site)
        return jira.issue_status_change(
            key=key,
            state=state,
            before=args.before,
            secret=secret,
            now=now,
            base_url=site,
            title=args.title,
        )
    except ValueError as exc:
        raise UsageError(f"{exc} (--issue)") from None


def linear_state_type(settings: Settings, state: str) -> str:
    """Linear's type for a state: canceled for STOP, unstarted for start, else started."""
    from integrations.trackers.base import Signal
    from integrations.trackers.vocabulary import Vocabulary

    section = settings.tracker("linear")
    vocabulary = Vocabulary.of(
        getattr(section, "start_states", ()),
        getattr(section, "stop_states", ()),
        getattr(section, "confirm_deploy_states", ()),
    )
    types: dict[Signal | None, str] = {Signal.STOP: "canceled", Signal.START: "unstarted"}
    return types.get(vocabulary.signal(state), "started")


def _secret(settings: Settings, name: str) -> str:
    secret = settings.tracker(name).webhook_secret.get_secret_value()
    if not secret:
        raise ConfigError(NO_SECRET.format(title=TITLES[name], name=name, upper=name.upper()))
    return secret


def _first_project(settings: Settings, name: str) -> str:
    project = next(
        (r.tracker_project for r in settings.repos if r.tracker == name and r.tracker_project),
        None,
    )
    if project is None:
        raise UsageError(NO_REPO.format(name=name))
    return project


def _number(given: str) -> int:
    text = given.strip().lstrip("#")
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) < 1:
        raise UsageError(BAD_NUMBER.format(given=given))
    return int(text)


# -- Plane (its parser is in main.py) --------------------------------------------------


def plane_delivery(
    settings: Settings, ticket: plane_payloads.Ticket, now: datetime, delivery_id: str
) -> plane_payloads.Delivery:
    """A Plane state change for `ticket`, signed with the configured secret."""
    from integrations.trackers.plane import PlaneSettings
    from integrations.trackers.plane import payloads as plane_payloads

    plane = settings.tracker("plane")
    assert isinstance(plane, PlaneSettings)
    project = next(
        (r.tracker_project for r in settings.repos if r.tracker == "plane" and r.tracker_project),
        None,
    )
    try:
        return plane_payloads.build_delivery(
            plane, ticket, now, delivery_id, default_project=project
        )
    except plane_payloads.DeliveryError as exc:
        message = str(exc)
        raise (ConfigError if "secret" in message else UsageError)(message) from None


def describe_answer(status: int, doc: dict[str, object], sent_key: str | None = None) -> str:
    """One line for a webhook answer: `202 started PROJ-42` (+ reason, stop id), and a
    note when the server named the ticket otherwise than it was sent (then `show` and
    `stop` need the server's name)."""
    task = str(doc.get("task") or "-")
    parts = [str(status), str(doc.get("outcome", "?")), task]
    for name in ("reason", "stop_id"):
        if doc.get(name):
            parts.append(f"{name}={doc[name]}")
    if sent_key and task not in ("-", sent_key):
        parts.append(RENAMED.format(sent=sent_key, task=task))
    return " ".join(parts)


RENAMED = (
    "(sent as {sent}; the server calls it {task}: give its project an identifier in "
    "trackers.plane.project_identifiers, or use {task} with show, logs and stop)"
)
