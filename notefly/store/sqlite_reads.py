"""The ways to read from the shared SQLite reader connection."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import aiosqlite

from notefly.errors import StoreUnavailable

T = TypeVar("T")


async def read_all(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Run a query and fetch every row in one step on the connection's thread.

    Concurrent requests share the reader connection. A read that executes and fetches
    later leaves its statement open in between; another request's statement then joins
    the same read transaction, and the connection keeps seeing that old snapshot (a user
    who was just registered is not found). One step per read never leaves one open.
    """
    with unavailable_when_failing():
        return list(await conn.execute_fetchall(sql, params))


async def read_on(conn: aiosqlite.Connection, read: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``read`` with the connection's own ``sqlite3`` connection, on its thread, in
    one step (as ``read_all``): for reads of several statements from one snapshot, or
    that build their results as they go."""
    with unavailable_when_failing():
        raw = conn._conn  # the thread below is the only one that uses it
        return cast(T, await conn._execute(read, raw))  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def one_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Inside ``read_on``: the statements inside read one snapshot of the file (a
    transaction), not one each."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


@contextlib.contextmanager
def unavailable_when_failing() -> Iterator[None]:
    """A read that fails because of the database, or its closed connection, raises
    ``StoreUnavailable``."""
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked for too long, disk I/O, ...
        raise StoreUnavailable(f"the database cannot be read: {exc}") from exc
    except ValueError as exc:  # aiosqlite's answers once the connection is closed
        if not any(why in str(exc) for why in ("closed", "no active connection")):
            raise
        raise StoreUnavailable("the database connection is closed") from exc
