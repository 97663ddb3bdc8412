"""The ``AddressBook`` port on SQLite, as a mixin of ``SqliteStore``.

Reads go to the reader connection, writes through the group-commit writer; both are
``SqliteStore``'s. ``registered_in_page`` serves the fan-out, inside its transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiosqlite

from notefly.addresses import DeliveryContext, Endpoint, EndpointKind
from notefly.domain import Message, Priority
from notefly.errors import NotFound
from notefly.ports import Clock
from notefly.store.sqlite_flight import Held
from notefly.store.sqlite_reads import read_all
from notefly.store.writer import GroupCommitWriter

_COLUMNS = "id, user_id, kind, url, keys, label, created_at"
_MESSAGE = (
    "m.id, m.category_id, m.title, m.body, m.data, m.priority, m.idempotency_key, m.accepted_at"
)


def _endpoint(row: Sequence[Any]) -> Endpoint:
    return Endpoint(
        id=row[0],
        user_id=row[1],
        kind=EndpointKind(row[2]),
        url=row[3],
        keys=json.loads(row[4]),
        label=row[5],
        created_at=datetime.fromisoformat(row[6]),
    )


def _not_found(kind: EndpointKind, endpoint_id: str) -> NotFound:
    return NotFound(f"no {kind.value} endpoint {endpoint_id!r}", code="endpoint_not_found")


class SqliteAddressBook:
    """Registered endpoints; needs ``_reader``, ``writer`` and ``_clock`` of SqliteStore."""

    _reader: aiosqlite.Connection
    writer: GroupCommitWriter
    _clock: Clock
    _in_flight: dict[str, Held]

    async def _endpoint_rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return await read_all(self._reader, sql, params)

    async def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        created = endpoint.created_at or self._clock.now()

        async def op(conn: aiosqlite.Connection) -> Endpoint:
            if endpoint.kind is EndpointKind.WEBPUSH:  # the browser changed hands
                await conn.execute(
                    "DELETE FROM endpoints WHERE kind = 'webpush' AND url = ? AND user_id != ?",
                    (endpoint.url, endpoint.user_id),
                )
            await conn.execute(
                f"INSERT INTO endpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, kind, url) DO UPDATE SET keys = excluded.keys"
                " WHERE excluded.kind = 'webpush'",  # new keys of a renewed subscription
                (
                    endpoint.id,
                    endpoint.user_id,
                    endpoint.kind.value,
                    endpoint.url,
                    json.dumps(dict(endpoint.keys)),
                    endpoint.label,
                    created.isoformat(),
                ),
            )
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM endpoints WHERE user_id = ? AND kind = ? AND url = ?",
                (endpoint.user_id, endpoint.kind.value, endpoint.url),
            )
            row = await cursor.fetchone()
            assert row is not None  # inserted or kept just now
            return _endpoint(row)

        return await self.writer.run(op)

    async def list_endpoints(self, user_id: str, kind: EndpointKind) -> list[Endpoint]:
        rows = await self._endpoint_rows(
            f"SELECT {_COLUMNS} FROM endpoints WHERE user_id = ? AND kind = ?"
            " ORDER BY created_at, id",
            (user_id, kind.value),
        )
        return [_endpoint(row) for row in rows]

    async def get_endpoint(self, user_id: str, kind: EndpointKind, endpoint_id: str) -> Endpoint:
        rows = await self._endpoint_rows(
            f"SELECT {_COLUMNS} FROM endpoints WHERE id = ? AND user_id = ? AND kind = ?",
            (endpoint_id, user_id, kind.value),
        )
        if not rows:
            raise _not_found(kind, endpoint_id)
        return _endpoint(rows[0])

    async def delete_endpoint(self, user_id: str, kind: EndpointKind, endpoint_id: str) -> None:
        async def op(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute(
                "DELETE FROM endpoints WHERE id = ? AND user_id = ? AND kind = ?",
                (endpoint_id, user_id, kind.value),
            )
            if cursor.rowcount == 0:
                raise _not_found(kind, endpoint_id)

        await self.writer.run(op)

    async def forget_endpoint(self, endpoint_id: str) -> None:
        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))

        await self.writer.run(op)

    async def endpoint_counts(self, user_id: str) -> dict[EndpointKind, int]:
        rows = await self._endpoint_rows(
            "SELECT kind, count(*) FROM endpoints WHERE user_id = ? GROUP BY kind", (user_id,)
        )
        return {EndpointKind(kind): count for kind, count in rows}

    async def delivery_context(self, delivery_id: str) -> DeliveryContext:
        """A delivery's user and message; a digest's user and newest message."""
        held = self._in_flight.get(delivery_id)
        if held is not None:  # of a page in flight: no row yet, unless its user is gone
            rows = await self._endpoint_rows(
                f"SELECT u.id, {_MESSAGE} FROM users u JOIN messages m ON m.id = ? WHERE u.id = ?",
                (held.message_id, held.user_id),
            )
        else:
            rows = await self._endpoint_rows(
                f"SELECT d.user_id, {_MESSAGE} FROM deliveries d"
                " JOIN messages m ON m.id = d.message_id WHERE d.id = ?",
                (delivery_id,),
            )
        if not rows:  # a digest ("g_..."): the deliveries it carries name it
            rows = await self._endpoint_rows(
                f"SELECT d.user_id, {_MESSAGE} FROM deliveries d"
                " JOIN messages m ON m.id = d.message_id WHERE d.digest_id = ?"
                " ORDER BY m.accepted_at DESC, m.id DESC LIMIT 1",
                (delivery_id,),
            )
        if not rows:
            raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
        row = rows[0]
        message = Message(
            id=row[1],
            category_id=row[2],
            title=row[3],
            body=row[4],
            data=json.loads(row[5]),
            priority=Priority(row[6]),
            idempotency_key=row[7],
            accepted_at=datetime.fromisoformat(row[8]),
        )
        return DeliveryContext(delivery_id, row[0], message)


def registered_in_page(
    conn: sqlite3.Connection, category_id: str, after_user: str | None, last_user: str
) -> dict[str, dict[EndpointKind, int]]:
    """Endpoint counts of the subscribers of a category in (after_user, last_user]: what
    one fan-out page needs to know which users can be reached on which channel (runs
    on the writer thread, inside the page's transaction)."""
    cursor = conn.execute(
        "SELECT e.user_id, e.kind, count(*) FROM endpoints e JOIN subscriptions s"
        " ON s.user_id = e.user_id AND s.category_id = ?"
        " WHERE e.user_id > ? AND e.user_id <= ? GROUP BY e.user_id, e.kind",
        (category_id, after_user or "", last_user),
    )
    counts: dict[str, dict[EndpointKind, int]] = defaultdict(dict)
    for user_id, kind, count in cursor.fetchall():
        counts[user_id][EndpointKind(kind)] = count
    return counts
