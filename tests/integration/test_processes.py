"""The agent-process port against real processes and the real /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from integrations.errors import IntegrationError
from integrations.processes import (
    AgentProcess,
    LeaderExit,
    ProcessRef,
    SpawnError,
    StopOutcome,
    group_alive,
    group_members,
    ownership_refusal,
    processes_with_env,
    read_pgid,
    read_start_time,
    request_exit,
    spawn_agent,
    stop_process_group,
    stop_process_group_sync,
)

COOPERATIVE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(1)
"""

# The ignored SIGTERM is inherited across exec: the grandchild `sleep` ignores it too, and
# it holds the log file as its stdout.
TREE = """
import signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(["sleep", "300"])
print("ready", flush=True)
while True:
    time.sleep(1)
"""

RENAMED = """
import time
with open("/proc/self/comm", "w") as comm:
    comm.write("a) b (c) d")
print("ready", flush=True)
time.sleep(300)
"""

Launch = Callable[..., AgentProcess]


def _kill_leftovers(agent: AgentProcess) -> None:
    if ownership_refusal(agent.ref) is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.ref.pgid, signal.SIGKILL)
    agent.popen.wait(timeout=5)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Spawn agents (a Python script, or any shell command); SIGKILL every group after."""
    started: list[AgentProcess] = []

    def _launch(
        script: str = "",
        *,
        command: str = "exec {python} {script}",
        env: Mapping[str, str] | None = None,
    ) -> AgentProcess:
        path = tmp_path / f"agent{len(started)}.py"
        path.write_text(script)
        agent = spawn_agent(
            command.format(python=sys.executable, script=path),
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
            log_path=tmp_path / "logs" / f"agent{len(started)}.log",
        )
        started.append(agent)
        return agent

    try:
        yield _launch
    finally:
        for agent in started:
            _kill_leftovers(agent)


def _log_of(agent: AgentProcess) -> Path:
    return Path(os.readlink(f"/proc/{agent.ref.pid}/fd/1"))


async def _until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _ready(agent: AgentProcess) -> Path:
    log = _log_of(agent)
    await _until(lambda: "ready" in log.read_text())
    return log


def _proc_text(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def _state(pid: int) -> str:
    stat = _proc_text(pid, "stat")
    return stat[stat.rfind(")") + 2]


async def test_spawn_runs_in_cwd_with_env_and_appends_output_to_the_log(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    log_path = tmp_path / "logs" / "task" / "job.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text("earlier run\n")
    agent = spawn_agent(
        'pwd; echo "$CONVEYOR_STAGE"; echo oops >&2',
        cwd=work,
        env={"PATH": os.environ["PATH"], "CONVEYOR_STAGE": "analysis"},
        log_path=log_path,
    )
    assert await agent.wait() == 0
    assert log_path.read_text() == f"earlier run\n{work}\nanalysis\noops\n"


async def test_spawn_creates_log_dirs_and_gives_no_pipes(launch: Launch, tmp_path: Path) -> None:
    agent = launch(STUBBORN)
    log = await _ready(agent)
    assert log == tmp_path / "logs" / "agent0.log"
    fds = {fd: os.readlink(f"/proc/{agent.ref.pid}/fd/{fd}") for fd in ("0", "1", "2")}
    assert fds == {"0": "/dev/null", "1": str(log), "2": str(log)}


def test_spawn_records_a_new_group_and_its_start_time(launch: Launch) -> None:
    agent = launch(STUBBORN)
    ref = agent.ref
    assert ref.pid == agent.popen.pid
    assert ref.pgid == ref.pid == os.getpgid(ref.pid)
    assert ref.pgid != os.getpgrp()
    assert read_pgid(ref.pid) == ref.pgid
    fields = _proc_text(ref.pid, "stat").rsplit(")", 1)[1].split()
    assert ref.start_time == int(fields[19]) == read_start_time(ref.pid)
    assert group_members(ref.pgid) == [ref.pid]


async def test_proc_parsing_survives_a_comm_with_spaces_and_parens(launch: Launch) -> None:
    agent = launch(RENAMED)
    await _ready(agent)
    assert _proc_text(agent.ref.pid, "comm") == "a) b (c) d\n"
    assert read_start_time(agent.ref.pid) == agent.ref.start_time
    assert read_pgid(agent.ref.pid) == agent.ref.pgid


def test_nothing_is_read_for_a_missing_process() -> None:
    assert read_start_time(2**22 + 1) is None
    assert read_pgid(2**22 + 1) is None
    assert group_alive(2**22 + 1) is False
    assert group_members(2**22 + 1) == []


async def test_wait_returns_the_exit_code(launch: Launch) -> None:
    agent = launch(command="exit 7")
    assert await agent.wait() == 7
    assert agent.poll() == 7


def test_a_missing_cwd_is_a_spawn_error(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="missing") as raised:
        spawn_agent("true", cwd=tmp_path / "missing", env={}, log_path=tmp_path / "x.log")
    assert isinstance(raised.value, IntegrationError)


async def test_a_cooperative_agent_stops_gracefully(launch: Launch) -> None:
    agent = launch(COOPERATIVE)
    await _ready(agent)
    report = await stop_process_group(agent.ref, grace=5, reap=agent.popen.poll)
    assert report.outcome is StopOutcome.GRACEFUL
    assert report.term_sent_at is not None and report.emptied_at is not None
    assert report.emptied_at - report.term_sent_at < 1.5
    assert (report.kill_sent_at, report.members_at_term) == (None, 1)
    assert agent.popen.returncode == 0
    assert group_alive(agent.ref.pgid) is False


# Leaves 0.3 s after its SIGTERM: between two of a stop's polls, not at one.
SLOW_TO_LEAVE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.3), sys.exit(0)))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


async def test_a_stops_sleep_ends_when_the_leader_exits(launch: Launch) -> None:
    agent = launch(SLOW_TO_LEAVE)
    await _ready(agent)
    wake = LeaderExit(agent.ref.pid)
    try:
        os.killpg(agent.ref.pgid, signal.SIGTERM)
        started = time.monotonic()
        await wake.sleep(60)  # a plain sleep would take the whole minute
        assert time.monotonic() - started < 30
        assert agent.popen.poll() == 0  # it had exited: woken by its exit, not by chance
        # The zombie's pidfd stays readable; the wake is used up, so sleeps sleep again.
        started = time.monotonic()
        await wake.sleep(0.2)
        assert time.monotonic() - started >= 0.2
    finally:
        wake.close()


async def test_a_stop_leaves_no_descriptor_open(launch: Launch) -> None:
    before = set(os.listdir("/proc/self/fd"))
    for script in (COOPERATIVE, SLOW_TO_LEAVE):
        agent = launch(script)
        await _ready(agent)
        report = await stop_process_group(agent.ref, grace=5, reap=agent.popen.poll)
        assert report.outcome is StopOutcome.GRACEFUL
    assert set(os.listdir("/proc/self/fd")) <= before


async def test_an_agent_ignoring_sigterm_is_killed_when_grace_runs_out(launch: Launch) -> None:
    agent = launch(STUBBORN)
    await _ready(agent)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.05)

    ticker = asyncio.create_task(tick())
    report = await stop_process_group(agent.ref, grace=2, reap=agent.popen.poll)
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    assert ticks >= 20, "the stop blocked the event loop"
    assert report.outcome is StopOutcome.FORCED
    assert report.term_sent_at is not None and report.kill_sent_at is not None
    assert report.emptied_at is not None
    # Real time on a busy machine: never before the grace, after it by what load adds
    # (the exact escalation is checked on a manual clock below).
    assert 2 <= report.kill_sent_at - report.term_sent_at <= 2 + 3
    assert report.emptied_at - report.term_sent_at <= 2 + 2 + 3
    assert agent.popen.returncode == -signal.SIGKILL


async def test_a_three_level_tree_leaves_no_survivor(launch: Launch) -> None:
    run_id = str(uuid.uuid4())
    # No `exec`: the shell stays as the parent of python, which starts `sleep`.
    command = "{python} {script}; echo after"
    agent = launch(TREE, command=command, env={"CONVEYOR_RUN_ID": run_id})
    await _until(lambda: len(processes_with_env("CONVEYOR_RUN_ID", run_id)) == 3)
    members = group_members(agent.ref.pgid)
    assert sorted(processes_with_env("CONVEYOR_RUN_ID", run_id)) == members
    (grandchild,) = [pid for pid in members if _proc_text(pid, "comm") == "sleep\n"]
    assert os.readlink(f"/proc/{grandchild}/fd/1") == str(_log_of(agent))
    report = await stop_process_group(agent.ref, grace=0.5, reap=agent.popen.poll)
    assert report.outcome is StopOutcome.FORCED
    assert report.members_at_term == 3
    assert processes_with_env("CONVEYOR_RUN_ID", run_id) == []
    assert group_alive(agent.ref.pgid) is False


async def test_a_stopped_agent_still_stops(launch: Launch) -> None:
    agent = launch(COOPERATIVE)
    await _ready(agent)
    os.killpg(agent.ref.pgid, signal.SIGSTOP)
    await _until(lambda: _state(agent.ref.pid) == "T")
    report = await stop_process_group(agent.ref, grace=5, reap=agent.popen.poll)
    assert report.outcome is StopOutcome.GRACEFUL
    assert agent.popen.returncode == 0


async def test_a_reused_pid_is_not_signalled(launch: Launch) -> None:
    agent = launch(STUBBORN)
    await _ready(agent)
    stranger = ProcessRef(agent.ref.pid, agent.ref.pgid, agent.ref.start_time + 1)
    report = await stop_process_group(stranger, grace=0.1, reap=agent.popen.poll)
    assert report.outcome is StopOutcome.REFUSED
    assert "pid reused" in report.reason
    assert report.term_sent_at is None
    assert report.members_at_term == 0  # counts nothing as stopped in the stop's record
    assert agent.poll() is None
    assert group_alive(agent.ref.pgid) is True


def test_own_group_and_system_groups_are_refused() -> None:
    own = ProcessRef(os.getpid(), os.getpgrp(), read_start_time(os.getpid()) or 0)
    report = stop_process_group_sync(own, grace=0.1)
    assert report.outcome is StopOutcome.REFUSED
    assert ownership_refusal(ProcessRef(1, 1, 0)) is not None
    assert ownership_refusal(ProcessRef(4242, 1, 0)) is not None
    assert ownership_refusal(ProcessRef(4242, 4242, 0), own_pgid=4242) is not None


def test_pid_1_is_refused_whatever_its_group_and_each_refusal_says_why() -> None:
    """pid 1 with a start time that matches (so no pid-reuse refusal covers for it) and a
    group of its own is still the system's; the reasons name the rule that refused."""
    init = ProcessRef(1, 4242, read_start_time(1) or 0)
    assert "belongs to the system" in (ownership_refusal(init, own_pgid=7) or "")
    system = ownership_refusal(ProcessRef(4242, 1, 0), own_pgid=7)
    assert system == "pid 4242 / pgid 1 belongs to the system, never to an agent"
    own = ownership_refusal(ProcessRef(4242, 4242, 0), own_pgid=4242)
    assert own == "pgid 4242 is conveyor's own process group"


def test_a_group_whose_leader_is_gone_is_still_ours() -> None:
    assert ownership_refusal(ProcessRef(2**22 + 1, 2**22 + 1, 123), own_pgid=1) is None


async def test_an_unreaped_zombie_counts_as_gone(launch: Launch) -> None:
    agent = launch(command="exit 3")
    await _until(lambda: _state(agent.ref.pid) == "Z")
    assert group_alive(agent.ref.pgid) is False
    assert group_members(agent.ref.pgid) == []
    assert read_start_time(agent.ref.pid) == agent.ref.start_time
    report = await stop_process_group(agent.ref, grace=1, reap=agent.popen.poll)
    assert report.outcome is StopOutcome.ALREADY_GONE
    assert report.members_at_term == 0
    assert agent.popen.returncode == 3


def test_the_sync_stop_forces_a_stubborn_agent(launch: Launch) -> None:
    agent = launch(STUBBORN)
    log = _log_of(agent)
    deadline = time.monotonic() + 5
    while "ready" not in log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    report = stop_process_group_sync(agent.ref, grace=0.3)
    assert report.outcome is StopOutcome.FORCED
    assert group_alive(agent.ref.pgid) is False


async def test_request_exit_asks_our_agent_and_never_a_stranger(launch: Launch) -> None:
    agent = launch(COOPERATIVE)
    await _ready(agent)
    stranger = ProcessRef(agent.ref.pid, agent.ref.pgid, agent.ref.start_time + 1)
    assert request_exit(stranger) is False
    await asyncio.sleep(0.2)
    assert agent.poll() is None  # a start time that does not match: not signalled
    assert request_exit(agent.ref) is True
    assert await agent.wait() == 0  # the cooperative agent left on SIGTERM


async def test_request_exit_to_a_group_that_is_gone_says_not_sent(launch: Launch) -> None:
    agent = launch(command="exit 0")
    assert await agent.wait() == 0  # reaped: no process is left in the group
    assert group_alive(agent.ref.pgid) is False
    assert request_exit(agent.ref) is False


class ManualTime:
    """The stop's clock and sleep ports: time moves only when the stop sleeps, by exactly
    what it asked; each sleep also yields briefly for real, so a killed process can die."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(min(seconds, 0.02))


async def test_sigkill_comes_exactly_when_the_grace_ends_on_a_manual_clock(
    launch: Launch,
) -> None:
    agent = launch(STUBBORN)
    await _ready(agent)
    time_ = ManualTime()
    report = await stop_process_group(
        agent.ref, grace=10, reap=agent.popen.poll, sleep=time_.sleep, clock=time_.clock
    )
    assert time_.slept == pytest.approx(report.emptied_at - 1000.0)  # all the time it took
    assert report.outcome is StopOutcome.FORCED
    assert report.term_sent_at == 1000.0
    assert report.kill_sent_at == pytest.approx(1000.0 + 10)  # not a poll before, nor after
    assert report.emptied_at is not None and report.emptied_at <= report.kill_sent_at + 2
    assert agent.popen.returncode == -signal.SIGKILL


FREEZER = Path("/sys/fs/cgroup/freezer")


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """Freeze a process with the cgroup v1 freezer: a frozen task cannot die, even of
    SIGKILL, until it is thawed. The one honest way to have a group outlive SIGKILL."""
    group = FREEZER / f"conveyor-test-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"needs a writable cgroup v1 freezer at {FREEZER}: {exc}")
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "freezer.state").write_text("FROZEN")
        deadline = time.monotonic() + 10
        while (group / "freezer.state").read_text().strip() != "FROZEN":
            assert time.monotonic() < deadline, "the freezer did not freeze"
            time.sleep(0.01)
        yield
    finally:
        (group / "freezer.state").write_text("THAWED")
        deadline = time.monotonic() + 10
        while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.02)  # the pending SIGKILL lands on thaw
        with contextlib.suppress(OSError):
            group.rmdir()


async def test_a_group_still_there_2_s_after_sigkill_is_unconfirmed(launch: Launch) -> None:
    agent = launch(STUBBORN)
    await _ready(agent)
    time_ = ManualTime()
    with frozen(agent.ref.pid):
        report = await stop_process_group(
            agent.ref, grace=5, reap=agent.popen.poll, sleep=time_.sleep, clock=time_.clock
        )
        assert group_alive(agent.ref.pgid)  # really still there
    assert report.outcome is StopOutcome.UNCONFIRMED
    assert report.reason == "group not empty 2 s after SIGKILL"
    assert (report.term_sent_at, report.emptied_at) == (1000.0, None)
    assert report.kill_sent_at == pytest.approx(1005.0)
    assert time_.now == pytest.approx(1005.0 + 2)  # gave up exactly at the confirm timeout
    agent.popen.wait(timeout=10)
    assert agent.popen.returncode == -signal.SIGKILL  # the pending SIGKILL, once thawed
