"""The tracker port holds: the in-package fake, registered under a name no adapter
has, drives a whole start → STOP → reset → fresh start through `POST /webhooks/<name>`
with real agents and real git, with no tracker-specific code outside its adapter."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from bot.app import create_app
from bot.services import Services
from bot.settings import settings_from_dict
from integrations.trackers.base import Ticket, TicketRef
from integrations.trackers.fake import FakeTracker
from state.models import JobStatus, Stage
from state.store import parse_tombstone
from tests.apptools import app_client
from tests.gitrepo import make_repo
from tests.harness import Harness, base_settings, wait_until, write_agent

# Checks the ticket file and the link, then works until told to stop.
READING_AGENT = """\
import os, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
text = pathlib.Path(os.environ["CONVEYOR_TICKET_FILE"]).read_text()
docs = pathlib.Path(os.environ["CONVEYOR_DOCS_DIR"])
ok = ("Fix the **login** loop" in text and "https://acme.invalid/ACME-7" in text
      and os.environ["CONVEYOR_ISSUE_URL"] == "https://acme.invalid/ACME-7")
(docs / "ticket-read").write_text("yes" if ok else text)
while True:
    time.sleep(0.05)
"""

TICKET = Ticket(
    ref=TicketRef("acme", "ACME", "acme-issue-7", "ACME-7"),
    title="Login loops",
    description="Fix the **login** loop\n\n- on Safari",
    url="https://acme.invalid/ACME-7",
    state="To Analyse",
    labels=("bug",),
)


@contextlib.asynccontextmanager
async def acme_app(tmp_path: Path) -> AsyncIterator[Harness]:
    repo, bare = make_repo(tmp_path)
    agent = write_agent(tmp_path / "agents", "read.py", READING_AGENT)
    doc = base_settings(
        tmp_path,
        repo,
        {"tracker": "acme", "tracker_project": "ACME"},
        **{"agents.analysis": agent},
    )
    settings = settings_from_dict(doc)
    tracker = FakeTracker(tracker_name="acme")
    holder: dict[str, Services] = {}

    def configure(svc: Services) -> None:
        svc.trackers["acme"] = tracker
        holder["svc"] = svc

    async with app_client(create_app(settings, configure=configure)) as client:
        yield Harness(tmp_path, repo, bare, settings, client, holder["svc"], tracker)


async def deliver(h: Harness, state: str, delivery: str) -> dict[str, object]:
    ticket = h.tracker.put(dataclasses.replace(TICKET, state=state))
    headers, body = h.tracker.delivery(ticket, delivery=delivery)
    answer = await h.client.post("/webhooks/acme", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    doc: dict[str, object] = answer.json()
    return doc


async def test_a_fake_tracker_under_another_name_runs_the_whole_stop_plane(
    tmp_path: Path,
) -> None:
    async with acme_app(tmp_path) as h:
        assert await deliver(h, "To Analyse", "d-1") == {"outcome": "started", "task": "ACME-7"}
        assert (await deliver(h, "To Analyse", "d-1"))["outcome"] == "duplicate"
        task = await h.task("ACME-7")
        docs = h.svc.docs_dir(task.key)
        await wait_until(lambda: _done((docs / "ticket-read").exists()), 30, "agent read ticket")
        assert (docs / "ticket-read").read_text() == "yes"
        task = await h.task("ACME-7")
        worktree = Path(task.worktree_path or "")
        assert worktree.is_dir()

        stop = await deliver(h, "STOP", "d-2")
        assert stop["outcome"] == "stop_requested"

        async def cancelled() -> object:
            t = await h.task("ACME-7")
            return t if t.stage is Stage.CANCELLED and t.outcome else None

        done = await wait_until(cancelled, 30, "task cancelled")
        assert done.outcome == "cancelled_graceful"
        assert parse_tombstone(done.issue_id) == ("acme-issue-7", done.id)
        assert not worktree.exists()
        assert all(j.status is JobStatus.CANCELLED for j in await h.jobs(done.id))
        await wait_until(lambda: _done(len(h.tracker.comments) == 1), 10, "one comment")
        ref, text = h.tracker.comments[0]
        assert ref == TicketRef("acme", "ACME", "acme-issue-7", "ACME-7")
        assert "conveyor stopped ACME-7" in text

        again = await deliver(h, "To Analyse", "d-3")
        assert again["outcome"] == "started"
        fresh = await h.task("ACME-7")
        assert fresh.id != done.id and fresh.stage is Stage.ANALYSIS


async def test_an_unknown_tracker_is_404_and_a_bad_signature_401(tmp_path: Path) -> None:
    async with acme_app(tmp_path) as h:
        missing = await h.client.post("/webhooks/nope", content=b"{}")
        assert missing.status_code == 404
        assert "nope" in missing.json()["error"] and "acme" in missing.json()["error"]
        headers, body = h.tracker.delivery(TICKET, delivery="d-9")
        headers["X-Fake-Signature"] = "0" * 64
        refused = await h.client.post("/webhooks/acme", content=body, headers=headers)
        assert refused.status_code == 401
        assert await h.store.run_read(_task_count) == 0


def _task_count(conn) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from state.schema import tasks

    return int(conn.execute(select(func.count()).select_from(tasks)).scalar_one())


async def _done(value: bool) -> bool:
    return value
