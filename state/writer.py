"""SQLite's one writer, committing in groups.

SQLite lets one connection write at a time, so every async write goes to one thread of
ours instead of a crowd of threads sleeping in SQLite's busy back-off. That thread
commits in groups: the writes that queued while a transaction was open share the next
one, each inside its own SAVEPOINT, and every caller is answered only once the group's
COMMIT has returned. A write that fails rolls back to its savepoint and raises to its
own caller alone; the others in the group are unaffected. A database error (not a
constraint refusal) may have ended the whole transaction in SQLite (a full disk, an I/O
error roll it back), so it stops the group instead: the group is rolled back and each of
its writes run again on its own, as when the COMMIT itself fails. Either way every
caller gets the answer a transaction of its own would have given, and nothing is kept
twice.

Durability is what one transaction per write gave: in WAL mode with
`synchronous=NORMAL` a COMMIT has reached the operating system's page cache when it
returns (it survives a kill -9 of the server, which is what the intake's 202 promises),
and the WAL is synced at checkpoints; a power loss can drop the last commits. What is
lost that way is found again by reconciliation (trackers with API credentials): its
watermark is in the same database, so it rolls back with them and the next pass reads
those tickets' changes again, STOPs and starts alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from state.savepoints import savepoint

log = logging.getLogger(__name__)

MAX_GROUP = 64  # writes per COMMIT at most, so that a burst is answered in slices


@dataclass
class _Write:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: Future[Any] = field(default_factory=Future)
    # Set by `submit_async`: the event loop's future, settled from `future`.
    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]] | None = None


class _GroupBroken(Exception):
    """A write hit a database error: the group's transaction cannot be trusted."""


class GroupWriter:
    """One thread that runs writes, several to a transaction when they queue. `begin`
    opens a write transaction; `write(fn, *args, **kwargs)` runs one write alone in its
    own (the store's, with its retries)."""

    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[Connection]],
        write: Callable[..., Any],
        max_group: int = MAX_GROUP,
    ) -> None:
        self._begin, self._write = begin, write
        self._max_group = max_group
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name="conveyor-sqlite-writer", daemon=True
        )
        self._closed = False
        self._lock = threading.Lock()  # no write is queued behind the shutdown sentinel
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue `fn(conn, *args, **kwargs)`; the future resolves once it is committed."""
        write = _Write(fn, args, kwargs)
        self._put(write)
        return write.future

    def submit_async(
        self, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        """`submit` from a running event loop, answered on it: the writes of a group that
        came from one loop are settled there in one call once their COMMIT has returned
        (one wake-up of the loop per group, not one per write). Cancelling the returned
        future before the write has started drops the write, as for `submit`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        write = _Write(fn, args, kwargs, waiter=(loop, waiter))
        waiter.add_done_callback(lambda w: write.future.cancel() if w.cancelled() else None)
        self._put(write)
        return waiter

    def _put(self, write: _Write) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the store's writer is shut down")
            self._queue.put(write)

    def shutdown(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, last = [first], False
            while len(group) < self._max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    last = True
                    break
                group.append(more)
            live = [w for w in group if w.future.set_running_or_notify_cancel()]
            if len(live) == 1:
                self._alone(live[0])
            elif live:
                self._together(live)
            _wake(live)
            if last:
                return

    def _alone(self, write: _Write) -> None:
        try:
            value = self._write(write.fn, *write.args, **write.kwargs)
        except BaseException as exc:  # handed to the caller, whatever it is
            write.future.set_exception(exc)
        else:
            write.future.set_result(value)

    def _together(self, group: list[_Write]) -> None:
        answers: list[tuple[Any, BaseException | None]] = []
        try:
            with self._begin() as conn:
                for write in group:
                    answers.append(_in_savepoint(conn, write))
        except BaseException as exc:  # BEGIN, a write's database error or COMMIT: none kept
            cause = exc.__cause__ if isinstance(exc, _GroupBroken) else exc
            log.warning(
                "a group commit failed; running its writes one by one",
                extra={"writes": len(group), "error": type(cause).__name__},
            )
            for write in group:
                self._alone(write)
            return
        for write, (value, error) in zip(group, answers, strict=True):
            if error is not None:
                write.future.set_exception(error)
            else:
                write.future.set_result(value)


def _wake(group: list[_Write]) -> None:
    """Hand each settled write of the group to its event loop: one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Write]] = defaultdict(list)
    for write in group:
        if write.waiter is not None:
            by_loop[write.waiter[0]].append(write)
    for loop, writes in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, writes)


def _settle(writes: list[_Write]) -> None:
    """On the loop: copy each write's outcome to the future its caller awaits."""
    for write in writes:
        assert write.waiter is not None
        waiter = write.waiter[1]
        if waiter.done():  # cancelled by its caller meanwhile
            continue
        error = write.future.exception()
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(write.future.result())


def _in_savepoint(conn: Connection, write: _Write) -> tuple[Any, BaseException | None]:
    """`write` in a savepoint of the group's transaction: its value, or its error with
    its own writes rolled back; a database error breaks the group (`_GroupBroken`)."""
    try:
        with savepoint(conn):
            return write.fn(conn, *write.args, **write.kwargs), None
    except IntegrityError as exc:  # one statement refused; the transaction goes on
        return None, exc
    except DBAPIError as exc:
        raise _GroupBroken() from exc
    except Exception as exc:  # the write's own error (a stale version, a refusal)
        return None, exc
