"""The embedded store: SQLite through aiosqlite.

WAL mode; one writer connection fed by group commit, one reader connection for
queries. Both connections are closed on ``close()``: aiosqlite's threads are
non-daemon and would keep the process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from notefly.domain import (
    ADDRESS_FIELDS,
    ADDRESS_NAMES,
    Category,
    Delivery,
    DeliveryStatus,
    DeliveryTask,
    Message,
    Notification,
    Outcome,
    Priority,
    Recipient,
    Subscription,
    User,
    delivery_id,
    notification_id,
)
from notefly.errors import Conflict, NotFound
from notefly.ports import Clock, DeliveryCounts, FanoutPage
from notefly.store.migrations import migrate_sqlite
from notefly.store.writer import GroupCommitWriter

_MESSAGE_COLUMNS = (
    "m.id, m.category_id, m.title, m.body, m.data, m.priority, m.idempotency_key, m.accepted_at"
)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _message(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        category_id=row[1],
        title=row[2],
        body=row[3],
        data=json.loads(row[4]),
        priority=Priority(row[5]),
        idempotency_key=row[6],
        accepted_at=datetime.fromisoformat(row[7]),
    )


def _user(row: Sequence[Any]) -> User:
    return User(
        id=row[0],
        name=row[1],
        email=row[2],
        phone=row[3],
        push_token=row[4],
        timezone=row[5],
        created_at=_dt(row[6]),
    )


_USER_COLUMNS = "id, name, email, phone, push_token, timezone, created_at"


def _notification(row: Sequence[Any]) -> Notification:
    return Notification(
        id=row[0],
        user_id=row[1],
        message_id=row[2],
        category_id=row[3],
        title=row[4],
        body=row[5],
        priority=Priority(row[6]),
        created_at=datetime.fromisoformat(row[7]),
        read_at=_dt(row[8]),
    )


_NOTIFICATION_COLUMNS = (
    "id, user_id, message_id, category_id, title, body, priority, created_at, read_at"
)


class SqliteStore:
    """The ``Store`` port on one SQLite file."""

    def __init__(
        self, writer_conn: aiosqlite.Connection, reader: aiosqlite.Connection, clock: Clock
    ) -> None:
        self._writer_conn = writer_conn
        self._reader = reader
        self._clock = clock
        self.writer = GroupCommitWriter(writer_conn)

    @classmethod
    async def open(cls, path: Path, clock: Clock, *, migrate: bool = True) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            async with _setup_lock(path):
                await writer.execute("PRAGMA journal_mode=WAL")
                if migrate:
                    await migrate_sqlite(writer)
            reader = await _connect(path, "PRAGMA query_only=ON")
        except BaseException:
            await writer.close()
            raise
        store = cls(writer, reader, clock)
        store.writer.start()
        return store

    async def close(self) -> None:
        try:
            await self.writer.stop()
        finally:
            await self._reader.close()
            await self._writer_conn.close()

    async def ping(self) -> None:
        await self._reader.execute("SELECT 1")

    # -- helpers ----------------------------------------------------------------

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = await self._reader.execute(sql, params)
        return await cursor.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        cursor = await self._reader.execute(sql, params)
        return list(await cursor.fetchall())

    def _now(self) -> str:
        return self._clock.now().isoformat()

    # -- categories ---------------------------------------------------------------

    async def list_categories(self) -> list[Category]:
        rows = await self._all("SELECT id, name, description FROM categories ORDER BY name")
        return [Category(*row) for row in rows]

    async def get_category(self, category_id: str) -> Category:
        row = await self._one(
            "SELECT id, name, description FROM categories WHERE id = ?", (category_id,)
        )
        if row is None:
            raise NotFound(f"no category {category_id!r}", code="category_not_found")
        return Category(*row)

    async def add_category(self, category: Category) -> Category:
        async def op(conn: aiosqlite.Connection) -> None:
            try:
                await conn.execute(
                    "INSERT INTO categories (id, name, description, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (category.id, category.name, category.description, self._now()),
                )
            except aiosqlite.IntegrityError as exc:
                raise Conflict(
                    f"category {category.id!r} exists already", code="category_exists"
                ) from exc

        await self.writer.run(op)
        return category

    # -- users and subscriptions --------------------------------------------------

    async def add_user(self, user: User) -> User:
        async def op(conn: aiosqlite.Connection) -> None:
            now = _ts(user.created_at) or self._now()
            exists = await conn.execute("SELECT 1 FROM users WHERE id = ?", (user.id,))
            if await exists.fetchone() is not None:
                raise Conflict(f"user {user.id!r} exists already", code="user_exists")
            await conn.execute(
                f"INSERT INTO users ({_USER_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user.id,
                    user.name,
                    user.email,
                    user.phone,
                    user.push_token,
                    user.timezone,
                    now,
                    now,
                ),
            )

        await self.writer.run(op)
        return user

    async def get_user(self, user_id: str) -> User:
        row = await self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"no user {user_id!r}", code="user_not_found")
        return _user(row)

    async def list_users(self, limit: int = 100) -> list[User]:
        rows = await self._all(
            f"SELECT {_USER_COLUMNS} FROM users ORDER BY name, id LIMIT ?", (limit,)
        )
        return [_user(row) for row in rows]

    async def update_user(self, user: User) -> User:
        async def op(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute(
                "UPDATE users SET name = ?, email = ?, phone = ?, push_token = ?, timezone = ?,"
                " updated_at = ? WHERE id = ?",
                (
                    user.name,
                    user.email,
                    user.phone,
                    user.push_token,
                    user.timezone,
                    self._now(),
                    user.id,
                ),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no user {user.id!r}", code="user_not_found")

        await self.writer.run(op)
        return user

    async def delete_user(self, user_id: str) -> None:
        async def op(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
            if cursor.rowcount == 0:
                raise NotFound(f"no user {user_id!r}", code="user_not_found")
            # Subscriptions go by cascade; inbox and delivery rows hold personal data too.
            await conn.execute("DELETE FROM inbox WHERE user_id = ?", (user_id,))
            await conn.execute("DELETE FROM deliveries WHERE user_id = ?", (user_id,))

        await self.writer.run(op)

    async def upsert_subscription(self, sub: Subscription) -> Subscription:
        stamped = Subscription(sub.user_id, sub.category_id, sub.channels, self._clock.now())

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO subscriptions (category_id, user_id, channels, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (category_id, user_id)"
                " DO UPDATE SET channels = excluded.channels, updated_at = excluded.updated_at",
                (sub.category_id, sub.user_id, ",".join(sub.channels), _ts(stamped.updated_at)),
            )

        await self.writer.run(op)
        return stamped

    async def replace_subscriptions(
        self, user_id: str, subs: Sequence[Subscription]
    ) -> list[Subscription]:
        now = self._clock.now()

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute("DELETE FROM subscriptions WHERE user_id = ?", (user_id,))
            await conn.executemany(
                "INSERT INTO subscriptions (category_id, user_id, channels, updated_at)"
                " VALUES (?, ?, ?, ?)",
                [(s.category_id, user_id, ",".join(s.channels), now.isoformat()) for s in subs],
            )

        await self.writer.run(op)
        return [Subscription(user_id, s.category_id, s.channels, now) for s in subs]

    async def delete_subscription(self, user_id: str, category_id: str) -> None:
        async def op(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute(
                "DELETE FROM subscriptions WHERE category_id = ? AND user_id = ?",
                (category_id, user_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(
                    f"user {user_id!r} is not subscribed to {category_id!r}",
                    code="subscription_not_found",
                )

        await self.writer.run(op)

    async def list_subscriptions(self, user_id: str) -> list[Subscription]:
        rows = await self._all(
            "SELECT user_id, category_id, channels, updated_at FROM subscriptions"
            " WHERE user_id = ? ORDER BY category_id",
            (user_id,),
        )
        return [Subscription(row[0], row[1], tuple(row[2].split(",")), _dt(row[3])) for row in rows]

    # -- messages -----------------------------------------------------------------

    async def accept_message(self, message: Message) -> tuple[Message, bool]:
        """Commit a message; with a known idempotency key, return the original instead.

        Returns the stored message and whether it was created now.
        """

        async def op(conn: aiosqlite.Connection) -> tuple[Message, bool]:
            cursor = await conn.execute(
                "INSERT INTO messages (id, category_id, title, body, data, priority,"
                " idempotency_key, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (idempotency_key) DO NOTHING",
                (
                    message.id,
                    message.category_id,
                    message.title,
                    message.body,
                    json.dumps(message.data),
                    message.priority.value,
                    message.idempotency_key,
                    message.accepted_at.isoformat(),
                ),
            )
            if cursor.rowcount == 1:
                return message, True
            cursor = await conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.idempotency_key = ?",
                (message.idempotency_key,),
            )
            row = await cursor.fetchone()
            assert row is not None  # the conflict says it is there
            return _message(row), False

        return await self.writer.run(op)

    async def get_message(self, message_id: str) -> Message:
        row = await self._one(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?", (message_id,)
        )
        if row is None:
            raise NotFound(f"no message {message_id!r}", code="message_not_found")
        return _message(row)

    async def delivery_counts(self, message_id: str) -> DeliveryCounts:
        row = await self._one("SELECT fanout_done FROM messages WHERE id = ?", (message_id,))
        if row is None:
            raise NotFound(f"no message {message_id!r}", code="message_not_found")
        rows = await self._all(
            "SELECT status, count(*) FROM deliveries WHERE message_id = ? GROUP BY status",
            (message_id,),
        )
        return DeliveryCounts(fanout_done=bool(row[0]), by_status=dict(rows))

    async def list_deliveries(self, message_id: str) -> list[Delivery]:
        await self.get_message(message_id)
        rows = await self._all(
            "SELECT id, message_id, user_id, channel, status, attempts, provider,"
            " provider_message_id, recipient, subject, text, error, created_at, updated_at,"
            " sent_at FROM deliveries WHERE message_id = ? ORDER BY user_id, channel",
            (message_id,),
        )
        return [
            Delivery(
                id=row[0],
                message_id=row[1],
                user_id=row[2],
                channel=row[3],
                status=DeliveryStatus(row[4]),
                attempts=row[5],
                provider=row[6],
                provider_message_id=row[7],
                recipient=row[8],
                subject=row[9],
                text=row[10],
                error=row[11],
                created_at=datetime.fromisoformat(row[12]),
                updated_at=datetime.fromisoformat(row[13]),
                sent_at=_dt(row[14]),
            )
            for row in rows
        ]

    # -- fan-out and delivery -------------------------------------------------------

    async def fanout_page(
        self, message: Message, after_user: str | None, limit: int, channels: Sequence[str]
    ) -> FanoutPage:
        """Turn the next page of the audience into deliveries and inbox entries.

        The page's rows and the message's cursor commit together, so a fan-out resumed
        after a crash starts exactly where the last committed page ended.
        """
        enabled = set(channels)

        async def op(conn: aiosqlite.Connection) -> FanoutPage:
            cursor = await conn.execute(
                "SELECT s.user_id, s.channels, u.name, u.email, u.phone, u.push_token,"
                " u.timezone FROM subscriptions s JOIN users u ON u.id = s.user_id"
                " WHERE s.category_id = ? AND s.user_id > ? ORDER BY s.user_id LIMIT ?",
                (message.category_id, after_user or "", limit),
            )
            rows = list(await cursor.fetchall())
            now = self._now()
            tasks: list[DeliveryTask] = []
            delivery_rows: list[tuple[Any, ...]] = []
            inbox_rows: list[tuple[Any, ...]] = []
            skipped = 0
            for user_id, subscribed, name, email, phone, push_token, tz in rows:
                user = User(user_id, name, email, phone, push_token, tz)
                inbox_rows.append(
                    (
                        notification_id(message.id, user_id),
                        user_id,
                        message.id,
                        message.category_id,
                        message.title,
                        message.body,
                        message.priority.value,
                        message.accepted_at.isoformat(),  # stable across a re-run fan-out
                    )
                )
                for channel in subscribed.split(","):
                    did = delivery_id(message.id, user_id, channel)
                    address = user.address_for(channel)
                    reason = None
                    if channel not in enabled:
                        reason = f"channel {channel!r} is not enabled on this broker"
                    elif channel in ADDRESS_FIELDS and not address:
                        reason = f"user has no {ADDRESS_NAMES[channel]}"
                    status = DeliveryStatus.SKIPPED if reason else DeliveryStatus.QUEUED
                    delivery_rows.append(
                        (did, message.id, user_id, channel, status.value, address, reason, now)
                    )
                    if reason:
                        skipped += 1
                    else:
                        tasks.append(
                            DeliveryTask(
                                did, message, channel, Recipient(user_id, name, address, tz)
                            )
                        )
            await conn.executemany(
                "INSERT OR IGNORE INTO deliveries (id, message_id, user_id, channel, status,"
                " recipient, error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?8)",
                delivery_rows,
            )
            await conn.executemany(
                "INSERT OR IGNORE INTO inbox (id, user_id, message_id, category_id, title, body,"
                " priority, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                inbox_rows,
            )
            done = len(rows) < limit
            last = rows[-1][0] if rows else after_user
            await conn.execute(
                "UPDATE messages SET fanout_cursor = ?, fanout_done = ? WHERE id = ?",
                (last, int(done), message.id),
            )
            return FanoutPage(tasks, skipped, last, done)

        return await self.writer.run(op)

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        now = self._now()
        rows = [
            (
                o.status.value,
                o.attempts,
                o.provider,
                o.provider_message_id,
                o.recipient,
                o.subject,
                o.text,
                o.error,
                _ts(o.at) or now,
                (_ts(o.at) or now) if o.status is DeliveryStatus.SENT else None,
                o.delivery_id,
            )
            for o in outcomes
        ]

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?, provider = ?,"
                " provider_message_id = ?, recipient = coalesce(?, recipient),"
                " subject = ?, text = ?, error = ?, updated_at = ?, sent_at = ? WHERE id = ?",
                rows,
            )

        await self.writer.run(op)

    async def unfinished_fanouts(self) -> list[tuple[Message, str | None]]:
        rows = await self._all(
            f"SELECT {_MESSAGE_COLUMNS}, m.fanout_cursor FROM messages m"
            " WHERE m.fanout_done = 0 ORDER BY m.accepted_at"
        )
        return [(_message(row), row[8]) for row in rows]

    async def queued_tasks(self, after_id: str | None, limit: int) -> list[DeliveryTask]:
        rows = await self._all(
            f"SELECT d.id, d.channel, d.attempts, d.user_id, u.name, u.email, u.phone,"
            f" u.push_token, u.timezone, {_MESSAGE_COLUMNS} FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id LEFT JOIN users u ON u.id = d.user_id"
            " WHERE d.status = 'queued' AND d.id > ? ORDER BY d.id LIMIT ?",
            (after_id or "", limit),
        )
        messages: dict[str, Message] = {}
        tasks = []
        for row in rows:
            message = messages.get(row[9]) or messages.setdefault(row[9], _message(row[9:]))
            user = User(row[3], row[4] or "", row[5], row[6], row[7], row[8] or "UTC")
            address = user.address_for(row[1])
            tasks.append(
                DeliveryTask(
                    row[0],
                    message,
                    row[1],
                    Recipient(row[3], user.name, address, user.timezone),
                    attempts=row[2],
                )
            )
        return tasks

    # -- inbox --------------------------------------------------------------------

    async def list_notifications(
        self, user_id: str, *, unread_only: bool, limit: int, before: str | None
    ) -> list[Notification]:
        await self.get_user(user_id)
        sql = f"SELECT {_NOTIFICATION_COLUMNS} FROM inbox WHERE user_id = ?"
        params: list[Any] = [user_id]
        if unread_only:
            sql += " AND read_at IS NULL"
        if before is not None:
            row = await self._one(
                "SELECT seq FROM inbox WHERE id = ? AND user_id = ?", (before, user_id)
            )
            if row is None:
                raise NotFound(f"no notification {before!r}", code="notification_not_found")
            sql += " AND seq < ?"
            params.append(row[0])
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [_notification(row) for row in await self._all(sql, params)]

    async def mark_read(self, user_id: str, notification_id: str) -> Notification:
        now = self._now()

        async def op(conn: aiosqlite.Connection) -> Notification:
            await conn.execute(
                "UPDATE inbox SET read_at = coalesce(read_at, ?) WHERE id = ? AND user_id = ?",
                (now, notification_id, user_id),
            )
            cursor = await conn.execute(
                f"SELECT {_NOTIFICATION_COLUMNS} FROM inbox WHERE id = ? AND user_id = ?",
                (notification_id, user_id),
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(
                    f"no notification {notification_id!r}", code="notification_not_found"
                )
            return _notification(row)

        return await self.writer.run(op)

    async def mark_all_read(self, user_id: str) -> int:
        await self.get_user(user_id)
        now = self._now()

        async def op(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(
                "UPDATE inbox SET read_at = ? WHERE user_id = ? AND read_at IS NULL",
                (now, user_id),
            )
            return cursor.rowcount

        return await self.writer.run(op)


@contextlib.asynccontextmanager
async def _setup_lock(path: Path) -> AsyncIterator[None]:
    """Serialise start-up (WAL switch, migrations) between processes opening one file.

    SQLite answers "locked" at once, without its busy handler, to a process that opens
    a file while another is switching it to WAL; an advisory lock beside the file makes
    the second process wait its turn instead.
    """
    with open(path.with_name(path.name + ".lock"), "a+b") as handle:  # noqa: ASYNC230 (instant)
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


async def _connect(path: Path, *pragmas: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.execute("PRAGMA foreign_keys=ON")
        # synchronous=FULL: a 202 means the message survives a power cut, not only a
        # process crash; group commit pays the fsync once for many publishes.
        await conn.execute("PRAGMA synchronous=FULL")
        for pragma in pragmas:
            await conn.execute(pragma)
    except BaseException:
        await conn.close()  # its thread is non-daemon: never leave it running
        raise
    return conn
