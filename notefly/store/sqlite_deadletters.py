"""Dead letters on SQLite (``DeadLetterStore``), as a mixin of ``SqliteStore``.

The listing reads on the reader connection; the bulk redrive is one operation of the
group-commit writer, whose ``BEGIN IMMEDIATE`` holds the write lock from the select of
the failed deliveries to their update, so two redrives (of any processes) never take
the same delivery.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from notefly.deadletters import DeliveryCursor, DeliveryFilter, ListedDelivery
from notefly.domain import Delivery, DeliveryStatus, DeliveryTask
from notefly.ports import Clock
from notefly.store.rows import DELIVERY_COLUMNS, delivery
from notefly.store.sqlite_flight import page_deliveries, pages_in_flight
from notefly.store.sqlite_reads import one_snapshot, read_all, read_on
from notefly.store.sqlite_rows import _TASK_QUERY, _dt, _tasks
from notefly.store.writer import GroupCommitWriter

_COLUMNS = ", ".join(f"d.{c.strip()}" for c in DELIVERY_COLUMNS.split(","))
_FROM = "FROM deliveries d JOIN messages m ON m.id = d.message_id"
_ORDER = "ORDER BY d.updated_at DESC, d.id DESC"
_CHUNK = 500  # ids per IN (...) list, well under SQLite's limit of variables


def _stamp(value: datetime) -> str:
    # Stored timestamps are ISO 8601 in UTC; in that form text order is time order.
    return value.astimezone(UTC).isoformat()


def _with_pages_in_flight(
    conn: sqlite3.Connection,
    listed: list[ListedDelivery],
    where: DeliveryFilter,
    limit: int,
    after: DeliveryCursor | None,
) -> list[ListedDelivery]:
    """``listed`` (the first ``limit`` matching rows) merged with the matching queued
    deliveries of pages in flight, and cut to ``limit`` again. All of a page's have its
    time, and the pages are read newest first: only as long as they can still make the
    cut (a listing reads the newest page or two, not all of them)."""

    def key(entry: ListedDelivery) -> tuple[datetime, str]:
        return entry.delivery.updated_at, entry.delivery.id

    for page in pages_in_flight(conn):
        at = page.created_at
        if len(listed) >= limit and at < key(listed[limit - 1])[0]:
            break  # this page's and every older one's come after the cut
        if (where.category is not None and page.category_id != where.category) or (
            after is not None and at > after.updated_at
        ):
            continue
        listed += [
            ListedDelivery(d, page.category_id)
            for d in page_deliveries(conn, page)
            if _matches(d, page.category_id, where, after)
        ]
        listed.sort(key=key, reverse=True)
        del listed[limit:]
    return listed


def _matches(
    found: Delivery, category: str, where: DeliveryFilter, after: DeliveryCursor | None
) -> bool:
    """Whether a delivery in flight passes the filter that ``matching`` writes as SQL."""
    return (
        (where.channel is None or found.channel == where.channel)
        and (where.category is None or category == where.category)
        and (where.since is None or found.updated_at >= where.since)
        and (where.until is None or found.updated_at < where.until)
        and (after is None or (found.updated_at, found.id) < (after.updated_at, after.id))
    )


def matching(
    where: DeliveryFilter, after: DeliveryCursor | None, status: DeliveryStatus | None
) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of deliveries matching a filter, after a cursor.

    The status is written as a literal (an enum value, never text from outside): SQLite
    uses a partial index on a status (``deliveries_failed``) only when the query names
    it literally.
    """
    conditions: list[str] = []
    params: list[Any] = []
    if status is not None:
        conditions.append(f"d.status = '{DeliveryStatus(status).value}'")
    if where.channel is not None:
        conditions.append("d.channel = ?")
        params.append(where.channel)
    if where.category is not None:
        conditions.append("m.category_id = ?")
        params.append(where.category)
    if where.since is not None:
        conditions.append("d.updated_at >= ?")
        params.append(_stamp(where.since))
    if where.until is not None:
        conditions.append("d.updated_at < ?")
        params.append(_stamp(where.until))
    if after is not None:
        conditions.append("(d.updated_at, d.id) < (?, ?)")
        params += [_stamp(after.updated_at), after.id]
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


class SqliteDeadLetters:
    """Needs ``_reader``, ``writer`` and ``_clock`` of SqliteStore."""

    _reader: aiosqlite.Connection
    writer: GroupCommitWriter
    _clock: Clock

    async def find_deliveries(
        self, where: DeliveryFilter, limit: int, after: DeliveryCursor | None
    ) -> list[ListedDelivery]:
        """Matching deliveries, latest update first; queued ones include those of
        pages in flight (``sqlite_flight.page_deliveries``), in the same order."""
        clause, params = matching(where, after, where.status)
        sql = f"SELECT {_COLUMNS}, m.category_id {_FROM}{clause} {_ORDER} LIMIT ?"
        if where.status not in (None, DeliveryStatus.QUEUED):
            rows = await read_all(self._reader, sql, [*params, limit])
            return [ListedDelivery(delivery(row, _dt), row[-1]) for row in rows]

        def read(conn: sqlite3.Connection) -> list[ListedDelivery]:
            with one_snapshot(conn):  # the rows and the pages
                rows = conn.execute(sql, [*params, limit]).fetchall()
                listed = [ListedDelivery(delivery(row, _dt), row[-1]) for row in rows]
                return _with_pages_in_flight(conn, listed, where, limit, after)

        return await read_on(self._reader, read)

    async def requeue_failed_matching(
        self, where: DeliveryFilter, owner: str | None, limit: int
    ) -> tuple[list[DeliveryTask], bool]:
        clause, params = matching(where, None, DeliveryStatus.FAILED)
        now = self._clock.now().isoformat()

        async def op(conn: aiosqlite.Connection) -> tuple[list[DeliveryTask], bool]:
            cursor = await conn.execute(
                f"SELECT d.id {_FROM}{clause} {_ORDER} LIMIT ?", [*params, limit + 1]
            )
            ids = [row[0] for row in await cursor.fetchall()]
            more, ids = len(ids) > limit, ids[:limit]
            # As the redrive of one delivery, and sent on its own even if it failed
            # within a digest: a queued 'digest' delivery waits for a digest instead.
            await conn.executemany(
                "UPDATE deliveries SET status = 'queued', attempts = 0, error = NULL,"
                " not_before = NULL, mode = 'immediate', owner = ?, updated_at = ?"
                " WHERE id = ? AND status = 'failed'",
                [(owner, now, delivery_id) for delivery_id in ids],
            )
            return await _tasks_of(conn, ids), more

        return await self.writer.run(op)


async def _tasks_of(conn: aiosqlite.Connection, ids: Sequence[str]) -> list[DeliveryTask]:
    tasks: list[DeliveryTask] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        cursor = await conn.execute(
            f"{_TASK_QUERY} WHERE d.id IN ({', '.join('?' * len(chunk))}) ORDER BY d.id", chunk
        )
        tasks += _tasks(list(await cursor.fetchall()))
    return tasks


if TYPE_CHECKING:
    from notefly.deadletters import DeadLetterStore
    from notefly.store.sqlite import SqliteStore

    def _implements_the_port(store: SqliteStore) -> DeadLetterStore:
        return store  # mypy checks the store against the port here
