"""A user's personal data on SQLite (``PersonalDataStore``), as a mixin of ``SqliteStore``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from notefly.domain import Subscription
from notefly.errors import NotFound
from notefly.personal import DigestRecord, UserExport
from notefly.store.rows import (
    DELIVERY_COLUMNS,
    NOTIFICATION_COLUMNS,
    USER_COLUMNS,
    delivery,
    notification_row,
    user_row,
)
from notefly.store.sqlite_addresses import _COLUMNS as _ENDPOINT_COLUMNS
from notefly.store.sqlite_addresses import _endpoint
from notefly.store.sqlite_reads import read_all
from notefly.store.sqlite_rows import _dt

_DIGEST_COLUMNS = (
    "id, channel, status, attempts, items, provider, recipient, subject, text, error,"
    " created_at, updated_at, sent_at"
)


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


class SqlitePersonalData:
    """Needs ``_reader`` of SqliteStore."""

    _reader: aiosqlite.Connection

    async def _personal(self, sql: str, user_id: str) -> list[Any]:
        return await read_all(self._reader, sql, (user_id,))

    async def export_user(self, user_id: str) -> UserExport:
        users = await self._personal(
            f"SELECT {USER_COLUMNS} FROM users WHERE id = ?",
            user_id,
        )
        if not users:
            raise NotFound(f"no user {user_id!r}", code="user_not_found")
        row = users[0]
        user = user_row(row, _dt)
        subscriptions = await self._personal(
            "SELECT user_id, category_id, channels, updated_at, schedule FROM subscriptions"
            " WHERE user_id = ? ORDER BY category_id",
            user_id,
        )
        endpoints = await self._personal(
            f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE user_id = ? ORDER BY created_at, id",
            user_id,
        )
        inbox = await self._personal(
            f"SELECT {NOTIFICATION_COLUMNS} FROM inbox WHERE user_id = ? ORDER BY seq DESC",
            user_id,
        )
        deliveries = await self._personal(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE user_id = ?"
            " ORDER BY created_at DESC, id DESC",
            user_id,
        )
        digests = await self._personal(
            f"SELECT {_DIGEST_COLUMNS} FROM digests WHERE user_id = ?"
            " ORDER BY created_at DESC, id DESC",
            user_id,
        )
        return UserExport(
            user=user,
            subscriptions=[
                Subscription(r[0], r[1], tuple(r[2].split(",")), _dt(r[3]), r[4])
                for r in subscriptions
            ],
            endpoints=[_endpoint(r) for r in endpoints],
            notifications=[notification_row(r, _dt) for r in inbox],
            deliveries=[delivery(r, _dt) for r in deliveries],
            digests=[_digest(r) for r in digests],
        )


def _digest(row: Sequence[Any]) -> DigestRecord:
    return DigestRecord(
        id=row[0],
        channel=row[1],
        status=row[2],
        attempts=row[3],
        items=row[4],
        provider=row[5],
        recipient=row[6],
        subject=row[7],
        text=row[8],
        error=row[9],
        created_at=_stamp(row[10]),
        updated_at=_stamp(row[11]),
        sent_at=_dt(row[12]),
    )


if TYPE_CHECKING:
    from notefly.personal import PersonalDataStore
    from notefly.store.sqlite import SqliteStore

    def _implements_the_port(store: SqliteStore) -> PersonalDataStore:
        return store  # mypy checks the store against the port here
