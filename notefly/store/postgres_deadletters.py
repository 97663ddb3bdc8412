"""Dead letters on PostgreSQL (``DeadLetterStore``), as a mixin of ``PostgresStore``.

The bulk redrive locks the failed deliveries it takes (``FOR UPDATE SKIP LOCKED``) and
updates only those still failed: a concurrent redrive skips the locked ones and, once
they are committed, finds them queued, so no delivery is queued twice.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

import asyncpg

from notefly.deadletters import DeliveryCursor, DeliveryFilter, ListedDelivery
from notefly.domain import DeliveryStatus, DeliveryTask
from notefly.ports import Clock
from notefly.store.postgres_ops import _TASK_COLUMNS, _task
from notefly.store.rows import DELIVERY_COLUMNS, delivery

_COLUMNS = ", ".join(f"d.{c.strip()}" for c in DELIVERY_COLUMNS.split(","))
_FROM = "FROM deliveries d JOIN messages m ON m.id = d.message_id"
_ORDER = "ORDER BY d.updated_at DESC, d.id DESC"


def matching(
    where: DeliveryFilter, after: DeliveryCursor | None, status: DeliveryStatus | None
) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters ($1...) of deliveries matching a filter, after a
    cursor. The status is a literal (an enum value), so the planner can use the partial
    index of failed deliveries whatever plan it caches for the statement."""
    conditions: list[str] = []
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if status is not None:
        conditions.append(f"d.status = '{DeliveryStatus(status).value}'")
    if where.channel is not None:
        conditions.append(f"d.channel = {param(where.channel)}")
    if where.category is not None:
        conditions.append(f"m.category_id = {param(where.category)}")
    if where.since is not None:
        conditions.append(f"d.updated_at >= {param(where.since.astimezone(UTC))}")
    if where.until is not None:
        conditions.append(f"d.updated_at < {param(where.until.astimezone(UTC))}")
    if after is not None:
        stamp, last = param(after.updated_at.astimezone(UTC)), param(after.id)
        conditions.append(f"(d.updated_at, d.id) < ({stamp}::timestamptz, {last}::text)")
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


class PostgresDeadLetters:
    """Needs ``_pool`` and ``_clock`` of PostgresStore."""

    _pool: asyncpg.Pool
    _clock: Clock

    async def find_deliveries(
        self, where: DeliveryFilter, limit: int, after: DeliveryCursor | None
    ) -> list[ListedDelivery]:
        clause, params = matching(where, after, where.status)
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS}, m.category_id {_FROM}{clause} {_ORDER} LIMIT ${len(params) + 1}",
            *params,
            limit,
        )
        return [ListedDelivery(delivery(row, _same), row[-1]) for row in rows]

    async def requeue_failed_matching(
        self, where: DeliveryFilter, owner: str | None, limit: int
    ) -> tuple[list[DeliveryTask], bool]:
        clause, params = matching(where, None, DeliveryStatus.FAILED)
        async with self._pool.acquire() as conn, conn.transaction():
            picked = await conn.fetch(
                f"SELECT d.id {_FROM}{clause} {_ORDER} LIMIT ${len(params) + 1}"
                " FOR UPDATE OF d SKIP LOCKED",
                *params,
                limit + 1,
            )
            ids = [row[0] for row in picked]
            more, ids = len(ids) > limit, ids[:limit]
            # As the redrive of one delivery, and sent on its own even if it failed
            # within a digest: a queued 'digest' delivery waits for a digest instead.
            rows = await conn.fetch(
                "WITH redriven AS (UPDATE deliveries SET status = 'queued', attempts = 0,"
                " error = NULL, not_before = NULL, mode = 'immediate', owner = $1,"
                " updated_at = $2 WHERE id = ANY($3::text[]) AND status = 'failed'"
                " RETURNING *)"
                f" SELECT {_TASK_COLUMNS} FROM redriven d JOIN messages m ON m.id = d.message_id"
                " LEFT JOIN users u ON u.id = d.user_id ORDER BY d.id",
                owner,
                self._clock.now(),
                ids,
            )
            return [_task(row) for row in rows], more


def _same(value: Any) -> Any:
    """asyncpg already returns datetimes."""
    return value


if TYPE_CHECKING:
    from notefly.deadletters import DeadLetterStore
    from notefly.store.postgres import PostgresStore

    def _implements_the_port(store: PostgresStore) -> DeadLetterStore:
        return store  # mypy checks the store against the port here
