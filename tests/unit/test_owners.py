"""One `processes` result made of this server's stops and those its owners reported."""

from __future__ import annotations

from bot.stopplane.owners import merge_process_results


def test_owners_results_add_up_and_name_what_is_still_pending() -> None:
    local = {
        "groups": 1,
        "processes": 1,
        "forced": False,
        "outcomes": ["graceful"],
        "unconfirmed": 0,
        "refused": 0,
        "term_to_kill_seconds": None,
        "term_to_empty_seconds": 0.05,
    }
    owner = {
        "by": "b",
        "host": "host-b",
        "groups": 2,
        "processes": 5,
        "forced": True,
        "outcomes": ["graceful", "forced"],
        "unconfirmed": 0,
        "refused": 0,
        "term_to_kill_seconds": 1.0,
        "term_to_empty_seconds": 1.02,
    }
    gone = {"pending_on": "c", "host": "host-c"}
    merged = merge_process_results(local, [owner, gone])
    assert (merged["groups"], merged["processes"], merged["forced"]) == (3, 6, True)
    assert merged["outcomes"] == ["graceful", "graceful", "forced"]
    assert merged["term_to_kill_seconds"] == 1.0 and merged["term_to_empty_seconds"] == 1.02
    assert merged["pending_on"] == ["c"] and merged["hosts"] == [owner, gone]
