"""The one sanitiser, over arbitrary tracker strings: every name it makes is inside its
root, in the safe alphabet, a ref git accepts, and two different keys never share one
unless they differ only by case or `#`/`-` (which the store's check then separates)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.intake.refs import ref_problem
from integrations.branch_guard import ref_format_problem
from integrations.git import branch_name
from integrations.names import MAX_NAME, is_safe_name, safe_name, task_dir_name
from integrations.trackers.base import TicketRef

ROOT = Path("/srv/conveyor/data/docs")
# Tracker strings as a hostile sender makes them: any text, path tricks, tombstones.
HOSTILE = st.one_of(
    st.text(),
    st.text(alphabet="./\\-_#%\x00\n ²٣Aa", max_size=30),
    st.sampled_from(["..", ".", "../../etc", "-rf", ".git", "a.lock", "PROJ-1#cancelled-7"]),
    st.builds(lambda s: s * 50, st.text(min_size=1, max_size=5)),
)


def canonical(key: str) -> str:
    return key.lower().replace("#", "-")


@settings(max_examples=500)
@given(HOSTILE, st.integers(min_value=1, max_value=2**31 - 1))
def test_every_name_is_inside_its_root_and_in_the_safe_alphabet(key: str, task_id: int) -> None:
    for name in (safe_name(key), task_dir_name(key, task_id)):
        assert is_safe_name(name), name
        assert len(name) <= MAX_NAME
        assert (ROOT / name).resolve().parent == ROOT
    branch = branch_name(key)
    assert ref_format_problem(branch) is None and branch.startswith("conveyor/")


@settings(max_examples=500)
@given(HOSTILE, HOSTILE)
def test_two_keys_share_a_name_only_when_they_differ_by_case_or_hash(a: str, b: str) -> None:
    if safe_name(a) == safe_name(b):
        assert canonical(a) == canonical(b), (a, b)


@settings(max_examples=300)
@given(HOSTILE, st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_two_tasks_never_share_a_directory(key: str, first: int, second: int) -> None:
    if first != second:
        assert task_dir_name(key, first) != task_dir_name(key, second)


@settings(max_examples=300)
@given(st.integers(1, 10**6))
def test_a_plain_key_keeps_its_readable_name(number: int) -> None:
    assert safe_name(f"PROJ-{number}") == f"proj-{number}"
    assert safe_name(f"app#{number}") == f"app-{number}"


@settings(max_examples=500)
@given(HOSTILE, HOSTILE)
def test_the_intake_refuses_refs_that_could_pass_for_a_tombstone(issue_id: str, key: str) -> None:
    problem = ref_problem(TicketRef("plane", "p", issue_id, key))
    if "#cancelled-" in issue_id or "#cancelled-" in key:
        assert problem is not None
    if problem is None:
        assert len(issue_id) <= 200 and issue_id.isprintable() and issue_id.strip()
