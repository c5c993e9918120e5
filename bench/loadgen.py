"""A small HTTP/1.1 load generator on raw asyncio streams, run in its own process so it
never shares an interpreter (or a GIL) with the server it measures.

It reads a plan (JSON lines: method, path, headers, body), renders every request to
bytes before the clock starts, and plays it against 127.0.0.1:<port> either closed-loop
(`--concurrency` keep-alive connections, each sending its next request when the last is
answered) or open-loop at a fixed `--rate` (latency counted from the moment a request
was due, so a stalled server cannot hide its queue). Bounded by the plan's length and by
`--max-seconds`. It writes one JSON document: per request its index, status, latency
and the answer's `outcome` field.

    python -m bench.loadgen --port 8080 --plan plan.jsonl --out result.json --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ERROR_SAMPLES = 5
# uvicorn closes a keep-alive connection idle for 5 s; one idle for this long is
# replaced before use, so a request never goes out on a connection being closed.
IDLE_LIMIT = 2.0


@dataclass
class Outcome:
    index: int
    status: int
    latency: float
    body: bytes


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    elapsed: float = 0.0
    connections: int = 0


class Connection:
    """One keep-alive HTTP/1.1 connection; `exchange` sends a request, returns the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.open = True
        self.last_used = time.perf_counter()

    @property
    def usable(self) -> bool:
        idle = time.perf_counter() - self.last_used
        return self.open and not self.reader.at_eof() and idle < IDLE_LIMIT

    @classmethod
    async def connect(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def exchange(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding") == b"chunked":
            body = await self._chunked()
        else:
            body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection") == b"close":
            self.close()
        self.last_used = time.perf_counter()
        return status, body

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.open = False
        self.writer.close()


def render(item: dict[str, Any], port: int) -> bytes:
    """One plan line as the bytes of an HTTP/1.1 request."""
    body = str(item.get("body", "")).encode()
    headers = {"Host": f"{HOST}:{port}", **item.get("headers", {})}
    headers["Content-Length"] = str(len(body))
    head = f"{item.get('method', 'POST')} {item['path']} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def _send(conn: Connection | None, port: int, raw: bytes) -> tuple[Connection, int, bytes]:
    if conn is None or not conn.usable:
        if conn is not None:
            conn.close()
        conn = await Connection.connect(port)
    return conn, *(await conn.exchange(raw))


async def closed_loop(
    requests: list[bytes], port: int, concurrency: int, max_seconds: float
) -> Run:
    """`concurrency` connections, each sending its next request when answered."""
    run = Run(connections=concurrency)
    conns: list[Connection | None] = [await Connection.connect(port) for _ in range(concurrency)]
    cursor = iter(range(len(requests)))
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker(slot: int) -> None:
        for index in cursor:
            if time.perf_counter() > deadline:
                return
            sent = time.perf_counter()
            try:
                conns[slot], status, body = await _send(conns[slot], port, requests[index])
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                run.errors.append((index, repr(exc)))
                conns[slot] = None
                continue
            run.outcomes.append(Outcome(index, status, time.perf_counter() - sent, body))

    await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
    run.elapsed = time.perf_counter() - start
    for conn in conns:
        if conn is not None:
            conn.close()
    return run


async def open_loop(
    requests: list[bytes], port: int, rate: float, max_seconds: float, warm: int
) -> Run:
    """One request every 1/rate seconds whatever the answers do; latency from when due."""
    run = Run()
    idle: list[Connection] = [await Connection.connect(port) for _ in range(warm)]
    run.connections = len(idle)
    start = time.perf_counter() + 0.02

    async def one(index: int, due: float) -> None:
        conn = idle.pop() if idle else None
        if conn is None:
            run.connections += 1
        try:
            conn, status, body = await _send(conn, port, requests[index])
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            run.errors.append((index, repr(exc)))
            return
        run.outcomes.append(Outcome(index, status, time.perf_counter() - due, body))
        idle.append(conn)

    pending = []
    for index in range(len(requests)):
        due = start + index / rate
        if due - start >= max_seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.ensure_future(one(index, due)))
    await asyncio.gather(*pending)
    run.elapsed = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return run


def outcome_of(body: bytes) -> str:
    """The `outcome` field of a JSON answer, or "" when there is none."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    return str(doc.get("outcome", "")) if isinstance(doc, dict) else ""


def report(run: Run) -> dict[str, Any]:
    # Answers are read only now, after the clock stopped: the generator's own cost of
    # parsing JSON stays out of the measured run.
    return {
        "elapsed": run.elapsed,
        "connections": run.connections,
        "results": [
            [o.index, o.status, o.latency, outcome_of(o.body)]
            for o in sorted(run.outcomes, key=lambda o: o.index)
        ],
        "errors": len(run.errors),
        "error_samples": run.errors[:ERROR_SAMPLES],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, help="open loop at this many requests/s")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    plan = [json.loads(line) for line in args.plan.read_text().splitlines() if line.strip()]
    requests = [render(item, args.port) for item in plan]
    if args.rate:
        run = asyncio.run(
            open_loop(requests, args.port, args.rate, args.max_seconds, args.concurrency)
        )
    else:
        run = asyncio.run(closed_loop(requests, args.port, args.concurrency, args.max_seconds))
    args.out.write_text(json.dumps(report(run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
