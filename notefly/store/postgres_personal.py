"""A user's personal data on PostgreSQL (``PersonalDataStore``), as a mixin of
``PostgresStore``. One transaction, so the export is one consistent snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from notefly.domain import Subscription, User
from notefly.errors import NotFound
from notefly.personal import DigestRecord, UserExport
from notefly.store.postgres_addresses import _COLUMNS as _ENDPOINT_COLUMNS
from notefly.store.postgres_addresses import _endpoint
from notefly.store.rows import (
    DELIVERY_COLUMNS,
    NOTIFICATION_COLUMNS,
    USER_COLUMNS,
    delivery,
    notification_row,
)

_DIGEST_COLUMNS = (
    "id, channel, status, attempts, items, provider, recipient, subject, text, error,"
    " created_at, updated_at, sent_at"
)


class PostgresPersonalData:
    """Needs ``_pool`` of PostgresStore."""

    _pool: asyncpg.Pool

    async def export_user(self, user_id: str) -> UserExport:
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await conn.fetchrow(
                f"SELECT {USER_COLUMNS} FROM users WHERE id = $1",
                user_id,
            )
            if row is None:
                raise NotFound(f"no user {user_id!r}", code="user_not_found")
            subscriptions = await conn.fetch(
                "SELECT user_id, category_id, channels, updated_at, schedule FROM subscriptions"
                " WHERE user_id = $1 ORDER BY category_id",
                user_id,
            )
            endpoints = await conn.fetch(
                f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE user_id = $1"
                " ORDER BY created_at, id",
                user_id,
            )
            inbox = await conn.fetch(
                f"SELECT {NOTIFICATION_COLUMNS} FROM inbox WHERE user_id = $1 ORDER BY seq DESC",
                user_id,
            )
            deliveries = await conn.fetch(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE user_id = $1"
                " ORDER BY created_at DESC, id DESC",
                user_id,
            )
            digests = await conn.fetch(
                f"SELECT {_DIGEST_COLUMNS} FROM digests WHERE user_id = $1"
                " ORDER BY created_at DESC, id DESC",
                user_id,
            )
        return UserExport(
            user=User(*row),
            subscriptions=[
                Subscription(r[0], r[1], tuple(r[2]), r[3], r[4]) for r in subscriptions
            ],
            endpoints=[_endpoint(r) for r in endpoints],
            notifications=[notification_row(r, _same) for r in inbox],
            deliveries=[delivery(r, _same) for r in deliveries],
            digests=[DigestRecord(*r) for r in digests],
        )


def _same(value: Any) -> Any:
    """asyncpg already returns datetimes."""
    return value


if TYPE_CHECKING:
    from notefly.personal import PersonalDataStore
    from notefly.store.postgres import PostgresStore

    def _implements_the_port(store: PostgresStore) -> PersonalDataStore:
        return store  # mypy checks the store against the port here
