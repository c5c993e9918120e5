"""Reset cost: conveyor's whole reset (stop the agent, cancel jobs, remove the worktree,
delete the remote branch on a local bare remote, tombstone, terminal) beside the floor
of the same git work done with plain `git worktree remove --force` + `git push
--delete`, interleaved task by task in one run.

Each conveyor task has a pushed feature branch (its analysis agent committed) and a
cooperative implementation agent running. Each floor task has a worktree with one
commit on a branch pushed to the same remote. Three floors: the two git commands; the
guarded floor (the checks conveyor's git port makes, as plain git commands); and the
guarded floor that also stops an agent (the same cooperative agent command, spawned by
the bench as conveyor spawns agents: SIGTERM to its group, reap it, see it empty), the
whole of what a reset must do outside the store. Resets go one at a time, alternating
with the floors, so all see the same machine. Per-step times come from the server's log.

    python bench/reset_cost.py [--tasks 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/reset_cost.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.agents import (  # noqa: E402
    Running,
    StoreReader,
    TaskState,
    start_tickets,
    stop_body,
    wait_running,
    write_agents,
)
from bench.common import (  # noqa: E402
    child_env,
    conveyor_server,
    free_port,
    git,
    kill_survivors,
    make_repo,
    new_token,
    percentile,
    ratio,
    settings_doc,
    summarize,
    survivors,
    table,
    task_key,
    verdict,
    workspace,
)
from integrations.processes import AgentProcess, spawn_agent  # noqa: E402
from state.models import RESET_STEP_ORDER  # noqa: E402

TARGET = 1.5
TARGET_GUARDED = 1.3
GIT_STEPS = "worktree + remote_branch"
STEPS = RESET_STEP_ORDER


@dataclass
class ResetResult:
    tasks: int
    floor: list[float] = field(default_factory=list)  # seconds per task: remove + push
    floor_remove: list[float] = field(default_factory=list)
    floor_push: list[float] = field(default_factory=list)
    guarded: list[float] = field(default_factory=list)  # the same guards conveyor's git port runs
    guarded_worktree: list[float] = field(default_factory=list)  # list, remove, prune, branch -D
    guarded_remote: list[float] = field(default_factory=list)  # ls-remote, push --delete
    agent_stop: list[float] = field(default_factory=list)  # TERM, reap, group seen empty
    stopping: list[float] = field(default_factory=list)  # agent stop + the guarded floor
    conveyor: list[float] = field(default_factory=list)  # STOP sent -> stop record closed
    steps: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)

    @property
    def ratio_total(self) -> float:
        return ratio(sum(self.conveyor), sum(self.floor))

    @property
    def ratio_guarded(self) -> float:
        return ratio(sum(self.conveyor), sum(self.guarded))

    @property
    def ratio_stopping(self) -> float:
        return ratio(sum(self.conveyor), sum(self.stopping))

    @property
    def ratio_p50(self) -> float:
        return ratio(percentile(self.conveyor, 50), percentile(self.floor, 50))

    @property
    def clean(self) -> bool:
        return not (self.problems or self.survivors) and len(self.conveyor) == self.tasks


def _timed_git(cwd: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return time.perf_counter() - started


def floor_setup(clone: Path, root: Path, n: int, name: str) -> list[tuple[Path, str]]:
    """n worktrees, each with one commit on a branch pushed to the remote."""
    made = []
    for k in range(1, n + 1):
        path, branch = root / "floor-worktrees" / f"{name}-{k}", f"conveyor/{name}-{k}"
        git(clone, "worktree", "add", "-q", "-b", branch, str(path), "main")
        (path / "work.txt").write_text(f"floor {k}\n")
        git(path, "add", "work.txt")
        git(path, "commit", "-q", "-m", "floor work")
        git(clone, "push", "-q", "origin", branch)
        made.append((path, branch))
    return made


def floor_reset(clone: Path, path: Path, branch: str, result: ResetResult) -> None:
    removed = _timed_git(clone, "worktree", "remove", "--force", str(path))
    pushed = _timed_git(clone, "push", "-q", "origin", "--delete", branch)
    result.floor_remove.append(removed)
    result.floor_push.append(pushed)
    result.floor.append(removed + pushed)


def guarded_git(clone: Path, path: Path, branch: str) -> tuple[float, float]:
    """The floor with the checks conveyor's git port makes, as plain git commands: list
    worktrees, remove, prune, delete the local branch; read the remote head, delete.
    Seconds for the local part and for the remote part."""
    local = sum(
        (
            _timed_git(clone, "worktree", "list", "--porcelain"),
            _timed_git(clone, "worktree", "remove", "--force", str(path)),
            _timed_git(clone, "worktree", "prune"),
            _timed_git(clone, "branch", "-D", branch),
        )
    )
    remote = sum(
        (
            _timed_git(clone, "ls-remote", "--heads", "origin", f"refs/heads/{branch}"),
            _timed_git(clone, "push", "-q", "origin", "--delete", branch),
        )
    )
    return local, remote


def guarded_reset(clone: Path, path: Path, branch: str, result: ResetResult) -> None:
    local, remote = guarded_git(clone, path, branch)
    result.guarded_worktree.append(local)
    result.guarded_remote.append(remote)
    result.guarded.append(local + remote)


def stopping_reset(
    clone: Path, path: Path, branch: str, agent: AgentProcess, result: ResetResult
) -> None:
    """The guarded floor after stopping a live agent."""
    stopped = stop_agent(agent)
    local, remote = guarded_git(clone, path, branch)
    result.agent_stop.append(stopped)
    result.stopping.append(stopped + local + remote)


def floor_agent(command: str, root: Path, k: int, token: str) -> AgentProcess:
    """The cooperative agent conveyor's tasks run, spawned as conveyor spawns agents (its
    own session, marked with the run token) and running once it has written `started`."""
    docs = root / "floor-agents" / str(k)
    env = child_env(token, CONVEYOR_TASK_KEY=f"FLOOR-{2 * k}", CONVEYOR_DOCS_DIR=str(docs))
    agent = spawn_agent(command, cwd=root, env=env, log_path=root / "floor-logs" / f"{k}.log")
    deadline = time.monotonic() + 30
    while not (docs / "started").exists():
        if time.monotonic() > deadline or agent.poll() is not None:
            raise RuntimeError(f"floor agent {k} did not start")
        time.sleep(0.01)
    return agent


def stop_agent(agent: AgentProcess) -> float:
    """SIGTERM to the agent's group, reap it, and see the group empty: the floor of
    conveyor's `processes` step (which also reads the job, records the stop, and polls)."""
    started = time.perf_counter()
    os.killpg(agent.ref.pgid, signal.SIGTERM)
    agent.popen.wait(30)
    while True:
        try:
            os.killpg(agent.ref.pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.001)
    return time.perf_counter() - started


def conveyor_reset(
    client: httpx.Client, reader: StoreReader, running: Running, result: ResetResult
) -> None:
    """STOP one task and wait for its stop record to close."""
    body, headers = stop_body(running.ticket)
    sent = time.time()
    answer = client.post("/webhooks/plane", content=body, headers=headers)
    if answer.status_code != 202 or answer.json().get("outcome") != "stop_requested":
        result.problems.append(
            f"STOP {task_key(running.ticket)}: {answer.status_code} {answer.text}"
        )
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = reader.tasks([running.task_id])[running.task_id]
        if state.stop_closed_at is not None:
            result.conveyor.append(state.stop_closed_at - sent)
            if state.outcome != "cancelled_graceful":
                result.problems.append(f"{task_key(running.ticket)}: outcome {state.outcome}")
            return
        time.sleep(0.005)
    result.problems.append(f"{task_key(running.ticket)}: reset not closed in 60 s")


def step_times(states: Sequence[TaskState]) -> dict[str, list[float]]:
    """Seconds each reset step took, from the stop records: every step is stored with the
    time it finished (`at`, the server's clock, like `requested_at`), so each counts from
    the one before it in the reset's order, `processes` from the request."""
    steps: dict[str, list[float]] = defaultdict(list)
    for state in states:
        if state.steps is None or state.stop_requested_at is None:
            continue
        recorded = json.loads(state.steps)
        at = {n: float(r["at"]) for n, r in recorded.items() if isinstance(r, dict) and "at" in r}
        before = state.stop_requested_at
        for name in RESET_STEP_ORDER:
            if name in at:
                steps[name].append(at[name] - before)
                before = at[name]
        if "pull_request" in at and "remote_branch" in at:  # both git steps, side by side
            steps[GIT_STEPS].append(at["remote_branch"] - at["pull_request"])
    return steps


def check_git(clone: Path, bare: Path, result: ResetResult) -> None:
    left = git(bare, "for-each-ref", "--format=%(refname:short)", "refs/heads/conveyor/")
    if left:
        result.problems.append(f"remote branches left: {left.split()[:5]}")
    trees = [
        line
        for line in git(clone, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]
    if len(trees) != 1:
        result.problems.append(f"{len(trees) - 1} worktrees left")


def run(*, tasks: int = 10, keep: bool = False) -> ResetResult:
    """Set up both sides, then alternate floor and conveyor resets task by task."""
    token = new_token()
    result = ResetResult(tasks)
    tickets = [2 * k for k in range(1, tasks + 1)]  # even: cooperative agents
    with workspace("reset", keep) as root:
        clone, bare = make_repo(root)
        commands = write_agents(root / "agents")
        doc = settings_doc(
            root,
            clone,
            free_port(),
            agents={
                "analysis": commands["commit"],
                "implementation": commands["mixed"],
                "review": commands["commit"],
            },
            workers={"concurrency": min(64, max(2, tasks))},
            log_format="json",
        )
        server = conveyor_server(root, doc, token)
        reader = StoreReader(root / "conveyor.db")
        agents: list[AgentProcess] = []
        try:
            server.start()
            with httpx.Client(base_url=server.url, timeout=30) as client:
                start_tickets(client, tickets)
                running = wait_running(
                    client, root / "data", tickets, "implementation", timeout=180
                )
                floors = floor_setup(clone, root, tasks, "FLOOR")
                guards = floor_setup(clone, root, tasks, "GUARD")
                stopping = floor_setup(clone, root, tasks, "STOPPING")
                agents.extend(
                    floor_agent(commands["mixed"], root, k, token) for k in range(1, tasks + 1)
                )
                for (path, branch), guard, (spath, sbranch), agent, task in zip(
                    floors, guards, stopping, agents, running, strict=True
                ):
                    floor_reset(clone, path, branch, result)
                    guarded_reset(clone, *guard, result)
                    stopping_reset(clone, spath, sbranch, agent, result)
                    conveyor_reset(client, reader, task, result)
                for task in running:
                    detail = client.get(f"/tasks/{task.task_id}").json()["task"]
                    if not detail.get("tombstoned"):
                        result.problems.append(f"{task_key(task.ticket)} not tombstoned")
                states = reader.tasks(t.task_id for t in running)
                result.steps.update(step_times(list(states.values())))
        finally:
            for agent in agents:  # the floor's own agents, if a run broke off early
                if agent.poll() is None:
                    os.killpg(agent.ref.pgid, signal.SIGKILL)
                    agent.popen.wait(10)
            reader.close()
            server.stop()
            result.survivors = kill_survivors(token) if survivors(token) else []
        check_git(clone, bare, result)
    return result


def render(result: ResetResult) -> str:
    f, c = summarize(result.floor), summarize(result.conveyor)
    rows = [
        ["floor: worktree remove --force", *_ms(result.floor_remove)],
        ["floor: push --delete", *_ms(result.floor_push)],
        ["floor: both", *_ms(result.floor)],
        ["guarded floor: + list, prune, branch -D, ls-remote", *_ms(result.guarded)],
        ["agent floor: SIGTERM the group, reap, see it empty", *_ms(result.agent_stop)],
        ["stopping floor: agent floor + guarded floor", *_ms(result.stopping)],
        ["conveyor: STOP sent -> reset closed", *_ms(result.conveyor)],
    ]
    step_rows = [[name, *_ms(result.steps.get(name, [])), ""] for name in STEPS]
    step_rows[STEPS.index("processes")][-1] = "agent floor " + _ms(result.agent_stop)[1]
    step_rows[STEPS.index("worktree")][-1] = (
        "guarded: list+remove+prune+branch -D " + _ms(result.guarded_worktree)[1]
    )
    step_rows[STEPS.index("remote_branch")][-1] = (
        "guarded: ls-remote+push --delete " + _ms(result.guarded_remote)[1]
    )
    step_rows.append(
        [GIT_STEPS, *_ms(result.steps.get(GIT_STEPS, [])), "guarded: all " + _ms(result.guarded)[1]]
    )
    return "\n".join(
        [
            f"reset cost: {result.tasks} tasks, each with a pushed feature branch and a cooperative agent; "
            "resets one at a time, alternating with the floor",
            "",
            table(["measure", "n", "p50 ms", "p99 ms", "total ms"], rows),
            "",
            f"conveyor/floor: total {result.ratio_total:.2f}x, p50 {result.ratio_p50:.2f}x "
            f"(target total <= {TARGET}x: {verdict(result.ratio_total <= TARGET)}); "
            f"conveyor/guarded floor: total {result.ratio_guarded:.2f}x "
            f"(target <= {TARGET_GUARDED}x: {verdict(result.ratio_guarded <= TARGET_GUARDED)}); "
            f"conveyor/stopping floor: total {result.ratio_stopping:.2f}x "
            f"(target <= {TARGET_GUARDED}x: {verdict(result.ratio_stopping <= TARGET_GUARDED)}); "
            f"floor p50 {f.ms('p50')} ms, conveyor p50 {c.ms('p50')} ms",
            "",
            "conveyor reset steps (each from the one before, by the times the stop record stores; "
            "'processes' counts from the stop's request; worktree and remote_branch run side by "
            "side and finish together: see the combined row), beside the guarded floor's p50 ms",
            table(["step", "n", "p50 ms", "p99 ms", "total ms", "floor p50 ms"], step_rows),
            "",
            f"problems: {len(result.problems)}; survivors: {len(result.survivors)}; checks: {'OK' if result.clean else 'FAILED'}",
            *[f"problem: {p}" for p in result.problems],
        ]
    )


def _ms(values: Sequence[float]) -> list[object]:
    s = summarize(values)
    return [s.n, s.ms("p50"), s.ms("p99"), f"{sum(values) * 1000:.0f}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", type=int, default=10, help="tasks reset (default 10, at most 64)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = parser.parse_args(argv)
    result = run(tasks=args.tasks, keep=args.keep)
    print(render(result))
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
