"""How long a quick CLI verb takes, wall clock from spawn to exit, beside `python -c pass`.

A real `conveyor serve` (SQLite in a temp dir, one repo, one task made by a signed Plane
start) answers; the verbs run as the installed `conveyor` script in the same directory
(they read the same conveyor.toml), round-robin with the floor so that load on the shared
machine hits both alike. Target: `--help`, `queue`, `show`, `stop` under 0.3 s.

    python bench/cli_startup.py [--repeats N] [--keep]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/cli_startup.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.common import (  # noqa: E402
    child_env,
    conveyor_server,
    free_port,
    kill_survivors,
    make_repo,
    new_token,
    plane_body,
    plane_headers,
    settings_doc,
    stamp,
    summarize,
    table,
    task_key,
    verdict,
    workspace,
)

TARGET_SECONDS = 0.3
TICKET = 7


def conveyor_script() -> list[str]:
    """The installed `conveyor` entry point beside this interpreter, else `-m`."""
    script = Path(sys.executable).with_name("conveyor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli.main"]


def commands(key: str) -> dict[str, tuple[list[str], int]]:
    """name -> (argv, the exit status it must end with)."""
    cli = conveyor_script()
    return {
        "python -c pass (floor)": ([sys.executable, "-c", "pass"], 0),
        "conveyor --help": ([*cli, "--help"], 0),
        "conveyor queue": ([*cli, "queue"], 0),
        "conveyor queue --json": ([*cli, "queue", "--json"], 0),
        f"conveyor show {key}": ([*cli, "show", key], 0),
        f"conveyor stop {key}": ([*cli, "stop", key], 0),
        "conveyor tasks": ([*cli, "tasks"], 0),
    }


TARGETED = ("conveyor --help", "conveyor queue", "conveyor show", "conveyor stop")


@dataclass
class CliResult:
    repeats: int
    times: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.failures and not self.survivors

    def p50(self, name: str) -> float:
        return summarize(self.times[name]).p50

    @property
    def floor(self) -> float:
        return self.p50("python -c pass (floor)")


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done.returncode, done.stderr.strip()


def run(*, repeats: int = 20, keep: bool = False) -> CliResult:
    token = new_token()
    result = CliResult(repeats)
    with workspace("cli", keep) as root:
        clone, _ = make_repo(root)
        doc = settings_doc(root, clone, free_port())
        server = conveyor_server(root, doc, token)
        try:
            server.start()
            body = plane_body(TICKET, "To Analyse", stamp(1))
            answer = httpx.post(
                f"{server.url}/webhooks/plane", content=body, headers=plane_headers(body)
            )
            if answer.json().get("outcome") != "started":
                result.failures.append(f"the start webhook answered {answer.text}")
            env = child_env(token)  # no CONVEYOR_*: the verbs read ./conveyor.toml, as serve
            table_of = commands(task_key(TICKET))
            result.times = {name: [] for name in table_of}
            for _ in range(repeats):
                for name, (argv, expected) in table_of.items():
                    seconds, code, err = _timed(argv, root, env)
                    result.times[name].append(seconds)
                    if code != expected:
                        result.failures.append(f"{name}: exit {code}: {err}")
        finally:
            server.stop()
            result.survivors = kill_survivors(token)
    return result


def render(result: CliResult) -> str:
    rows = []
    for name, values in result.times.items():
        s = summarize(values)
        targeted = name.startswith(TARGETED) and name != "conveyor queue --json"
        met = verdict(s.p50 < TARGET_SECONDS) if targeted else ""
        rows.append(
            [
                name,
                s.n,
                s.ms("p50"),
                s.ms("p99"),
                s.ms("max"),
                f"{(s.p50 - result.floor) * 1000:.1f}",
                met,
            ]
        )
    header = ["command", "n", "p50 ms", "p99 ms", "max ms", "p50 - floor ms", "< 300 ms"]
    lines = [
        f"CLI start-up: wall clock per call, spawn to exit, {result.repeats} rounds "
        "round-robin with the floor, against a real `conveyor serve`",
        "",
        table(header, rows),
    ]
    if result.failures:
        lines += ["", "FAILURES:", *result.failures[:20]]
    if result.survivors:
        lines += ["", f"SURVIVORS killed: {result.survivors}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    result = run(repeats=args.repeats, keep=args.keep)
    print(render(result))
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
