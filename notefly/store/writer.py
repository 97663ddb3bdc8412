"""Group commit for the single SQLite writer connection.

A commit per request caps out at a few thousand transactions a second; one
transaction for everything that is waiting reaches far more. Callers hand the writer
an operation and get its result back once the transaction holding it has committed,
so "accepted" always means "durable".

Operations come in two kinds. A *synchronous* operation (``run_sync``) takes the
plain ``sqlite3`` connection and runs on the connection's thread: a batch of them,
with its transaction and savepoints, costs one hop between the event loop and that
thread. An *asynchronous* operation (``run``) awaits the aiosqlite connection,
paying a hop per statement; it suits rare writes that are easier to write that way.
The hot paths (publishing, fan-out pages, outcomes, claims, heartbeats) are
synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar, cast

import aiosqlite
import structlog

from notefly.errors import StoreUnavailable
from notefly.store.turns import WriteTurns

T = TypeVar("T")
Operation = Callable[[aiosqlite.Connection], Awaitable[Any]]
SyncOperation = Callable[[sqlite3.Connection], Any]

log = structlog.get_logger("notefly.store")


@dataclass(slots=True)
class _Queued:
    future: asyncio.Future[Any]
    op: Operation | None = None
    sync_op: SyncOperation | None = None
    # Called with the result once committed (``run_sync``); None once it has been.
    after_commit: Callable[[Any], None] | None = None


@dataclass(slots=True)
class LockTimes:
    """Since start: seconds this process's writer waited for SQLite's write lock (its
    turn included) and held it, and its transactions. Kept by the writer's thread; a
    read from another thread may be a transaction behind."""

    waited: float = 0.0
    held: float = 0.0
    transactions: int = 0

    def transaction_over(self, locked_at: float) -> None:
        """A transaction that took the lock at ``locked_at`` (``perf_counter``) ended."""
        self.held += time.perf_counter() - locked_at
        self.transactions += 1


# What one operation of a batch came to: its result, or the exception it raised.
_Done = tuple[Any, BaseException | None]

# Waiting for another process's write lock: SQLite's own busy handler sleeps 1, 2, 5,
# 10, ... up to 100 ms between tries, so a worker that just missed the lock can wait
# far longer than the lock is held. Trying again every few hundred microseconds keeps
# two workers' group commits close behind each other.
LOCK_PAUSE_SECONDS = (0.0002, 0.002)  # the first pause, and the longest


# The GIL switch interval while a group transaction holds the write lock (the
# process's own is 5 ms). sqlite3 lets go of the GIL around each statement; the writer
# may then wait the whole interval before it can ask a busy thread of its process (a
# shard rendering, the event loop) to hand the GIL back, all while the other workers
# wait for the lock. Fan-out scenario, eight alternating pairs against the interval left alone:
# the lock held 16.0 against 17.3 us a delivery on average (less in seven pairs), the
# rate 0.84x against 0.81x of the plain loop. The interval is the whole process's, so
# it is short only while the transaction lasts: 0.1 ms all the time cost about 1 us of
# CPU a delivery (README, Performance).
TRANSACTION_SWITCH_INTERVAL = 0.0001


class SwitchInterval:
    """The process's GIL switch interval: ``TRANSACTION_SWITCH_INTERVAL`` while any of
    its writers holds a transaction open, as it was otherwise. Counted, because several
    stores may share a process (an embedding, the tests): the last writer to finish
    puts back what was there before the first began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._saved = 0.0

    def shorten(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(TRANSACTION_SWITCH_INTERVAL)
            self._holders += 1

    def restore(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                sys.setswitchinterval(self._saved)


SWITCH_INTERVAL = SwitchInterval()

# Rows a statement of ``write_rows`` writes: as many statements of this size as the
# batch fills, then one of whole hundreds and one of the rest. Few statements a batch
# (each lets go of the GIL, see ``write_rows``), and few distinct statement texts to
# keep compiled per call site: 5 + 99 (the connections' statement cache has room).
ROWS_PER_STATEMENT = 500


def statement_sizes(rows: int) -> list[int]:
    """How ``write_rows`` splits ``rows`` rows into statements."""
    full, rest = divmod(rows, ROWS_PER_STATEMENT)
    sizes = [ROWS_PER_STATEMENT] * full
    sizes += [size for size in (rest - rest % 100, rest % 100) if size]
    return sizes


def write_rows(
    conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = ""
) -> None:
    """Run ``{head} VALUES (…), (…), … {tail}`` for ``rows``, many rows a statement.

    ``executemany`` steps once per row, and sqlite3 lets go of the GIL around every
    step. On the writer thread, under load, each step then waits to get the GIL back
    from the shards and the event loop, all while this process holds SQLite's write
    lock and other processes wait for it. One step for many rows waits once.
    """
    if not rows:
        return
    one = "(" + ", ".join(["?"] * len(rows[0])) + ")"
    first = 0
    for size in statement_sizes(len(rows)):
        chunk = rows[first : first + size]
        first += size
        sql = f"{head} VALUES {', '.join([one] * size)}{tail}"
        conn.execute(sql, list(chain.from_iterable(chunk)))  # half a list comprehension's time


def begin_immediate(conn: sqlite3.Connection, timeout: float) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock at most ``timeout`` seconds, in
    short steps. The connection's own ``busy_timeout`` stays 0: SQLite's handler would
    sleep far longer between tries, and reading and setting it around each transaction
    cost three statements, each a chance to wait for the GIL (see ``write_rows``)."""
    deadline = time.monotonic() + timeout
    pause, longest = LOCK_PAUSE_SECONDS
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, longest)


def in_savepoint(
    conn: sqlite3.Connection, op: SyncOperation, name: str = "op"
) -> tuple[Any, Exception | None]:
    """Run ``op`` under a savepoint of the transaction: if it raises, its changes are
    undone alone and the rest of the transaction goes on. Returns (result, error)."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        result = op(conn)
    except Exception as exc:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        return None, exc
    conn.execute(f"RELEASE {name}")
    return result, None


def _run_segment(
    conn: sqlite3.Connection,
    ops: list[SyncOperation],
    *,
    begin: bool,
    commit: bool,
    lock_timeout: float,
    max_changes: int | None = None,
    turns: WriteTurns | None = None,
    times: LockTimes | None = None,
) -> list[_Done]:
    """Run synchronous operations, each under its own savepoint, on the writer thread.

    ``begin``/``commit``: open or close the group transaction in the same hop. When
    the commit fails, the transaction is rolled back and the error propagates.
    ``lock_timeout``: how long ``begin`` waits for another process's write lock.
    ``max_changes``: once the operations run so far changed that many rows, the rest
    are left for the next transaction (the result has fewer entries than ``ops``).
    ``turns``: with ``begin`` and ``commit``, the transaction waits for this process's
    turn first, and gives it back once it is over. ``times``: where the wait for the
    lock (with ``begin``) and the time it was held (with ``begin`` and ``commit``) add
    up.
    """
    started = time.perf_counter()
    held = turns if begin and commit else None
    if held is not None:
        deadline = time.monotonic() + lock_timeout
        if not held.take(lock_timeout):
            held = None
        lock_timeout = max(deadline - time.monotonic(), 0.0)
    try:
        return _run_transaction(conn, ops, begin, commit, lock_timeout, max_changes, times, started)
    finally:
        if held is not None:
            held.give_back()


def _run_transaction(
    conn: sqlite3.Connection,
    ops: list[SyncOperation],
    begin: bool,
    commit: bool,
    lock_timeout: float,
    max_changes: int | None,
    times: LockTimes | None = None,
    started: float = 0.0,
) -> list[_Done]:
    locked = 0.0  # when this call took the lock (with ``begin``)
    # Only a transaction begun and committed in this call: one over several hops
    # (``GroupCommitWriter._mixed``) would leave the interval short between them.
    shortened = False
    if begin:
        begin_immediate(conn, lock_timeout)
        if commit:
            SWITCH_INTERVAL.shorten()
            shortened = True
        locked = time.perf_counter()
        if times is not None:
            times.waited += locked - started
    done: list[_Done] = []
    start = conn.total_changes
    try:
        for op in ops:
            if max_changes is not None and done and conn.total_changes - start >= max_changes:
                break
            done.append(in_savepoint(conn, op))
        if commit:
            conn.execute("COMMIT")
    except BaseException:
        if commit or begin:
            with contextlib.suppress(sqlite3.Error):  # the transaction may already be gone
                conn.execute("ROLLBACK")
        raise
    finally:
        if shortened:
            SWITCH_INTERVAL.restore()
        if times is not None and begin and commit:
            times.transaction_over(locked)
    return done


class GroupCommitWriter:
    """``max_batch``: operations per transaction. ``max_changes``: rows a transaction of
    synchronous operations changes before it commits and leaves the rest of its batch
    to the next one. It keeps a transaction short (tens of milliseconds) when big
    writes pile up, so that other processes on the same file (workers, and their
    heartbeats) get the write lock in between instead of waiting behind one huge
    commit. ``turns``: the processes' turns at the write lock (``WriteTurns``), taken
    by every transaction of synchronous operations only; the rare one with
    asynchronous operations spans several hops and waits for the lock as before."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        lock_timeout: float,
        max_batch: int = 256,
        max_changes: int = 4000,
        turns: WriteTurns | None = None,
    ) -> None:
        self._conn = conn
        self._lock_timeout = lock_timeout
        self._turns = turns
        self._max_batch = max_batch
        self._max_changes = max_changes
        # (0 for operations that go first, 1 for the rest; then the order they came in)
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Queued]] = asyncio.PriorityQueue()
        self._arrivals = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.operations = 0
        self.lock_times = LockTimes()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sqlite-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def run(self, op: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``op`` inside the next group transaction and return its result after commit."""
        return cast(T, await self._submit(_Queued(self._future(), op=op)))

    async def run_sync(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        first: bool = False,
        after_commit: Callable[[T], None] | None = None,
    ) -> T:
        """Like ``run``, for an operation that runs on the writer thread itself.

        ``op`` must not touch the event loop: it runs on the connection's thread,
        together with the other synchronous operations of its batch. ``first``: it
        goes into the next transaction ahead of everything queued without it (a
        publish, which a caller waits for, ahead of fan-out pages and outcomes).
        ``after_commit``: called with the result as soon as it is committed, before
        the caller resumes, and usually on the writer thread (so it must not touch the
        event loop either): what follows a commit need not wait its turn on a busy
        loop. If it raises, the caller gets that error, and the work stays committed.
        """
        item = _Queued(self._future(), sync_op=op, after_commit=after_commit)
        return cast(T, await self._submit(item, first=first))

    def _future(self) -> asyncio.Future[Any]:
        if self._task is None:
            raise StoreUnavailable("the store is not open (starting or shutting down)")
        return asyncio.get_running_loop().create_future()

    async def _submit(self, item: _Queued, *, first: bool = False) -> Any:
        self._queue.put_nowait((0 if first else 1, next(self._arrivals), item))
        return await item.future

    async def _run(self) -> None:
        left: list[_Queued] = []  # taken from the queue, not run yet: they go next
        while True:
            batch = left or [(await self._queue.get())[2]]
            # What is queued joins the batch; operations that go first go ahead of
            # those a full transaction left over, so they are not left over again.
            firsts: list[_Queued] = []
            while len(batch) + len(firsts) < self._max_batch and not self._queue.empty():
                order, _arrival, item = self._queue.get_nowait()
                (firsts if order == 0 else batch).append(item)
            batch = firsts + batch
            left = []
            try:
                left = await self._commit(batch)
            finally:
                for _ in range(len(batch) - len(left)):
                    self._queue.task_done()

    async def _commit(self, batch: list[_Queued]) -> list[_Queued]:
        """Commit what the batch's transaction took of it; returns what it left."""
        # Each operation runs under its own savepoint: one that fails is rolled back
        # alone and gets its exception; the others still commit together.
        try:
            if all(item.sync_op is not None for item in batch):
                done = await self._segment(
                    batch, begin=True, commit=True, max_changes=self._max_changes
                )
            else:
                done = await self._mixed(batch)
        except Exception as exc:
            log.error("store.commit_failed", error=repr(exc), operations=len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return []
        self.batches += 1
        self.operations += len(done)
        done = _after_commit(batch, done)  # those a mixed batch committed on the loop
        for item, (result, error) in zip(batch, done, strict=False):
            if item.future.done():  # the caller went away (cancelled); the work is committed
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)
        return batch[len(done) :]

    async def _segment(
        self,
        items: list[_Queued],
        *,
        begin: bool,
        commit: bool,
        max_changes: int | None = None,
    ) -> list[_Done]:
        ops = [cast(SyncOperation, item.sync_op) for item in items]
        raw = self._conn._conn  # the thread below is the only one that uses it

        def call() -> list[_Done]:
            done = _run_segment(
                raw,
                ops,
                begin=begin,
                commit=commit,
                max_changes=max_changes,
                lock_timeout=self._lock_timeout,
                turns=self._turns,
                times=self.lock_times,
            )
            return _after_commit(items, done) if commit else done

        return cast(list[_Done], await self._conn._execute(call))  # type: ignore[no-untyped-call]

    async def _mixed(self, batch: list[_Queued]) -> list[_Done]:
        """A batch with asynchronous operations: runs of synchronous ones still share
        a hop each."""
        conn = self._conn
        done: list[_Done] = []
        locked: float | None = None  # when the lock was taken
        try:
            await self._segment([], begin=True, commit=False)
            locked = time.perf_counter()
            run: list[_Queued] = []
            for item in [*batch, None]:
                if item is not None and item.sync_op is not None:
                    run.append(item)
                    continue
                if run:
                    done += await self._segment(run, begin=False, commit=False)
                    run = []
                if item is None:
                    break
                assert item.op is not None
                await conn.execute("SAVEPOINT op")
                try:
                    result = await item.op(conn)
                except Exception as exc:
                    await conn.execute("ROLLBACK TO op")
                    await conn.execute("RELEASE op")
                    done.append((None, exc))
                else:
                    await conn.execute("RELEASE op")
                    done.append((result, None))
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):  # the transaction may already be gone
                await conn.execute("ROLLBACK")
            raise
        finally:
            if locked is not None:
                self.lock_times.transaction_over(locked)
        return done


def _after_commit(items: list[_Queued], done: list[_Done]) -> list[_Done]:
    """Run the ``after_commit`` of each committed operation that succeeded; one that
    raises becomes the operation's error."""
    if not any(item.after_commit is not None for item in items):
        return done
    out = list(done)
    for n, (item, (result, error)) in enumerate(zip(items, done, strict=False)):
        after, item.after_commit = item.after_commit, None
        if after is None or error is not None:
            continue
        try:
            after(result)
        except Exception as exc:
            log.exception("store.after_commit_failed")
            out[n] = (None, exc)
    return out


Row = tuple[Any, ...]


class _Shared:
    """Rows waiting for one operation of the writer, queued as soon as it is made."""

    __slots__ = ("done", "lock", "rows", "taken", "write")

    def __init__(
        self,
        writer: GroupCommitWriter,
        write: Callable[[sqlite3.Connection, list[Row]], None],
        rows: list[Row],
    ) -> None:
        self.lock = threading.Lock()
        self.rows = rows
        self.taken = False
        self.write = write
        self.done = asyncio.ensure_future(writer.run_sync(self._op))

    def join(self, rows: Sequence[Row], max_rows: int) -> bool:
        with self.lock:  # the writer thread may be taking them right now
            if self.taken or len(self.rows) + len(rows) > max_rows:
                return False
            self.rows.extend(rows)
            return True

    def _op(self, conn: sqlite3.Connection) -> None:
        with self.lock:
            self.taken = True
            rows, self.rows = self.rows, []  # not kept once written
        self.write(conn, rows)


class SharedWrite:
    """Rows from many callers, written by one operation of the writer.

    A call whose rows find an operation still waiting for the writer adds them to it
    and waits for that one; otherwise it queues a new one. Under load, the outcomes of
    every shard's rounds then go in a few statements per transaction rather than a
    savepoint and statements each: each statement lets go of the GIL and waits to get
    it back while this process holds the write lock (see ``write_rows``).

    ``write(conn, rows)`` gets the rows in the order they were added. An error fails
    every call that shared the operation, and each may try again.
    """

    def __init__(
        self,
        writer: GroupCommitWriter,
        write: Callable[[sqlite3.Connection, list[Row]], None],
        *,
        max_rows: int = 4000,
    ) -> None:
        self._writer = writer
        self._write = write
        self._max_rows = max_rows
        self._waiting: _Shared | None = None

    async def add(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        shared = self._waiting
        if shared is None or not shared.join(rows, self._max_rows):
            shared = self._waiting = _Shared(self._writer, self._write, list(rows))
        # One caller cancelled (a shard stopping) must not cancel the others' write.
        await asyncio.shield(shared.done)
