"""Group commit for the single SQLite writer connection.

A commit per request caps out at a few thousand transactions a second; one
transaction for everything that is waiting reaches far more. Callers hand the writer
an operation and get its result back once the transaction holding it has committed,
so "accepted" always means "durable".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite
import structlog

from notefly.errors import StoreUnavailable

T = TypeVar("T")
Operation = Callable[[aiosqlite.Connection], Awaitable[Any]]

log = structlog.get_logger("notefly.store")


class GroupCommitWriter:
    def __init__(self, conn: aiosqlite.Connection, *, max_batch: int = 256) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Operation, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.operations = 0

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
        if self._task is None:
            raise StoreUnavailable("the store is not open (starting or shutting down)")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        # Each operation runs under its own savepoint: one that fails is rolled back
        # alone and gets its exception; the others still commit together.
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            for op, future in batch:
                await self._conn.execute("SAVEPOINT op")
                try:
                    result = await op(self._conn)
                except Exception as exc:
                    await self._conn.execute("ROLLBACK TO op")
                    await self._conn.execute("RELEASE op")
                    results.append((future, None, exc))
                else:
                    await self._conn.execute("RELEASE op")
                    results.append((future, result, None))
            await self._conn.execute("COMMIT")
        except Exception as exc:
            log.error("store.commit_failed", error=repr(exc), operations=len(batch))
            with contextlib.suppress(Exception):  # the transaction may already be gone
                await self._conn.execute("ROLLBACK")
            for _op, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.operations += len(batch)
        for future, result, error in results:
            if future.done():  # the caller went away (cancelled); the work is committed
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
