"""The ``AddressBook`` port on PostgreSQL, as a mixin of ``PostgresStore``.

``registered_in_page`` serves the fan-out, inside its transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from notefly.addresses import DeliveryContext, Endpoint, EndpointKind
from notefly.domain import Message, Priority
from notefly.errors import NotFound
from notefly.ports import Clock

_COLUMNS = "id, user_id, kind, url, keys, label, created_at"
_RACES = 3  # two users registering one browser at once: the later one tries again


def _endpoint(row: Sequence[Any]) -> Endpoint:
    return Endpoint(
        id=row[0],
        user_id=row[1],
        kind=EndpointKind(row[2]),
        url=row[3],
        keys=row[4],
        label=row[5],
        created_at=row[6],
    )


def _not_found(kind: EndpointKind, endpoint_id: str) -> NotFound:
    return NotFound(f"no {kind.value} endpoint {endpoint_id!r}", code="endpoint_not_found")


class PostgresAddressBook:
    """Registered endpoints; needs ``_pool`` and ``_clock`` of PostgresStore."""

    _pool: asyncpg.Pool
    _clock: Clock

    async def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        created = endpoint.created_at or self._clock.now()
        for attempt in range(_RACES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await _add_endpoint(conn, endpoint, created)
            except asyncpg.UniqueViolationError:
                if attempt == _RACES - 1:
                    raise
        raise AssertionError("unreachable")

    async def list_endpoints(self, user_id: str, kind: EndpointKind) -> list[Endpoint]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM endpoints WHERE user_id = $1 AND kind = $2"
            " ORDER BY created_at, id",
            user_id,
            kind.value,
        )
        return [_endpoint(row) for row in rows]

    async def get_endpoint(self, user_id: str, kind: EndpointKind, endpoint_id: str) -> Endpoint:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM endpoints WHERE id = $1 AND user_id = $2 AND kind = $3",
            endpoint_id,
            user_id,
            kind.value,
        )
        if row is None:
            raise _not_found(kind, endpoint_id)
        return _endpoint(row)

    async def delete_endpoint(self, user_id: str, kind: EndpointKind, endpoint_id: str) -> None:
        status = await self._pool.execute(
            "DELETE FROM endpoints WHERE id = $1 AND user_id = $2 AND kind = $3",
            endpoint_id,
            user_id,
            kind.value,
        )
        if status == "DELETE 0":
            raise _not_found(kind, endpoint_id)

    async def forget_endpoint(self, endpoint_id: str) -> None:
        await self._pool.execute("DELETE FROM endpoints WHERE id = $1", endpoint_id)

    async def endpoint_counts(self, user_id: str) -> dict[EndpointKind, int]:
        rows = await self._pool.fetch(
            "SELECT kind, count(*) FROM endpoints WHERE user_id = $1 GROUP BY kind", user_id
        )
        return {EndpointKind(row[0]): row[1] for row in rows}

    async def delivery_context(self, delivery_id: str) -> DeliveryContext:
        row = await self._pool.fetchrow(
            "SELECT d.user_id, m.id, m.category_id, m.title, m.body, m.data, m.priority,"
            " m.idempotency_key, m.accepted_at FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id JOIN users u ON u.id = d.user_id"
            " WHERE d.id = $1",
            delivery_id,
        )
        if row is None:
            raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
        message = Message(
            id=row[1],
            category_id=row[2],
            title=row[3],
            body=row[4],
            data=row[5],
            priority=Priority(row[6]),
            idempotency_key=row[7],
            accepted_at=row[8],
        )
        return DeliveryContext(delivery_id, row[0], message)


async def _add_endpoint(conn: asyncpg.Connection, endpoint: Endpoint, created: Any) -> Endpoint:
    if endpoint.kind is EndpointKind.WEBPUSH:  # the browser changed hands
        await conn.execute(
            "DELETE FROM endpoints WHERE kind = 'webpush' AND url = $1 AND user_id != $2",
            endpoint.url,
            endpoint.user_id,
        )
    row = await conn.fetchrow(
        f"INSERT INTO endpoints ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (user_id, kind, url) DO UPDATE SET keys = excluded.keys"
        " WHERE excluded.kind = 'webpush'"  # new keys of a renewed subscription
        f" RETURNING {_COLUMNS}",
        endpoint.id,
        endpoint.user_id,
        endpoint.kind.value,
        endpoint.url,
        dict(endpoint.keys),
        endpoint.label,
        created,
    )
    if row is None:  # kept as it was
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM endpoints WHERE user_id = $1 AND kind = $2 AND url = $3",
            endpoint.user_id,
            endpoint.kind.value,
            endpoint.url,
        )
    assert row is not None  # inserted or kept just now
    return _endpoint(row)


async def registered_in_page(
    conn: asyncpg.Connection, category_id: str, after_user: str | None, last_user: str
) -> dict[str, dict[EndpointKind, int]]:
    """Endpoint counts of the subscribers of a category in (after_user, last_user]: what
    one fan-out page needs to know which users can be reached on which channel."""
    rows = await conn.fetch(
        "SELECT e.user_id, e.kind, count(*) FROM endpoints e JOIN subscriptions s"
        " ON s.user_id = e.user_id AND s.category_id = $1"
        " WHERE e.user_id > $2 AND e.user_id <= $3 GROUP BY e.user_id, e.kind",
        category_id,
        after_user or "",
        last_user,
    )
    counts: dict[str, dict[EndpointKind, int]] = defaultdict(dict)
    for user_id, kind, count in rows:
        counts[user_id][EndpointKind(kind)] = count
    return counts
