"""The ``InboxFeed`` port on PostgreSQL, as a mixin of ``PostgresStore``: what the live
stream polls to learn of new inbox entries, written by any node.

A reader that has seen ``seq`` N must never later find a new row below N. PostgreSQL
hands out sequence numbers before commit, so concurrent transactions could commit
them out of order; the fan-out therefore writes inbox rows under a transaction-level
advisory lock (``INBOX_LOCK``), taken as its last step, which makes the numbers
become visible in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from notefly.domain import Notification, Priority
from notefly.errors import NotFound

# pg_advisory_xact_lock key of inbox writes: "ntf-inbx" in ASCII.
INBOX_LOCK = 0x6E74662D696E6278

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
        created_at=row[8],
        read_at=row[9],
    )


class PostgresInboxFeed:
    """Inbox reads by sequence number; needs ``_pool`` of PostgresStore."""

    _pool: asyncpg.Pool

    async def inbox_head(self) -> int:
        head: int = await self._pool.fetchval("SELECT coalesce(max(seq), 0) FROM inbox")
        return head

    async def inbox_news(self, after_seq: int, limit: int) -> tuple[int, set[str], bool]:
        rows = await self._pool.fetch(
            "SELECT seq, user_id FROM inbox WHERE seq > $1 ORDER BY seq LIMIT $2",
            after_seq,
            limit,
        )
        if not rows:
            return after_seq, set(), False
        return rows[-1][0], {row[1] for row in rows}, len(rows) == limit

    async def inbox_after(
        self, user_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, Notification]]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM inbox WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            user_id,
            after_seq,
            limit,
        )
        return [_entry(row) for row in rows]

    async def inbox_seq(self, user_id: str, notification_id: str) -> int:
        seq: int | None = await self._pool.fetchval(
            "SELECT seq FROM inbox WHERE id = $1 AND user_id = $2", notification_id, user_id
        )
        if seq is None:
            raise NotFound(f"no notification {notification_id!r}", code="notification_not_found")
        return seq
