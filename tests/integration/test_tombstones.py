"""Tombstones on real SQLite and real PostgreSQL: a cancelled task's issue id and key
are renamed ``<original>#cancelled-<task id>`` so that the ticket can start a fresh task,
while the old one stays findable (its stop answers a redelivered STOP) and is never
mistaken for the ticket's live task, nor for another tracker's or ticket's."""

from __future__ import annotations

import pytest

from state.models import NewTask, Task
from state.refs import Ambiguous, resolve_task
from state.stops import record_delivery
from state.store import (
    Store,
    find_task,
    insert_task,
    key_shared_with_other_ticket,
    latest_task_for_issue,
    live_task_for_issue,
    original_key,
    parse_tombstone,
    tasks_matching,
    tombstone_key,
    tombstone_task_keys,
)

NOW = 1_700_000_000.0


def new_task(issue: str = "iss-1", key: str = "APP-1", tracker: str = "plane") -> NewTask:
    return NewTask(tracker=tracker, issue_id=issue, key=key, repo="app", title="Fix it")


def start(store: Store, issue: str = "iss-1", key: str = "APP-1", tracker: str = "plane") -> Task:
    return store.write(insert_task, new_task(issue, key, tracker), NOW)


def cancel(store: Store, task: Task) -> Task:
    return store.write(tombstone_task_keys, task, NOW + 1)


def test_a_cancelled_tasks_keys_are_tombstoned_with_its_id(store: Store) -> None:
    task = start(store)
    dead = cancel(store, task)
    assert dead.id == task.id
    assert dead.issue_id == f"iss-1#cancelled-{task.id}"
    assert dead.key == f"APP-1#cancelled-{task.id}"
    assert dead.version == task.version + 1  # a compare-and-set write, like any other
    assert dead.updated_at == NOW + 1
    assert (original_key(dead.issue_id), original_key(dead.key)) == ("iss-1", "APP-1")
    assert store.query(live_task_for_issue, "plane", "iss-1") is None


def test_tombstoning_twice_changes_nothing(store: Store) -> None:
    dead = cancel(store, start(store))
    again = store.write(tombstone_task_keys, dead, NOW + 5)
    assert again == dead  # not `iss-1#cancelled-1#cancelled-1`, no version bump
    assert store.query(find_task, str(dead.id)) == dead


def test_the_same_ticket_starts_a_fresh_task_after_a_cancel(store: Store) -> None:
    first = start(store)
    cancel(store, first)
    second = start(store)
    assert second.id != first.id
    assert (second.issue_id, second.key) == ("iss-1", "APP-1")
    assert store.query(live_task_for_issue, "plane", "iss-1") == second
    assert store.query(latest_task_for_issue, "plane", "iss-1") == second
    # A third round: each tombstone carries its own task id, so none collide.
    third_dead = cancel(store, second)
    third = start(store)
    assert third_dead.issue_id == f"iss-1#cancelled-{second.id}"
    assert store.query(live_task_for_issue, "plane", "iss-1") == third
    assert [t.id for t in store.query(tasks_matching, "APP-1")] == [third.id]


def test_a_redelivered_webhook_of_the_old_task_is_not_acted_on(store: Store) -> None:
    """The ticket's live task is gone, so a relaunch or a deploy confirmation for the
    old task finds nothing to act on; a STOP finds the tombstoned task (and answers with
    its stop); the very same delivery is a duplicate by its content key."""
    task = start(store)
    assert store.write(record_delivery, "plane", "stop-iss-1-v1", "d-1", NOW) is not None
    dead = cancel(store, task)
    assert store.write(record_delivery, "plane", "stop-iss-1-v1", "d-1", NOW + 2) is None
    assert store.query(live_task_for_issue, "plane", "iss-1") is None
    assert store.query(latest_task_for_issue, "plane", "iss-1") == dead
    fresh = start(store)
    # Once the ticket has a fresh task, the old one is never the ticket's task again.
    assert store.query(live_task_for_issue, "plane", "iss-1") == fresh
    assert store.query(latest_task_for_issue, "plane", "iss-1") == fresh


def test_the_newest_tombstoned_task_is_the_latest(store: Store) -> None:
    first = cancel(store, start(store))
    second = cancel(store, start(store))
    assert store.query(latest_task_for_issue, "plane", "iss-1") == second
    assert store.query(find_task, "iss-1") == second
    assert store.query(find_task, "APP-1") == second
    assert store.query(find_task, str(first.id)) == first
    assert store.query(tasks_matching, "APP-1") == [second]
    assert store.query(resolve_task, "APP-1") == second


def test_tombstones_do_not_collide_across_trackers(store: Store) -> None:
    plane = start(store, "iss-1", "APP-1", tracker="plane")
    jira = start(store, "iss-1", "APP-1", tracker="jira")
    dead = cancel(store, plane)
    assert store.query(live_task_for_issue, "jira", "iss-1") == jira
    assert store.query(live_task_for_issue, "plane", "iss-1") is None
    assert store.query(latest_task_for_issue, "plane", "iss-1") == dead
    assert store.query(latest_task_for_issue, "jira", "iss-1") == jira
    assert store.query(latest_task_for_issue, "github", "iss-1") is None
    # Each tracker's newest task; the live one before a tombstoned one of another.
    assert store.query(tasks_matching, "APP-1") == [jira, dead]  # sorted by tracker
    assert store.query(tasks_matching, "APP-1", "plane") == [dead]
    assert store.query(find_task, "APP-1") == jira
    assert store.query(resolve_task, "plane:APP-1") == dead
    found = store.query(resolve_task, "APP-1")
    assert isinstance(found, Ambiguous)
    assert found.candidates == ("jira:APP-1", "plane:APP-1")  # the original key shown
    # The Jira ticket is tombstoned in its turn: different task ids, no collision.
    jira_dead = cancel(store, jira)
    assert jira_dead.issue_id == f"iss-1#cancelled-{jira.id}" != dead.issue_id
    again = start(store, "iss-1", "APP-1", tracker="plane")
    assert store.query(live_task_for_issue, "plane", "iss-1") == again
    assert store.query(live_task_for_issue, "jira", "iss-1") is None


def test_a_ticket_whose_id_extends_another_is_not_its_tombstone(store: Store) -> None:
    """`iss-1` must not find `iss-10`'s tombstone, nor `iss_1`'s (LIKE's wildcards)."""
    ten = cancel(store, start(store, "iss-10", "APP-10"))
    wild = cancel(store, start(store, "iss_1", "APP_1"))
    pct = cancel(store, start(store, "iss%", "APP%"))
    assert store.query(latest_task_for_issue, "plane", "iss-1") is None
    assert store.query(latest_task_for_issue, "plane", "iss-1x") is None
    assert store.query(latest_task_for_issue, "plane", "issX1") is None
    assert store.query(latest_task_for_issue, "plane", "iss") is None
    assert store.query(latest_task_for_issue, "plane", "iss-10") == ten
    assert store.query(latest_task_for_issue, "plane", "iss_1") == wild
    assert store.query(latest_task_for_issue, "plane", "iss%") == pct
    assert store.query(tasks_matching, "APP-1") == []
    assert store.query(tasks_matching, "APPX1") == []
    assert store.query(tasks_matching, "APP") == []
    assert store.query(tasks_matching, "APP_1") == [wild]
    assert store.query(find_task, "APP-1") is None
    back = start(store, "iss\\1", "APP\\1")
    assert store.query(latest_task_for_issue, "plane", "iss\\1") == back
    assert store.query(tasks_matching, "APP\\1") == [back]


def test_like_wildcards_in_an_id_match_only_themselves(store: Store) -> None:
    """Only tombstones exist here, so any wildcard or escape left loose shows."""
    plain = cancel(store, start(store, "iss1", "APP1"))
    cancel(store, start(store, "issX1", "APPX1"))
    cancel(store, start(store, "iss-1x", "APP-1x"))
    assert store.query(latest_task_for_issue, "plane", "iss_1") is None
    assert store.query(latest_task_for_issue, "plane", "iss%") is None
    assert store.query(latest_task_for_issue, "plane", "iss\\1") is None
    assert store.query(tasks_matching, "APP_1") == []
    assert store.query(tasks_matching, "APP%") == []
    assert store.query(tasks_matching, "APP\\1") == []
    slash = cancel(store, start(store, "iss\\1", "APP\\1"))
    assert store.query(latest_task_for_issue, "plane", "iss\\1") == slash
    assert store.query(latest_task_for_issue, "plane", "iss1") == plain
    assert store.query(tasks_matching, "APP\\1") == [slash]


def test_a_key_tombstoned_alone_is_still_shared_in_either_spelling(store: Store) -> None:
    hashed = cancel(store, start(store, "iss-7", "APP#7"))
    dashed = start(store, "iss-8", "app-7")  # another ticket: `APP#7` spelled with a dash
    assert store.query(key_shared_with_other_ticket, dashed)
    cancel(store, dashed)
    later = start(store, "iss-9", "App#7", tracker="gitea")
    assert store.query(key_shared_with_other_ticket, later)
    assert not store.query(key_shared_with_other_ticket, hashed)
    lone = start(store, "iss-10", "APP-70")
    assert not store.query(key_shared_with_other_ticket, lone)


def test_a_live_task_outranks_a_newer_tombstoned_one_with_the_same_key(store: Store) -> None:
    """Two tickets of one tracker share a key (two projects): the ref names the live
    task first, though the other ticket's tombstoned task is newer."""
    live = start(store, "iss-1", "APP-1")
    newer = cancel(store, start(store, "iss-2", "APP-1"))
    assert newer.id > live.id
    assert store.query(tasks_matching, "APP-1") == [live]
    assert store.query(find_task, "APP-1") == live
    assert store.query(resolve_task, "APP-1") == live
    assert store.query(tasks_matching, "iss-2") == [newer]


def test_a_key_shared_with_another_tickets_tombstone_is_seen(store: Store) -> None:
    """Names made from a key get the task id when another ticket (another project or
    tracker) had the key before, even tombstoned and spelled `app#1`."""
    old = cancel(store, start(store, "iss-1", "APP-1"))
    same_ticket = start(store, "iss-1", "APP-1")
    assert not store.query(key_shared_with_other_ticket, same_ticket)
    other_project = start(store, "iss-2", "app#1")
    assert store.query(key_shared_with_other_ticket, other_project)
    other_tracker = start(store, "iss-1", "APP-1", tracker="jira")
    assert store.query(key_shared_with_other_ticket, other_tracker)
    unrelated = start(store, "iss-3", "APP-11")
    assert not store.query(key_shared_with_other_ticket, unrelated)
    assert not store.query(key_shared_with_other_ticket, old)  # nothing earlier


def test_a_key_with_a_hash_is_not_taken_for_a_tombstone(store: Store) -> None:
    """GitHub keys are `owner/name#12`: only a `#cancelled-<digits>` tail is a tombstone."""
    task = start(store, "owner/app#12", "owner/app#12", tracker="github")
    assert parse_tombstone(task.issue_id) is None
    dead = cancel(store, task)
    assert parse_tombstone(dead.key) == ("owner/app#12", task.id)
    assert original_key(dead.key) == "owner/app#12"
    assert original_key("owner/app#12") == "owner/app#12"
    assert store.query(latest_task_for_issue, "github", "owner/app#12") == dead
    assert store.query(latest_task_for_issue, "github", "owner/app") is None


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("iss-1#cancelled-7", ("iss-1", 7)),
        ("a#cancelled-1#cancelled-23", ("a#cancelled-1", 23)),  # the last tail counts
        ("two\nlines#cancelled-5", ("two\nlines", 5)),
        ("#cancelled-9", ("", 9)),
        ("iss-1#cancelled-", None),
        ("iss-1#cancelled-7x", None),
        ("iss-1#cancelled-7\n", None),  # the id ends the value: no newline after it
        ("iss-1#cancelled-7\r\n", None),
        ("iss-1#cancelled-\u0663", None),  # ASCII digits only (not Arabic-Indic three)
        ("iss-1#cancelled-7\n#cancelled-8", ("iss-1#cancelled-7\n", 8)),
        ("iss-1#cancelled-x7", None),
        ("iss-1-cancelled-7", None),
        ("iss-1#Cancelled-7", None),
        ("iss-1", None),
    ],
)
def test_what_reads_as_a_tombstone(value: str, parsed: tuple[str, int] | None) -> None:
    assert parse_tombstone(value) == parsed
    assert original_key(value) == (parsed[0] if parsed else value)


def test_tombstone_key_spelling() -> None:
    assert tombstone_key("APP-1", 42) == "APP-1#cancelled-42"
    assert parse_tombstone(tombstone_key("x", 2**31 - 1)) == ("x", 2**31 - 1)
