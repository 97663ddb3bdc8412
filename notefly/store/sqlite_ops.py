"""The operations read model on SQLite (``OpsStore``), as a mixin of ``SqliteStore``.

Read queries on the reader connection, plus one write through the group-commit
writer: the redrive of a failed delivery. ``SqliteStore`` is meant to inherit
``SqliteOpsMixin``; until it does, ``ops_store(store)`` gives a view of a store's
connections with these methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiosqlite

from notefly.domain import DeliveryTask
from notefly.errors import Conflict, NotFound
from notefly.operations import FailedDelivery, MessageSummary, OpsStore, ProviderError
from notefly.ports import Clock
from notefly.store.sqlite_flight import IN_FLIGHT
from notefly.store.sqlite_reads import read_all
from notefly.store.sqlite_rows import _TASK_QUERY, _tasks
from notefly.store.writer import GroupCommitWriter

_STATUSES = ("queued", "failed")  # constants: never a value from outside in the SQL


class SqliteOpsMixin:
    """Operations queries; needs ``_reader``, ``writer`` and ``_clock`` of SqliteStore."""

    _reader: aiosqlite.Connection
    writer: GroupCommitWriter
    _clock: Clock

    async def _ops_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await read_all(self._reader, sql, params)

    async def applied_migrations(self) -> list[int]:
        rows = await self._ops_all("SELECT version FROM schema_migrations ORDER BY version")
        return [row[0] for row in rows]

    async def work_counts(self) -> dict[str, int]:
        """Deliveries waiting (queued) and failed for good, over every node."""
        # One status per query, written out: SQLite uses a partial index on a status
        # only when the query names that status literally (not as a parameter).
        counts = {}
        for status in _STATUSES:
            rows = await self._ops_all(f"SELECT count(*) FROM deliveries WHERE status = '{status}'")
            counts[status] = rows[0][0]
        rows = await self._ops_all(IN_FLIGHT)  # without rows yet, and queued all the same
        counts["queued"] += rows[0][0]
        return counts

    async def recent_messages(self, limit: int) -> list[MessageSummary]:
        # Message ids sort by creation time, so the primary key gives the newest.
        messages = await self._ops_all(
            "SELECT id, category_id, title, body, accepted_at, fanout_done FROM messages"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        if not messages:
            return []
        marks = ", ".join("?" * len(messages))
        counts: dict[str, dict[str, int]] = {row[0]: {} for row in messages}
        ids = [row[0] for row in messages]
        for message_id, status, count in await self._ops_all(
            f"SELECT message_id, status, count(*) FROM deliveries WHERE message_id IN ({marks})"
            " GROUP BY message_id, status UNION ALL SELECT message_id, 'queued', sum(pending)"
            f" FROM fanout_pages WHERE message_id IN ({marks}) GROUP BY message_id",
            ids + ids,
        ):
            counts[message_id][status] = counts[message_id].get(status, 0) + count
        return [
            MessageSummary(
                id=row[0],
                category=row[1],
                title=row[2],
                body=row[3],
                accepted_at=datetime.fromisoformat(row[4]),
                fanout_done=bool(row[5]),
                deliveries=counts[row[0]],
            )
            for row in messages
        ]

    async def failed_deliveries(self, limit: int) -> list[FailedDelivery]:
        rows = await self._ops_all(
            "SELECT id, message_id, user_id, channel, provider, attempts, error, updated_at"
            " FROM deliveries WHERE status = 'failed' ORDER BY updated_at DESC, id LIMIT ?",
            (limit,),
        )
        return [
            FailedDelivery(
                id=row[0],
                message_id=row[1],
                user=row[2],
                channel=row[3],
                provider=row[4],
                attempts=row[5],
                error=row[6],
                failed_at=datetime.fromisoformat(row[7]),
            )
            for row in rows
        ]

    async def provider_errors(self) -> list[ProviderError]:
        """The latest error of each (channel, provider), from failed or retried attempts."""
        latest: dict[tuple[str, str], ProviderError] = {}
        for status in _STATUSES:  # one status per query, as above
            # SQLite's bare columns: with max(), they come from the row of the maximum.
            rows = await self._ops_all(
                "SELECT channel, provider, error, max(updated_at) FROM deliveries"
                f" WHERE status = '{status}' AND error IS NOT NULL AND provider IS NOT NULL"
                " GROUP BY channel, provider"
            )
            for channel, provider, error, at in rows:
                found = ProviderError(channel, provider, error, datetime.fromisoformat(at))
                known = latest.get((channel, provider))
                if known is None or known.at < found.at:
                    latest[(channel, provider)] = found
        return list(latest.values())

    async def requeue_failed(self, delivery_id: str, owner: str | None) -> DeliveryTask:
        """Put a failed delivery back in the queue, attempts reset, owned by ``owner``
        (the node that sends it now); return it as a task for that node's actors."""
        now = self._clock.now().isoformat()

        async def op(conn: aiosqlite.Connection) -> DeliveryTask:
            cursor = await conn.execute(
                # Sent on its own even if it failed within a digest: a queued 'digest'
                # delivery would wait for a digest, and no node would claim it.
                "UPDATE deliveries SET status = 'queued', attempts = 0, error = NULL,"
                " not_before = NULL, mode = 'immediate', owner = ?, updated_at = ?"
                " WHERE id = ? AND status = 'failed'",
                (owner, now, delivery_id),
            )
            if cursor.rowcount == 0:
                cursor = await conn.execute(
                    "SELECT status FROM deliveries WHERE id = ?", (delivery_id,)
                )
                row = await cursor.fetchone()
                if row is None:
                    raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
                raise Conflict(
                    f"delivery {delivery_id!r} is {row[0]}, not failed: only a failed"
                    " delivery can be redriven",
                    code="delivery_not_failed",
                )
            cursor = await conn.execute(
                f"{_TASK_QUERY} WHERE d.id = ?",
                (delivery_id,),
            )
            found = await cursor.fetchone()
            assert found is not None  # updated above, in this transaction
            return _tasks([found])[0]

        return await self.writer.run(op)


class _OpsView(SqliteOpsMixin):
    def __init__(self, store: Any) -> None:
        self._reader = store._reader
        self.writer = store.writer
        self._clock = store._clock

    async def ping(self) -> None:
        await read_all(self._reader, "SELECT 1")


def ops_store(store: object) -> OpsStore:
    """The operations read model of a store: the store itself when it has one (a store
    that inherits an ops mixin), otherwise a view on a SQLite store's connections."""
    if hasattr(store, "requeue_failed"):
        return store  # type: ignore[return-value]
    return _OpsView(store)
