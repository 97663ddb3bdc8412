"""One way to read from the shared SQLite reader connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite


async def read_all(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Run a query and fetch every row in one step on the connection's thread.

    Concurrent requests share the reader connection. A read that executes and fetches
    later leaves its statement open in between; another request's statement then joins
    the same read transaction, and the connection keeps seeing that old snapshot (a user
    who was just registered is not found). One step per read never leaves one open.
    """
    return list(await conn.execute_fetchall(sql, params))
