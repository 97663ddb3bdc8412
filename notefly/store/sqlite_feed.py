"""The ``InboxFeed`` port on SQLite, as a mixin of ``SqliteStore``: what the live
stream polls to learn of new inbox entries, written by any process.

SQLite has one writer at a time, so inbox ``seq`` values become visible in order: a
reader that has seen ``seq`` N never later finds a new row below N.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiosqlite

from notefly.domain import Notification, Priority
from notefly.errors import NotFound
from notefly.store.sqlite_reads import read_all

_COLUMNS = "seq, id, user_id, message_id, category_id, title, body, priority, created_at, read_at"


def _entry(row: Sequence[Any]) -> tuple[int, Notification]:
    return row[0], Notification(
        id=row[1],
        user_id=row[2],
        message_id=row[3],
        category_id=row[4],
        title=row[5],
        body=row[6],
        priority=Priority(row[7]),
        created_at=datetime.fromisoformat(row[8]),
        read_at=datetime.fromisoformat(row[9]) if row[9] else None,
    )


class SqliteInboxFeed:
    """Inbox reads by sequence number; needs ``_reader`` of SqliteStore."""

    _reader: aiosqlite.Connection

    async def _feed_rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return await read_all(self._reader, sql, params)

    async def inbox_head(self) -> int:
        rows = await self._feed_rows("SELECT coalesce(max(seq), 0) FROM inbox", ())
        head: int = rows[0][0]
        return head

    async def inbox_news(self, after_seq: int, limit: int) -> tuple[int, set[str], bool]:
        rows = await self._feed_rows(
            "SELECT seq, user_id FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        if not rows:
            return after_seq, set(), False
        return rows[-1][0], {row[1] for row in rows}, len(rows) == limit

    async def inbox_after(
        self, user_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, Notification]]:
        rows = await self._feed_rows(
            f"SELECT {_COLUMNS} FROM inbox WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (user_id, after_seq, limit),
        )
        return [_entry(row) for row in rows]

    async def inbox_seq(self, user_id: str, notification_id: str) -> int:
        rows = await self._feed_rows(
            "SELECT seq FROM inbox WHERE id = ? AND user_id = ?", (notification_id, user_id)
        )
        if not rows:
            raise NotFound(f"no notification {notification_id!r}", code="notification_not_found")
        seq: int = rows[0][0]
        return seq
