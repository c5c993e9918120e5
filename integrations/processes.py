"""The agent-process port: spawn an agent in its own process group, and stop that group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from integrations.errors import IntegrationError

logger = logging.getLogger(__name__)

_PROC = Path("/proc")
FIRST_POLL_SECONDS = 0.005
_DEAD_STATES = frozenset({"Z", "X"})  # zombie, dead: nothing left to signal
_MAX_POLL_INTERVAL = 0.1

# A stop is written once as a generator that yields the seconds to sleep and returns the
# report; the async and the sync entry points differ only in how they sleep.
_StopSteps = Generator[float, None, "StopReport"]


class SpawnError(IntegrationError):
    """An agent command could not be started."""


@dataclass(frozen=True)
class ProcessRef:
    """What conveyor persists to find, and prove ownership of, an agent's process group."""

    pid: int
    pgid: int
    start_time: int  # /proc/<pid>/stat field 22: clock ticks since boot


@dataclass
class AgentProcess:
    """A running agent: its persisted identity and the Popen that reaps it."""

    ref: ProcessRef
    popen: subprocess.Popen[bytes]

    def poll(self) -> int | None:
        """The exit code if the leader has exited (reaping it), else None."""
        return self.popen.poll()

    async def wait(self, poll_interval: float = 0.05) -> int:
        """Wait for the leader to exit without blocking the event loop; its exit code."""
        # Polling, as Popen offers no awaitable exit; a tick is one cheap waitpid(WNOHANG).
        while (code := self.popen.poll()) is None:  # noqa: ASYNC110
            await asyncio.sleep(poll_interval)
        return code


class StopOutcome(StrEnum):
    GRACEFUL = "graceful"
    FORCED = "forced"
    UNCONFIRMED = "unconfirmed"
    ALREADY_GONE = "already_gone"
    REFUSED = "refused"


_WORRYING = frozenset({StopOutcome.UNCONFIRMED, StopOutcome.REFUSED})


@dataclass(frozen=True)
class StopReport:
    outcome: StopOutcome
    reason: str
    term_sent_at: float | None  # time.monotonic() values
    kill_sent_at: float | None
    emptied_at: float | None
    members_at_term: int


def spawn_agent(command: str, *, cwd: Path, env: Mapping[str, str], log_path: Path) -> AgentProcess:
    """Run `/bin/sh -c command` in a new session, output appended to log_path."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The parent's copy of the log fd is closed as soon as the child holds its own.
        with open(log_path, "ab") as log:
            popen = _popen(command, cwd, env, log.fileno())
    except OSError as exc:
        raise SpawnError(
            f"cannot start agent command {command!r} in {cwd} (log {log_path}): {exc}; "
            "check that the directory exists and is accessible"
        ) from exc
    ref = _ref_of(popen)
    logger.info("agent spawned", extra={"pid": ref.pid, "pgid": ref.pgid, "cwd": str(cwd)})
    return AgentProcess(ref=ref, popen=popen)


def _popen(command: str, cwd: Path, env: Mapping[str, str], log_fd: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        start_new_session=True,
        close_fds=True,
    )


def _ref_of(popen: subprocess.Popen[bytes]) -> ProcessRef:
    # Until it is reaped (only popen.poll/wait does that) the child keeps its /proc entry,
    # even as a zombie, so its start time is always readable here.
    start_time = read_start_time(popen.pid)
    if start_time is None:
        raise SpawnError(f"agent pid {popen.pid} vanished before its start time was read")
    # start_new_session: the child called setsid(), so it leads a group whose id is its pid.
    return ProcessRef(pid=popen.pid, pgid=popen.pid, start_time=start_time)


def _stat_bytes(pid: int) -> bytes | None:
    """/proc/<pid>/stat after the command name (from the state on), or None if there is no
    such process. Plain os.open/os.read: a stop scans every process, and this is a third
    of the cost of a file object."""
    try:
        fd = os.open(f"{_PROC}/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # comm (field 2) is in parentheses and may itself hold spaces and ")".
    return raw[raw.rfind(b")") + 2 :] if raw else None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None if there is no such process."""
    raw = _stat_bytes(pid)
    return None if raw is None else raw.decode("ascii", "replace").split()


def read_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if there is no such process."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def read_pgid(pid: int) -> int | None:
    """The process's group id; None if there is no such process."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[2])


def _all_pids() -> Iterator[int]:
    return (int(name) for name in os.listdir(_PROC) if name.isdigit())


def _group_states(pgid: int) -> Iterator[tuple[int, str]]:
    """(pid, state) of every process /proc shows in the group."""
    for pid in _all_pids():
        raw = _stat_bytes(pid)
        if raw is None:
            continue
        state, _ppid, group, _ = raw.split(b" ", 3)  # only what a scan of /proc needs
        if int(group) == pgid:
            yield pid, state.decode("ascii", "replace")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in the process group."""
    return [pid for pid, state in _group_states(pgid) if state not in _DEAD_STATES]


def group_size(pgid: int) -> int:
    """Processes in the group, zombies not yet reaped included: counted right after a
    SIGTERM, an agent that left at once still counts as stopped."""
    return sum(1 for _, state in _group_states(pgid) if state != "X")


def group_alive(pgid: int) -> bool:
    """Whether the group has a process that is not a zombie."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A live leader settles it without scanning all of /proc (the common case while a
    # stop waits out its grace).
    leader = _stat_fields(pgid)
    if leader is not None and leader[0] not in _DEAD_STATES and int(leader[2]) == pgid:
        return True
    # Orphaned zombies may never be reaped here (PID 1 need not reap), so they count as
    # gone. A group that /proc does not show at all stays alive: not proven empty.
    states = [state for _, state in _group_states(pgid)]
    return not states or any(state not in _DEAD_STATES for state in states)


def processes_with_env(name: str, value: str) -> list[int]:
    """Live pids whose environment holds name=value (unreadable ones are skipped)."""
    wanted = os.fsencode(f"{name}={value}")
    return [pid for pid in _all_pids() if _environ_has(pid, wanted)]


def _environ_has(pid: int, entry: bytes) -> bool:
    fields = _stat_fields(pid)
    if fields is None or fields[0] in _DEAD_STATES:
        return False
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return entry in environ.split(b"\0")


def ownership_refusal(ref: ProcessRef, *, own_pgid: int | None = None) -> str | None:
    """Why signalling ref's group would be unsafe; None when the group is ours to signal."""
    if ref.pgid <= 1 or ref.pid <= 1:
        return f"pid {ref.pid} / pgid {ref.pgid} belongs to the system, never to an agent"
    own = os.getpgrp() if own_pgid is None else own_pgid
    if ref.pgid in (own, os.getpid()):
        return f"pgid {ref.pgid} is conveyor's own process group"
    return _pid_reuse_refusal(ref)


def _pid_reuse_refusal(ref: ProcessRef) -> str | None:
    started = read_start_time(ref.pid)
    # A gone leader does not make the group someone else's: Linux keeps a pid number
    # allocated while it is still in use as a process-group id, so while any member of
    # group ref.pgid lives, no new process can be given that number. Only a leader pid
    # that exists with another start time proves the number was reused.
    if started is None or started == ref.start_time:
        return None
    return (
        f"pid reused: pid {ref.pid} started at tick {started}, not {ref.start_time}; "
        "the agent's group is gone and this one is someone else's"
    )


def request_exit(ref: ProcessRef) -> bool:
    """SIGTERM (+SIGCONT) the group now, with the same ownership checks as a stop; True if
    sent. A stop that follows sends them again (harmless) and waits out the grace."""
    if ownership_refusal(ref) is not None:
        return False
    sent = _signal_group(ref.pgid, signal.SIGTERM)
    _signal_group(ref.pgid, signal.SIGCONT)
    return sent


async def stop_process_group(
    ref: ProcessRef,
    grace: float,
    *,
    confirm_timeout: float = 2.0,
    poll_interval: float = 0.05,
    reap: Callable[[], object] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> StopReport:
    """SIGTERM (+SIGCONT) the group, SIGKILL it after grace, and confirm it is empty.

    With the default `sleep`, a poll's sleep also ends when the group's leader exits (a
    pidfd), so a cooperative agent's exit is seen when it happens, not at the next poll.
    """
    steps = _stop_steps(ref, grace, confirm_timeout, poll_interval, reap, clock)
    wake = LeaderExit(ref.pid) if sleep is asyncio.sleep else None
    pause = sleep if wake is None else wake.sleep
    try:
        while True:
            try:
                delay = next(steps)
            except StopIteration as done:
                report: StopReport = done.value
                return report
            await pause(delay)
    finally:
        if wake is not None:
            wake.close()


class LeaderExit:
    """A sleep that ends early, once, when the process `pid` exits (its pidfd turns
    readable). Only a handle is opened: nothing is signalled through it. Without pidfd
    support (or once the leader is gone) it is a plain sleep."""

    def __init__(self, pid: int) -> None:
        self._fd: int | None = None
        if pid > 1:
            with contextlib.suppress(OSError, AttributeError):
                self._fd = os.pidfd_open(pid)

    async def sleep(self, delay: float) -> None:
        if self._fd is None:
            await asyncio.sleep(delay)
            return
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[bool] = loop.create_future()

        def wake(exited: bool) -> None:
            if not woken.done():
                woken.set_result(exited)

        fd = self._fd
        loop.add_reader(fd, wake, True)
        timer = loop.call_later(delay, wake, False)
        try:
            exited = await woken
        finally:
            loop.remove_reader(fd)
            timer.cancel()
        if exited:  # a zombie leader stays readable: from now on, plain sleeps
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def stop_process_group_sync(
    ref: ProcessRef,
    grace: float,
    *,
    confirm_timeout: float = 2.0,
    poll_interval: float = 0.05,
    reap: Callable[[], object] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> StopReport:
    """stop_process_group for code without an event loop (CLI, benchmarks)."""
    steps = _stop_steps(ref, grace, confirm_timeout, poll_interval, reap, clock)
    while True:
        try:
            delay = next(steps)
        except StopIteration as done:
            report: StopReport = done.value
            return report
        sleep(delay)


def _stop_steps(
    ref: ProcessRef,
    grace: float,
    confirm_timeout: float,
    poll_interval: float,
    reap: Callable[[], object] | None,
    clock: Callable[[], float],
) -> _StopSteps:
    """The stop algorithm, logged once whichever way it ends."""
    poll = min(max(poll_interval, 0.001), _MAX_POLL_INTERVAL)
    report = yield from _stop(ref, grace, confirm_timeout, poll, reap, clock)
    level = logging.WARNING if report.outcome in _WORRYING else logging.INFO
    logger.log(
        level,
        "agent group stop finished",
        extra={"pgid": ref.pgid, "outcome": str(report.outcome), "reason": report.reason},
    )
    return report


def _stop(
    ref: ProcessRef,
    grace: float,
    confirm_timeout: float,
    poll: float,
    reap: Callable[[], object] | None,
    clock: Callable[[], float],
) -> _StopSteps:
    refusal = ownership_refusal(ref)
    if refusal is not None:
        return StopReport(StopOutcome.REFUSED, refusal, None, None, None, 0)
    _reap_group(ref, reap)
    if not group_alive(ref.pgid):
        return StopReport(
            StopOutcome.ALREADY_GONE, "no live process in the group", None, None, None, 0
        )
    members = len(group_members(ref.pgid))
    term_at = clock()
    if _signal_group(ref.pgid, signal.SIGTERM):
        # A SIGSTOPped agent keeps a pending SIGTERM until it is continued.
        _signal_group(ref.pgid, signal.SIGCONT)
    emptied_at = yield from _until_empty(ref, term_at + grace, poll, reap, clock)
    if emptied_at is not None:
        return StopReport(
            StopOutcome.GRACEFUL, "left on SIGTERM", term_at, None, emptied_at, members
        )
    kill_at = clock()
    if _pid_reuse_refusal(ref) is None:
        _signal_group(ref.pgid, signal.SIGKILL)
    emptied_at = yield from _until_empty(ref, kill_at + confirm_timeout, poll, reap, clock)
    if emptied_at is not None:
        return StopReport(
            StopOutcome.FORCED, "SIGKILL needed", term_at, kill_at, emptied_at, members
        )
    reason = f"group not empty {confirm_timeout:g} s after SIGKILL"
    return StopReport(StopOutcome.UNCONFIRMED, reason, term_at, kill_at, None, members)


def _until_empty(
    ref: ProcessRef,
    deadline: float,
    poll: float,
    reap: Callable[[], object] | None,
    clock: Callable[[], float],
) -> Generator[float, None, float | None]:
    """Yield sleeps until the group is empty (its time) or the deadline passes (None).

    Polls fast at first (a cooperative agent is usually gone within milliseconds) and
    backs off to `poll`."""
    wait = min(FIRST_POLL_SECONDS, poll)
    while True:
        # A reused leader pid means our group's number was freed: the group is empty.
        gone = _pid_reuse_refusal(ref) is not None or not group_alive(ref.pgid)
        # Reap after looking, so the zombie leader that made the group look empty has
        # its exit status collected before the caller reads it.
        _reap_group(ref, reap)
        if gone:
            return clock()
        now = clock()
        if now >= deadline:
            return None
        yield min(wait, deadline - now)
        wait = min(poll, wait * 2)


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send sig to the group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        logger.warning("agent group signal refused", extra={"pgid": pgid, "signal": sig.name})
    return True


def _reap_group(ref: ProcessRef, reap: Callable[[], object] | None) -> None:
    """Reap our exited children in the group; the leader through reap() when given."""
    if reap is not None:
        reap()
    while (pid := _exited_child(ref.pgid)) is not None:
        if pid == ref.pid and reap is not None:
            # Leave the leader to reap(): its Popen must see the real exit status, or it
            # would report 0. The next poll tick calls reap() again.
            return
        _waitpid_nohang(pid)


def _exited_child(pgid: int) -> int | None:
    """Pid of an exited, un-reaped child of ours in the group, without reaping it."""
    try:
        result = os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return None if result is None else result.si_pid


def _waitpid_nohang(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
