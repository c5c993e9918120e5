"""The operator verbs: one request each to the running server's API, its answer printed
as tables, one line, or JSON (`--json`). They need only the server's URL and tokens
(`Reach`), never the whole settings: these are the verbs that must answer fast."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

from bot.cli.output import print_json, print_tables
from bot.cli.reach import Reach
from bot.cli.remote import Answer, ServerClient, ref_path
from bot.errors import UsageError

FOLLOW_POLL_SECONDS = 0.5
_LIVE_JOB = {"queued", "running"}


def client(reach: Reach) -> ServerClient:
    headers = {"Authorization": f"Bearer {reach.read_token}"} if reach.read_token else {}
    return ServerClient(reach.url, headers=headers)


def admin_headers(reach: Reach) -> dict[str, str]:
    """The admin token when there is one (without it the server says what is missing)."""
    headers = {"X-Request-Id": uuid.uuid4().hex}
    if reach.admin_token:
        headers["X-Admin-Token"] = reach.admin_token
    return headers


def _shown(args: argparse.Namespace, doc: dict[str, Any], render: str) -> int:
    """The server's JSON as it came (--json), else as tables."""
    if args.json:
        print_json(doc)
        return 0
    from bot.cli import tables

    print_tables(doc, getattr(tables, render))
    return 0


def queue(args: argparse.Namespace, reach: Reach) -> int:
    with client(reach) as http:
        return _shown(args, http.get("/queue").doc, "render_queue")


def tasks(args: argparse.Namespace, reach: Reach) -> int:
    with client(reach) as http:
        return _shown(args, http.get("/tasks", params={"limit": args.limit}).doc, "render_tasks")


def show(args: argparse.Namespace, reach: Reach) -> int:
    with client(reach) as http:
        return _shown(args, http.get(ref_path("/tasks", args.ref)).doc, "render_task")


# -- stop, retry -----------------------------------------------------------------------------


def stop(args: argparse.Namespace, reach: Reach) -> int:
    """POST /tasks/{ref}/stop with the admin token; one line with what the server did."""
    body = {"reason": args.reason} if args.reason else None
    with client(reach) as http:
        path = ref_path("/tasks", args.ref, "/stop")
        reply = http.post(path, json=body, headers=admin_headers(reach))
    _said(args, reply.doc, describe_stop(reply.status, reply.doc, args.ref))
    return 0


def describe_stop(status: int, doc: dict[str, Any], ref: str) -> str:
    """`STOP_REQUESTED PROJ-42 stop_id=… (202)`, `ALREADY_TERMINAL PROJ-42 (200)`."""
    parts = [str(doc.get("status", "?")), str(doc.get("task") or ref)]
    if doc.get("stop_id"):
        parts.append(f"stop_id={doc['stop_id']}")
    return " ".join([*parts, f"({status})"])


def retry(args: argparse.Namespace, reach: Reach) -> int:
    """POST /tasks/{ref}/retry: a blocked task runs its blocked stage again."""
    with client(reach) as http:
        path = ref_path("/tasks", args.ref, "/retry")
        reply = http.post(path, headers=admin_headers(reach))
    doc = reply.doc
    parts = [str(doc.get("status", "?")), str(doc.get("task") or args.ref)]
    parts += [f"{name}={doc[name]}" for name in ("stage", "job") if doc.get(name) is not None]
    _said(args, doc, " ".join([*parts, f"({reply.status})"]))
    return 0


def _said(args: argparse.Namespace, doc: dict[str, Any], line: str) -> None:
    """The server's JSON as it came (--json), else the one line."""
    if args.json:
        print_json(doc)
    else:
        print(line)


# -- logs --------------------------------------------------------------------------------------


def logs(args: argparse.Namespace, reach: Reach) -> int:
    """The agent's log; `--follow` keeps printing what it writes until its job ends."""
    if args.tail is not None and args.tail < 1:
        raise UsageError(f"--tail must be a positive number of lines, got {args.tail}")
    if args.follow and args.json:
        raise UsageError("--follow prints the log as it grows; it cannot be combined with --json")
    params: dict[str, Any] = {}
    if args.job is not None:
        params["job"] = args.job
    if args.tail is not None:
        params["tail"] = args.tail
    with client(reach) as http:
        path = ref_path("/tasks", args.ref, "/logs")
        answer = http.get_text(path, params=params)
        if args.json:
            print_json(_log_doc(answer))
            return 0
        _write(answer.body)
        if args.follow:
            _follow(http, path, answer)
    return 0


def _log_doc(answer: Answer) -> dict[str, Any]:
    return {
        "task": answer.headers.get("x-conveyor-task"),
        "job": _int(answer.headers.get("x-conveyor-job")),
        "status": answer.headers.get("x-conveyor-job-status"),
        "path": answer.headers.get("x-conveyor-log-path"),
        "log": answer.body.decode("utf-8", "replace"),
    }


def _follow(http: ServerClient, path: str, answer: Answer) -> None:
    """Poll from the last offset until the job is over and its log read to the end."""
    job = answer.headers.get("x-conveyor-job")
    while True:
        offset = _int(answer.headers.get("x-conveyor-log-size")) or 0
        if answer.headers.get("x-conveyor-job-status") not in _LIVE_JOB and not answer.body:
            return
        if not answer.body:
            time.sleep(FOLLOW_POLL_SECONDS)
        answer = http.get_text(path, params={"job": job, "offset": offset})
        _write(answer.body)


def _write(body: bytes) -> None:
    sys.stdout.buffer.write(body)
    sys.stdout.flush()


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
