"""One way to read from the shared SQLite reader connection."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import aiosqlite

from notefly.errors import StoreUnavailable


async def read_all(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Run a query and fetch every row in one step on the connection's thread.

    Concurrent requests share the reader connection. A read that executes and fetches
    later leaves its statement open in between; another request's statement then joins
    the same read transaction, and the connection keeps seeing that old snapshot (a user
    who was just registered is not found). One step per read never leaves one open.
    """
    with unavailable_when_failing():
        return list(await conn.execute_fetchall(sql, params))


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
