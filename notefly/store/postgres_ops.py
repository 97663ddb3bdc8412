"""The operations read model on PostgreSQL (``OpsStore``), as a mixin of ``PostgresStore``.

Read queries, plus one write: the redrive of a failed delivery.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from notefly.domain import DeliveryTask, Message, Priority, Recipient, User
from notefly.errors import Conflict, NotFound
from notefly.operations import FailedDelivery, MessageSummary, ProviderError
from notefly.ports import Clock
from notefly.store.sqlite_rows import task_address

_TASK_COLUMNS = (
    "d.id, d.channel, d.attempts, d.user_id, u.name, u.email, u.phone, u.push_token,"
    " u.timezone, m.id, m.category_id, m.title, m.body, m.data, m.priority,"
    " m.idempotency_key, m.accepted_at, d.recipient"
)


class PostgresOpsMixin:
    """Operations queries; needs ``_pool`` and ``_clock`` of PostgresStore."""

    _pool: asyncpg.Pool
    _clock: Clock

    async def applied_migrations(self) -> list[int]:
        rows = await self._pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [row[0] for row in rows]

    async def work_counts(self) -> dict[str, int]:
        """Deliveries waiting (queued) and failed for good, over every node."""
        rows = await self._pool.fetch(
            "SELECT status, count(*) FROM deliveries WHERE status IN ('queued', 'failed')"
            " GROUP BY status"
        )
        return {"queued": 0, "failed": 0, **{row[0]: row[1] for row in rows}}

    async def recent_messages(self, limit: int) -> list[MessageSummary]:
        # Message ids sort by creation time, so the primary key gives the newest.
        messages = await self._pool.fetch(
            "SELECT id, category_id, title, body, accepted_at, fanout_done FROM messages"
            " ORDER BY id DESC LIMIT $1",
            limit,
        )
        if not messages:
            return []
        counts: dict[str, dict[str, int]] = {row[0]: {} for row in messages}
        for message_id, status, count in await self._pool.fetch(
            "SELECT message_id, status, count(*) FROM deliveries"
            " WHERE message_id = ANY($1::text[]) GROUP BY message_id, status",
            list(counts),
        ):
            counts[message_id][status] = count
        return [
            MessageSummary(
                id=row[0],
                category=row[1],
                title=row[2],
                body=row[3],
                accepted_at=row[4],
                fanout_done=row[5],
                deliveries=counts[row[0]],
            )
            for row in messages
        ]

    async def failed_deliveries(self, limit: int) -> list[FailedDelivery]:
        rows = await self._pool.fetch(
            "SELECT id, message_id, user_id, channel, provider, attempts, error, updated_at"
            " FROM deliveries WHERE status = 'failed' ORDER BY updated_at DESC, id LIMIT $1",
            limit,
        )
        return [FailedDelivery(*row) for row in rows]

    async def provider_errors(self) -> list[ProviderError]:
        """The latest error of each (channel, provider), from failed or retried attempts."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT ON (channel, provider) channel, provider, error, updated_at"
            " FROM deliveries WHERE status IN ('failed', 'queued') AND error IS NOT NULL"
            " AND provider IS NOT NULL ORDER BY channel, provider, updated_at DESC"
        )
        return [ProviderError(*row) for row in rows]

    async def requeue_failed(self, delivery_id: str, owner: str | None) -> DeliveryTask:
        """Put a failed delivery back in the queue, attempts reset, owned by ``owner``
        (the node that sends it now); return it as a task for that node's actors."""
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                # Sent on its own even if it failed within a digest: a queued 'digest'
                # delivery would wait for a digest, and no node would claim it.
                "UPDATE deliveries SET status = 'queued', attempts = 0, error = NULL,"
                " not_before = NULL, mode = 'immediate', owner = $1, updated_at = $2"
                " WHERE id = $3 AND status = 'failed'",
                owner,
                now,
                delivery_id,
            )
            if status == "UPDATE 0":
                found = await conn.fetchval(
                    "SELECT status FROM deliveries WHERE id = $1", delivery_id
                )
                if found is None:
                    raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
                raise Conflict(
                    f"delivery {delivery_id!r} is {found}, not failed: only a failed"
                    " delivery can be redriven",
                    code="delivery_not_failed",
                )
            row = await conn.fetchrow(
                f"SELECT {_TASK_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " LEFT JOIN users u ON u.id = d.user_id WHERE d.id = $1",
                delivery_id,
            )
            assert row is not None  # updated above, in this transaction
            return _task(row)


def _task(row: Any) -> DeliveryTask:
    message = Message(
        id=row[9],
        category_id=row[10],
        title=row[11],
        body=row[12],
        data=row[13],
        priority=Priority(row[14]),
        idempotency_key=row[15],
        accepted_at=row[16],
    )
    # The address as for any queued delivery: the user's current one, else the recorded.
    user = User(row[3], row[4] or "", row[5], row[6], row[7], row[8] or "UTC")
    recipient = Recipient(row[3], user.name, task_address(user, row[1], row[17]), user.timezone)
    return DeliveryTask(row[0], message, row[1], recipient, attempts=row[2])
