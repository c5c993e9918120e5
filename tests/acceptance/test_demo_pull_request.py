"""`conveyor demo --scenario pull-request`: the whole pull-request flow offline, against
the fake forge the demo starts itself, every claim checked against the world."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.test_demo import assert_claims, assert_nothing_left, run_demo

PULL_REQUEST_CLAIMS = [
    r'start webhook \(signed, "To Analyse"\): 202 started DEMO-1',
    r"passed and pushed: pull request #1 opened \(https://\S+/demo/app/pull/1\)",
    r"checks pending: the merge stage waited outside the critical window",
    r"merged through the forge \(merge commit \w{7}\); task done",
    r'pull request #1 from conveyor/demo-1 to main: "DEMO-1: Demo ticket"',
    r"the forge was asked [3-9] times whether it merges; the merge began after",
    r"the merge finished honestly: exactly 1 merge commit on main",
    r"pull request merged on the forge by (\w{7}), main's head",
    r"merged branch conveyor/demo-1 deleted: git ls-remote finds no such branch",
    r"task DEMO-1 is done",
]


@pytest.mark.timeout(180)
def test_demo_pull_request_merges_through_the_fake_forge(tmp_path: Path) -> None:
    done, temp = run_demo(tmp_path, "--scenario", "pull-request")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_claims(done.stdout, PULL_REQUEST_CLAIMS)
    assert "What the merge did" in done.stdout
    assert_nothing_left(done.stdout, temp)
    assert "Traceback" not in done.stderr
