"""The branch guard: no name built from a protected branch is ever deletable."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.branch_guard import (
    deletion_refusal,
    is_protected,
    normalise_branch,
    ref_format_problem,
)
from integrations.git import branch_name

DEFAULT = "trunk"
PROTECTED = ("release/*", "Hotfix-*")
PROTECTED_NAMES = ["main", "master", DEFAULT, "release/1.0", "release/x/y", "hotfix-7"]
# Cyrillic and Greek letters that look like Latin ones, and fullwidth forms (NFKC-folded).
LOOKALIKES = {"a": "аα", "e": "е", "i": "іι", "o": "оο", "s": "ѕ", "t": "т", "k": "к"}
PREFIXES = ["", "refs/heads/", "refs/heads/refs/heads/", "REFS/HEADS/", " ", "\t", "\u00a0"]
SUFFIXES = ["", " ", "\n", "/..", "/.", "/", "\u3000", ".lock"]
SHAS = st.text("0123456789abcdef", min_size=40, max_size=40)
TRICKY = st.lists(
    st.sampled_from([*"ab-./@{}~^:?*[\\ \t\x7fé", "lock", "HEAD"]), min_size=1, max_size=10
).map("".join)
STRICTER_THAN_GIT = ("starts with '-'", "'@' is not a branch name")


def refusal(branch: str, task_branch: str, **shas: str | None) -> str | None:
    return deletion_refusal(
        branch, task_branch=task_branch, default_branch=DEFAULT, protected=PROTECTED, **shas
    )


def git_accepts(name: str) -> bool:
    """What real `git check-ref-format --branch` says about `name`."""
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, check=False
    )
    return done.returncode == 0


@st.composite
def disguise(draw: st.DrawFn, name: str) -> str:
    """`name` with random case, look-alike letters, fullwidth forms and decorations."""
    chars = []
    for char in name:
        style = draw(st.sampled_from(["same", "upper", "lookalike", "fullwidth"]))
        if style == "upper":
            char = char.upper()
        elif style == "lookalike" and char in LOOKALIKES:
            char = draw(st.sampled_from(LOOKALIKES[char]))
        elif style == "fullwidth" and "!" <= char <= "~":
            char = chr(ord(char) + 0xFEE0)
        chars.append(char)
    return draw(st.sampled_from(PREFIXES)) + "".join(chars) + draw(st.sampled_from(SUFFIXES))


hostile_names = st.sampled_from(PROTECTED_NAMES).flatmap(disguise)


@settings(max_examples=200)
@given(hostile_names, st.data())
def test_a_disguised_protected_branch_is_never_deletable(hostile: str, data: st.DataObject) -> None:
    task_branch = data.draw(st.one_of(st.just(hostile), st.text(), st.just("conveyor/x")))
    sha = data.draw(SHAS)
    assert refusal(hostile, task_branch, remote_sha=sha, recorded_sha=sha) is not None
    assert refusal(hostile, hostile) is not None


@pytest.mark.parametrize(
    "hostile",
    ["main", "Main", "MAIN", "refs/heads/main", "main/..", " main", "main ", "mаin", "ｍａｉｎ",
     "master", "MASTER", DEFAULT, "release/1.0", "RELEASE/2", "refs/heads/release/x", "",
     "  ", "conveyor/../main", "conveyor/x\n", "hotfix-1"],
)  # fmt: skip
def test_known_hostile_names_are_refused_even_when_they_are_the_task_branch(hostile: str) -> None:
    assert refusal(hostile, hostile) is not None


@settings(max_examples=200)
@given(st.text(), st.none() | st.text(max_size=20), SHAS)
def test_a_task_branch_at_its_recorded_sha_is_deletable(
    key: str, suffix: str | None, sha: str
) -> None:
    branch = branch_name(key, suffix)
    assert refusal(branch, branch, remote_sha=sha, recorded_sha=sha) is None
    assert refusal(branch, branch) is None


@settings(max_examples=100)
@given(st.text(), SHAS, SHAS)
def test_a_moved_remote_head_is_refused(key: str, remote: str, recorded: str) -> None:
    branch = branch_name(key)
    reason = refusal(branch, branch, remote_sha=remote, recorded_sha=recorded)
    assert (reason is None) == (remote == recorded)
    if reason is not None:
        assert reason.startswith("remote head moved")


@settings(max_examples=100)
@given(st.text(min_size=1), st.text(min_size=1))
def test_only_the_recorded_task_branch_is_deletable(key: str, other: str) -> None:
    branch, claimed = branch_name(key), branch_name(other)
    assert (refusal(branch, claimed) is None) == (branch == claimed)


def test_safety_reasons_win_over_the_sha_check() -> None:
    reason = refusal("main", "main", remote_sha="a" * 40, recorded_sha="b" * 40)
    assert reason is not None and "protected" in reason


def test_names_outside_the_conveyor_namespace_are_refused() -> None:
    assert refusal("feature/x", "feature/x") == "'feature/x' does not start with 'conveyor/'"


def test_normalise_and_is_protected() -> None:
    assert normalise_branch(" refs/heads/ＭＡＩＮ ") == "main"
    assert is_protected("Release/9", default_branch=DEFAULT, protected=PROTECTED)
    assert is_protected("refs/heads/TRUNK", default_branch=DEFAULT, protected=PROTECTED)
    assert not is_protected("conveyor/main", default_branch=DEFAULT, protected=PROTECTED)


# --- branch_name and the check-ref-format rules --------------------------------------


@settings(max_examples=200)
@given(st.text(), st.none() | st.text())
def test_branch_name_is_always_a_valid_deterministic_conveyor_ref(
    key: str, suffix: str | None
) -> None:
    name = branch_name(key, suffix)
    assert ref_format_problem(name) is None
    assert name.startswith("conveyor/") and name.isascii()
    assert name == branch_name(key, suffix)


@settings(max_examples=100, deadline=None)
@given(st.text(), st.none() | st.text(max_size=10))
def test_real_git_accepts_branch_names(key: str, suffix: str | None) -> None:
    assert git_accepts(branch_name(key, suffix))


def test_branch_name_keeps_plain_keys_and_separates_altered_ones() -> None:
    # The one sanitiser's alphabet: lowercase (DESIGN "Trackers").
    assert branch_name("PROJ-42") == "conveyor/proj-42"
    assert branch_name("PROJ-42", "retry") == "conveyor/proj-42-retry"
    assert branch_name("app#12") == "conveyor/app-12"
    assert branch_name("PROJ 42") != branch_name("PROJ/42")
    assert branch_name("") == branch_name("")


@settings(max_examples=200, deadline=None)
@given(TRICKY)
def test_ref_format_rules_agree_with_real_git(name: str) -> None:
    problem = ref_format_problem(name)
    if problem is None:
        assert git_accepts(name), name
    elif git_accepts(name):
        assert any(rule in problem for rule in STRICTER_THAN_GIT), (name, problem)


@pytest.mark.parametrize(
    ("name", "valid"),
    [("conveyor/a", True), ("a/b.c", True), ("a..b", False), ("a/.b", False), ("a.lock", False),
     ("a/b.lock/c", False), ("a@{b", False), ("a b", False), ("a~1", False), ("a^", False),
     ("a:b", False), ("a?", False), ("a*", False), ("a[b", False), ("a\\b", False),
     ("/a", False), ("a/", False), ("a//b", False), ("a.", False), ("@", False), ("-a", False),
     ("HEAD", False), ("a\x7f", False), ("a\tb", False), ("", False)],
)  # fmt: skip
def test_ref_format_examples(name: str, valid: bool) -> None:
    assert (ref_format_problem(name) is None) is valid
    if name:
        assert git_accepts(name) is valid or name == "@"


@pytest.mark.parametrize("name", ["main", "master", "Master", "refs/heads/master", "MAIN"])
def test_main_and_master_are_protected_whatever_the_default(name: str) -> None:
    # Mutation testing found "master" unprotected by any test when the default is not it.
    assert is_protected(name, default_branch=DEFAULT, protected=())
    reason = deletion_refusal(name, task_branch=name, default_branch=DEFAULT, protected=())
    assert reason is not None and "protected" in reason
