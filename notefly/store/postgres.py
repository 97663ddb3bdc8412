"""The scale-out store: PostgreSQL through asyncpg.

Several broker nodes share one database. Every call is one transaction on a pooled
connection, committed before the call returns (a 202 means committed); calls that
carry many rows (fan-out pages, outcomes) send them as arrays through ``unnest`` in
one statement. Nodes claim work with ``FOR UPDATE SKIP LOCKED``, so two claimers
never get the same row, and wake each other with ``NOTIFY notefly_work``, heard on a
connection of its own; a node that hears nothing still polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog

from notefly.domain import (
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
    notification_id,
)
from notefly.errors import Conflict, NotFound
from notefly.ports import (
    Accepted,
    Clock,
    DeliveryCounts,
    FanoutPage,
    OnCommit,
    PageRequest,
    Segment,
)
from notefly.schedule import Throttle
from notefly.store.fanout import (
    SEGMENT_STEP_BACK,
    Subscriber,
    page_range,
    plan_page,
    segments_of,
)
from notefly.store.postgres_addresses import PostgresAddressBook, registered_in_page
from notefly.store.postgres_deadletters import PostgresDeadLetters
from notefly.store.postgres_digests import (
    DIGEST_PREFIX,
    OUTCOMES,
    claim_digests,
    recent_counts,
    record_digests,
)
from notefly.store.postgres_feed import INBOX_LOCK, PostgresInboxFeed
from notefly.store.postgres_keys import PostgresKeys
from notefly.store.postgres_migrations import migrate_postgres
from notefly.store.postgres_ops import PostgresOpsMixin
from notefly.store.postgres_personal import PostgresPersonalData
from notefly.store.rows import (
    DELIVERY_COLUMNS,
    NOTIFICATION_COLUMNS,
    USER_COLUMNS,
    delivery,
    notification_row,
    user_row,
)
from notefly.store.sqlite_rows import task_address  # backend-neutral, despite its home

if TYPE_CHECKING:
    from notefly.addresses import AddressBook
    from notefly.live import InboxFeed
    from notefly.operations import OpsStore
    from notefly.ports import Store

T = TypeVar("T")

log = structlog.get_logger("notefly.store")

WORK_CHANNEL = "notefly_work"  # NOTIFY channel: unowned work appeared
DEFAULT_POOL_SIZE = 10
IDEMPOTENCY_WINDOW = timedelta(hours=24)  # a key names one message for this long
_RETRIES = 3  # a transaction chosen as a deadlock victim is run again
_CLOSE_SECONDS = 10.0

_MESSAGE_COLUMNS = (
    "m.id, m.category_id, m.title, m.body, m.data, m.priority, m.idempotency_key, m.accepted_at"
)
# A delivery task's columns, ``d`` being a delivery. The user's current address wins;
# the recorded one serves channels whose addresses are registrations (``task_address``).
_TASK_COLUMNS = (
    "d.id, d.channel, d.attempts, d.user_id, u.name, u.email, u.phone, u.push_token,"
    f" u.timezone, {_MESSAGE_COLUMNS}, d.recipient"
)
_TASK_JOINS = "JOIN messages m ON m.id = d.message_id LEFT JOIN users u ON u.id = d.user_id"


def _message(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        category_id=row[1],
        title=row[2],
        body=row[3],
        data=row[4],
        priority=Priority(row[5]),
        idempotency_key=row[6],
        accepted_at=row[7],
    )


def _tasks(rows: Sequence[Sequence[Any]]) -> list[DeliveryTask]:
    """Delivery tasks from ``_TASK_COLUMNS`` rows."""
    messages: dict[str, Message] = {}
    tasks = []
    for row in rows:
        message = messages.get(row[9]) or messages.setdefault(row[9], _message(row[9:17]))
        user = User(row[3], row[4] or "", row[5], row[6], row[7], row[8] or "UTC")
        address = task_address(user, row[1], row[17])
        recipient = Recipient(row[3], user.name, address, user.timezone)
        tasks.append(DeliveryTask(row[0], message, row[1], recipient, attempts=row[2]))
    return tasks


def _rowcount(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 3`` or ``INSERT 0 1``."""
    return int(status.rsplit(" ", 1)[-1])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class PostgresStore(
    PostgresAddressBook,
    PostgresInboxFeed,
    PostgresOpsMixin,
    PostgresDeadLetters,
    PostgresPersonalData,
    PostgresKeys,
):
    """The ``Store`` port (and the address book, the inbox feed and the operations read
    model) on a PostgreSQL database shared by several nodes."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, clock: Clock) -> None:
        self._pool = pool
        self._dsn = dsn
        self._clock = clock
        self._listener: asyncpg.Connection | None = None
        self._news = asyncio.Event()

    @classmethod
    async def open(
        cls,
        dsn: str,
        clock: Clock,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        migrate: bool = True,
    ) -> PostgresStore:
        if migrate:
            conn = await asyncpg.connect(dsn)
            try:
                await migrate_postgres(conn)
            finally:
                await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, init=_init_connection)
        store = cls(pool, dsn, clock)
        try:
            await store._listen()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        try:
            if self._listener is not None and not self._listener.is_closed():
                await self._listener.close()
        finally:
            self._listener = None
            try:
                # A statement that never ends must not keep the process from stopping.
                await asyncio.wait_for(self._pool.close(), _CLOSE_SECONDS)
            except TimeoutError:
                self._pool.terminate()

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    # -- helpers ----------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._pool.fetch(sql, *args)
        return rows

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._pool.fetchrow(sql, *args)

    async def _in_transaction(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``op`` in a transaction of its own; committed when this returns."""
        for attempt in range(_RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await op(conn)
            except asyncpg.DeadlockDetectedError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _now(self) -> datetime:
        return self._clock.now()

    # -- categories ---------------------------------------------------------------

    async def list_categories(self) -> list[Category]:
        rows = await self._fetch(
            'SELECT id, name, description FROM categories ORDER BY name COLLATE "C"'
        )
        return [Category(*row) for row in rows]

    async def get_category(self, category_id: str) -> Category:
        row = await self._fetchrow(
            "SELECT id, name, description FROM categories WHERE id = $1", category_id
        )
        if row is None:
            raise NotFound(f"no category {category_id!r}", code="category_not_found")
        return Category(*row)

    async def add_category(self, category: Category) -> Category:
        status = await self._pool.execute(
            "INSERT INTO categories (id, name, description, created_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            category.id,
            category.name,
            category.description,
            self._now(),
        )
        if _rowcount(status) == 0:
            raise Conflict(f"category {category.id!r} exists already", code="category_exists")
        return category

    # -- users and subscriptions --------------------------------------------------

    async def add_user(self, user: User) -> User:
        now = user.created_at or self._now()
        status = await self._pool.execute(
            f"INSERT INTO users ({USER_COLUMNS}, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7) ON CONFLICT (id) DO NOTHING",
            user.id,
            user.name,
            user.email,
            user.phone,
            user.push_token,
            user.timezone,
            now,
            user.quiet_hours,
        )
        if _rowcount(status) == 0:
            raise Conflict(f"user {user.id!r} exists already", code="user_exists")
        return user

    async def get_user(self, user_id: str) -> User:
        row = await self._fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
        if row is None:
            raise NotFound(f"no user {user_id!r}", code="user_not_found")
        return user_row(row, _same)

    async def list_users(self, limit: int = 100) -> list[User]:
        rows = await self._fetch(
            f'SELECT {USER_COLUMNS} FROM users ORDER BY name COLLATE "C", id LIMIT $1', limit
        )
        return [user_row(row, _same) for row in rows]

    async def update_user(self, user: User) -> User:
        status = await self._pool.execute(
            "UPDATE users SET name = $1, email = $2, phone = $3, push_token = $4,"
            " timezone = $5, quiet_hours = $6, updated_at = $7 WHERE id = $8",
            user.name,
            user.email,
            user.phone,
            user.push_token,
            user.timezone,
            user.quiet_hours,
            self._now(),
            user.id,
        )
        if _rowcount(status) == 0:
            raise NotFound(f"no user {user.id!r}", code="user_not_found")
        return user

    async def delete_user(self, user_id: str) -> None:
        async def op(conn: asyncpg.Connection) -> None:
            status = await conn.execute("DELETE FROM users WHERE id = $1", user_id)
            if _rowcount(status) == 0:
                raise NotFound(f"no user {user_id!r}", code="user_not_found")
            # Subscriptions and endpoints go by cascade; inbox, delivery and digest rows
            # hold personal data too (tests/contract/test_erasure_contract.py scans all).
            await conn.execute("DELETE FROM inbox WHERE user_id = $1", user_id)
            await conn.execute("DELETE FROM deliveries WHERE user_id = $1", user_id)
            await conn.execute("DELETE FROM digests WHERE user_id = $1", user_id)
            # A fan-out's cursor is the last user id of its page: step it back to the
            # user before (the next page is the same, since that one is gone).
            await conn.execute(
                "UPDATE messages SET fanout_cursor = (SELECT max(id) FROM users WHERE id < $1)"
                " WHERE fanout_cursor = $1",
                user_id,
            )
            # Segments begin and end at user ids too: the user before covers the same
            # users now. A cursor never steps back out of its segment.
            for column, floor in SEGMENT_STEP_BACK:
                await conn.execute(
                    f"UPDATE fanout_segments SET {column} = greatest(coalesce("
                    f"(SELECT max(id) FROM users WHERE id < $1), ''), {floor})"
                    f" WHERE {column} = $1",
                    user_id,
                )

        await self._in_transaction(op)

    async def upsert_subscription(self, sub: Subscription) -> Subscription:
        stamped = replace(sub, updated_at=self._now())
        await self._pool.execute(
            "INSERT INTO subscriptions (category_id, user_id, channels, updated_at, schedule)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (category_id, user_id)"
            " DO UPDATE SET channels = excluded.channels, updated_at = excluded.updated_at,"
            " schedule = excluded.schedule",
            sub.category_id,
            sub.user_id,
            list(sub.channels),
            stamped.updated_at,
            sub.schedule,
        )
        return stamped

    async def replace_subscriptions(
        self, user_id: str, subs: Sequence[Subscription]
    ) -> list[Subscription]:
        now = self._now()

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute("DELETE FROM subscriptions WHERE user_id = $1", user_id)
            await conn.executemany(
                "INSERT INTO subscriptions (category_id, user_id, channels, updated_at, schedule)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(s.category_id, user_id, list(s.channels), now, s.schedule) for s in subs],
            )

        await self._in_transaction(op)
        return [replace(s, user_id=user_id, updated_at=now) for s in subs]

    async def delete_subscription(self, user_id: str, category_id: str) -> None:
        status = await self._pool.execute(
            "DELETE FROM subscriptions WHERE category_id = $1 AND user_id = $2",
            category_id,
            user_id,
        )
        if _rowcount(status) == 0:
            raise NotFound(
                f"user {user_id!r} is not subscribed to {category_id!r}",
                code="subscription_not_found",
            )

    async def list_subscriptions(self, user_id: str) -> list[Subscription]:
        rows = await self._fetch(
            "SELECT user_id, category_id, channels, updated_at, schedule FROM subscriptions"
            " WHERE user_id = $1 ORDER BY category_id",
            user_id,
        )
        return [Subscription(row[0], row[1], tuple(row[2]), row[3], row[4]) for row in rows]

    # -- messages -----------------------------------------------------------------

    async def accept_message(
        self, message: Message, *, owner: str | None = None
    ) -> tuple[Message, bool]:
        """Commit a message; with a known idempotency key, return the original instead.

        ``owner``: the node that fans it out. A message without one is news for the
        idle nodes, told in the same transaction. Returns the stored message and
        whether it was created now.
        """
        return await self._in_transaction(self._accept_op(message, owner))

    async def accept_with_page(
        self, message: Message, request: PageRequest, *, on_commit: OnCommit | None = None
    ) -> Accepted:
        accept = self._accept_op(message, request.owner)
        plan = request.plan_with(self._fanout_op, message)

        async def op(conn: asyncpg.Connection) -> Accepted:
            stored, created = await accept(conn)
            if not created:
                return Accepted(stored, False, None)
            try:
                async with conn.transaction():  # a savepoint: a failed page is undone alone
                    page = await plan(conn)
            except Exception as exc:
                log.warning("fanout.first_page_failed", message_id=message.id, error=repr(exc))
                return Accepted(stored, True, None)
            return Accepted(stored, True, page)

        accepted = await self._in_transaction(op)
        if on_commit is not None:
            on_commit(accepted)
        return accepted

    def _accept_op(
        self, message: Message, owner: str | None
    ) -> Callable[[asyncpg.Connection], Awaitable[tuple[Message, bool]]]:
        async def op(conn: asyncpg.Connection) -> tuple[Message, bool]:
            if message.idempotency_key is not None:
                # A key is one message for 24 hours; after that it is free again. The old
                # message keeps its key with its own id appended, for the record.
                await conn.execute(
                    "UPDATE messages SET idempotency_key = idempotency_key || '#' || id"
                    " WHERE idempotency_key = $1 AND accepted_at < $2",
                    message.idempotency_key,
                    message.accepted_at - IDEMPOTENCY_WINDOW,
                )
            status = await conn.execute(
                "INSERT INTO messages (id, category_id, title, body, data, priority,"
                " idempotency_key, accepted_at, fanout_owner, deliver_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                " ON CONFLICT (idempotency_key) DO NOTHING",
                message.id,
                message.category_id,
                message.title,
                message.body,
                message.data,
                message.priority.value,
                message.idempotency_key,
                message.accepted_at,
                owner,
                message.deliver_at,
            )
            if _rowcount(status) == 1:
                if owner is None:
                    await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)
                return message, True
            row = await conn.fetchrow(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.idempotency_key = $1",
                message.idempotency_key,
            )
            assert row is not None  # the conflict says it is there
            return _message(row), False

        return op

    async def get_message(self, message_id: str) -> Message:
        row = await self._fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1", message_id
        )
        if row is None:
            raise NotFound(f"no message {message_id!r}", code="message_not_found")
        return _message(row)

    async def delivery_counts(self, message_id: str) -> DeliveryCounts:
        rows = await self._fetch(
            "SELECT m.fanout_done, d.status, count(d.id) FROM messages m"
            " LEFT JOIN deliveries d ON d.message_id = m.id WHERE m.id = $1"
            " GROUP BY m.fanout_done, d.status",
            message_id,
        )
        if not rows:
            raise NotFound(f"no message {message_id!r}", code="message_not_found")
        by_status = {row[1]: row[2] for row in rows if row[1] is not None}
        return DeliveryCounts(fanout_done=rows[0][0], by_status=by_status)

    async def list_deliveries(self, message_id: str) -> list[Delivery]:
        await self.get_message(message_id)
        rows = await self._fetch(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $1"
            " ORDER BY user_id, channel",
            message_id,
        )
        return [delivery(row, _same) for row in rows]

    # -- fan-out and delivery -------------------------------------------------------

    async def fanout_page(
        self,
        message: Message,
        after_user: str | None,
        limit: int,
        channels: Sequence[str],
        *,
        owner: str | None = None,
        throttles: Mapping[str, Throttle] | None = None,
        partitions: int = 1,
        segment: Segment | None = None,
    ) -> FanoutPage:
        """Turn the next page of the audience into deliveries and inbox entries.

        The page's rows and the message's cursor commit together, so a fan-out resumed
        after a crash starts exactly where the last committed page ended. Deliveries that
        go out now belong to ``owner``, the node that hands them to its shards; the
        others (digests, quiet hours, throttled) wait unowned until they are due.
        """
        plan = self._fanout_op(
            message,
            after_user,
            limit,
            channels,
            owner=owner,
            throttles=throttles,
            partitions=partitions,
            segment=segment,
        )
        return await self._in_transaction(plan)

    def _fanout_op(
        self,
        message: Message,
        after_user: str | None,
        limit: int,
        channels: Sequence[str],
        *,
        owner: str | None,
        throttles: Mapping[str, Throttle] | None,
        partitions: int = 1,
        segment: Segment | None = None,
    ) -> Callable[[asyncpg.Connection], Awaitable[FanoutPage]]:
        enabled = set(channels)
        throttles = throttles or {}
        after_user, end_user = page_range(after_user, segment)

        async def op(conn: asyncpg.Connection) -> FanoutPage:
            rows = await conn.fetch(
                "SELECT s.user_id, s.channels, u.name, u.email, u.phone, u.push_token,"
                " u.timezone, s.schedule, u.quiet_hours"
                " FROM subscriptions s JOIN users u ON u.id = s.user_id"
                " WHERE s.category_id = $1 AND s.user_id > $2"
                " AND ($4::text IS NULL OR s.user_id <= $4)"
                " ORDER BY s.user_id LIMIT $3",
                message.category_id,
                after_user or "",
                limit,
                end_user,
            )
            registered = (
                await registered_in_page(conn, message.category_id, after_user, rows[-1][0])
                if rows
                else {}
            )
            now = self._now()
            recent = await recent_counts(conn, [row[0] for row in rows], throttles, now)
            plan = plan_page(
                message,
                [Subscriber(*r) for r in rows],
                enabled=enabled,
                owner=owner,
                throttles=throttles,
                registered=registered,
                recent=recent,
                now=now,
                partitions=partitions,
            )
            deliveries = [
                (d.id, d.user_id, d.channel, d.status.value, d.recipient, d.error, d.owner,
                 d.mode, d.not_before, d.note)
                for d in plan.deliveries
            ]  # fmt: skip
            via = plan.via
            if deliveries:
                await _insert_deliveries(conn, message.id, now, deliveries)
            done = len(rows) < limit
            last = rows[-1][0] if rows else after_user
            if segment is None:
                await conn.execute(
                    "UPDATE messages SET fanout_cursor = $1, fanout_done = $2 WHERE id = $3",
                    last,
                    done,
                    message.id,
                )
            else:
                await _segment_page_done(conn, message.id, segment.seq, last, done)
            if rows:  # the last step: it holds the inbox lock until commit
                await _insert_inbox(conn, message, [row[0] for row in rows], via)
            return FanoutPage(plan.tasks, plan.skipped, last, done)

        return op

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Record attempts. A final outcome frees the delivery of its owner; a queued one
        (a transient failure) stays with its node and may not be claimed by another
        before ``not_before``."""
        if not outcomes:
            return
        now = self._now()
        latest = {o.delivery_id: o for o in outcomes}  # as one UPDATE after another would
        singles: list[tuple[Any, ...]] = []
        digests: list[tuple[Any, ...]] = []
        for o in sorted(latest.values(), key=lambda o: o.delivery_id):  # one lock order
            at = o.at or now
            retrying = o.status is DeliveryStatus.QUEUED
            row = (
                o.delivery_id,
                o.status.value,
                o.attempts,
                o.provider,
                o.provider_message_id,
                o.recipient,
                o.subject,
                o.text,
                o.error,
                at,
                at if o.status is DeliveryStatus.SENT else None,
                at + timedelta(seconds=o.retry_after or 0) if retrying else None,
            )
            (digests if o.delivery_id.startswith(DIGEST_PREFIX) else singles).append(row)

        async def op(conn: asyncpg.Connection) -> None:
            if singles:
                await conn.execute(
                    "UPDATE deliveries d SET status = o.status, attempts = o.attempts,"
                    " provider = o.provider, provider_message_id = o.provider_message_id,"
                    " recipient = coalesce(o.recipient, d.recipient), subject = o.subject,"
                    " text = o.text, error = o.error, updated_at = o.at, sent_at = o.sent_at,"
                    " not_before = o.not_before,"
                    " owner = CASE WHEN o.status = 'queued' THEN d.owner END"
                    f" FROM {OUTCOMES} WHERE d.id = o.id",
                    *zip(*singles, strict=True),
                )
            if digests:
                await record_digests(conn, list(zip(*digests, strict=True)))

        await self._in_transaction(op)

    # -- work distribution ------------------------------------------------------------

    async def heartbeat(self, node_id: str) -> None:
        await self._pool.execute(
            "INSERT INTO nodes (id, started_at, heartbeat_at) VALUES ($1, $2, $2)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            node_id,
            self._now(),
        )

    async def release(self, node_id: str) -> None:
        async def op(conn: asyncpg.Connection) -> None:
            await _release(conn, [node_id])

        await self._in_transaction(op)

    async def release_dead(self, silent_since: datetime) -> list[str]:
        async def op(conn: asyncpg.Connection) -> list[str]:
            # SKIP LOCKED: a node another caller is releasing right now is theirs.
            rows = await conn.fetch(
                "SELECT id FROM nodes WHERE heartbeat_at < $1 ORDER BY id FOR UPDATE SKIP LOCKED",
                silent_since,
            )
            dead = [row[0] for row in rows]
            if dead:
                await _release(conn, dead)
            # Work can also name an owner with no heartbeat row at all (declared dead
            # while it still ran, then gone): hand that back too.
            # Owners first, then the living: a node that starts in between is living.
            owners = await _owners(conn)
            live = {row[0] for row in await conn.fetch("SELECT id FROM nodes")}
            orphaned = sorted(o for o in owners if o not in live)
            if orphaned:
                await _release(conn, orphaned)
            return dead + orphaned

        return await self._in_transaction(op)

    async def split_fanout(
        self, message: Message, after_user: str | None, size: int, owner: str
    ) -> Segment | None:
        # Where the segments begin and end is read before the transaction: any rising
        # ids divide the audience into ranges that miss and repeat no one, however it
        # changes meanwhile.
        ends = await self._segment_ends(message.category_id, after_user, size)
        if not ends:
            return None

        async def op(conn: asyncpg.Connection) -> Segment | None:
            status = await conn.execute(
                "UPDATE messages SET fanout_split = true, fanout_owner = NULL"
                " WHERE id = $1 AND NOT fanout_split AND NOT fanout_done AND fanout_owner = $2"
                " AND coalesce(fanout_cursor, '') = $3",
                message.id,
                owner,
                after_user or "",
            )
            if _rowcount(status) == 0:
                return None
            segments = segments_of(after_user, ends)
            await conn.executemany(
                "INSERT INTO fanout_segments (message_id, seq, start_user, end_user, owner)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(message.id, s.seq, s.start, s.end, owner if s.seq == 0 else None)
                 for s in segments],
            )  # fmt: skip
            await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)
            return segments[0]

        return await self._in_transaction(op)

    async def _segment_ends(self, category_id: str, after_user: str | None, size: int) -> list[str]:
        """Every ``size``-th subscriber after ``after_user``, while more are left after
        it: where the segments of a split end (the last one runs to the end)."""
        ends: list[str] = []
        last = after_user or ""
        while True:
            rows = await self._fetch(
                "SELECT user_id FROM subscriptions WHERE category_id = $1 AND user_id > $2"
                " ORDER BY user_id LIMIT 2 OFFSET $3",
                category_id,
                last,
                size - 1,
            )
            if len(rows) < 2:
                return ends
            last = rows[0][0]
            ends.append(last)

    async def claim_segments(
        self, node_id: str, limit: int
    ) -> list[tuple[Message, Segment, str | None]]:
        rows = await self._fetch(
            "WITH picked AS (SELECT s.message_id, s.seq FROM fanout_segments s"
            " JOIN messages m ON m.id = s.message_id WHERE NOT s.done AND s.owner IS NULL"
            " ORDER BY m.accepted_at, s.message_id, s.seq LIMIT $2"
            " FOR UPDATE OF s SKIP LOCKED),"
            " claimed AS (UPDATE fanout_segments s SET owner = $1 FROM picked"
            " WHERE s.message_id = picked.message_id AND s.seq = picked.seq RETURNING s.*)"
            f" SELECT {_MESSAGE_COLUMNS}, c.seq, c.start_user, c.end_user, c.cursor"
            " FROM claimed c JOIN messages m ON m.id = c.message_id"
            " ORDER BY m.accepted_at, c.message_id, c.seq",
            node_id,
            limit,
        )
        return [(_message(row), Segment(row[8], row[9], row[10]), row[11]) for row in rows]

    async def claim_fanouts(self, node_id: str, limit: int) -> list[tuple[Message, str | None]]:
        rows = await self._fetch(
            "WITH picked AS (SELECT id FROM messages WHERE NOT fanout_done"
            " AND fanout_owner IS NULL AND NOT fanout_split"
            " AND (deliver_at IS NULL OR deliver_at <= $3)"
            " ORDER BY accepted_at, id LIMIT $2 FOR UPDATE SKIP LOCKED),"
            " claimed AS (UPDATE messages m SET fanout_owner = $1 FROM picked"
            " WHERE m.id = picked.id RETURNING m.*)"
            f" SELECT {_MESSAGE_COLUMNS}, m.fanout_cursor FROM claimed m"
            " ORDER BY m.accepted_at, m.id",
            node_id,
            limit,
            self._now(),
        )
        return [(_message(row), row[8]) for row in rows]

    async def claim_deliveries(self, node_id: str, limit: int) -> list[DeliveryTask]:
        rows = await self._fetch(
            "WITH picked AS (SELECT id FROM deliveries WHERE status = 'queued'"
            " AND owner IS NULL AND mode = 'immediate'"
            " AND (not_before IS NULL OR not_before <= $2)"
            " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED),"
            " claimed AS (UPDATE deliveries d SET owner = $1 FROM picked"
            " WHERE d.id = picked.id RETURNING d.*)"
            f" SELECT {_TASK_COLUMNS} FROM claimed d {_TASK_JOINS} ORDER BY d.id",
            node_id,
            self._now(),
            limit,
        )
        return _tasks(rows)

    async def claim_digests(self, node_id: str, limit: int) -> list[DeliveryTask]:
        """Claim due digests: ones waiting for a node (a retry, a dead node's), and new
        ones made of each (user, channel)'s collected deliveries that are due now. Every
        due item of a user and channel goes into one digest, however many slots passed
        while no node was running."""
        now = self._now()

        async def op(conn: asyncpg.Connection) -> list[DeliveryTask]:
            return await claim_digests(conn, node_id, now, limit)

        return await self._in_transaction(op)

    async def reschedule_collected(
        self, user_id: str, category_id: str, not_before: datetime
    ) -> int:
        """Move the due time of what is collected for a user's digest of a category (the
        user changed the schedule or their time zone)."""
        status = await self._pool.execute(
            "UPDATE deliveries SET not_before = $1 WHERE user_id = $2 AND mode = 'digest'"
            " AND status = 'queued' AND digest_id IS NULL AND note IS NULL"
            " AND message_id IN (SELECT id FROM messages WHERE category_id = $3)",
            not_before,
            user_id,
            category_id,
        )
        return _rowcount(status)

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (the port)
        """Return when another node told of unowned work, or after ``timeout`` anyway."""
        if self._listener is None or self._listener.is_closed():
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await asyncio.sleep(timeout)  # the database is away: poll
            return  # news may have come while nobody listened: look at once
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._news.wait(), timeout)
        self._news.clear()

    async def _listen(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        listener = await asyncpg.connect(self._dsn)
        try:
            await listener.add_listener(WORK_CHANNEL, self._heard)
        except BaseException:
            await listener.close()
            raise
        self._listener = listener

    def _heard(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self._news.set()

    async def unfinished_fanouts(self) -> list[tuple[Message, str | None]]:
        rows = await self._fetch(
            f"SELECT {_MESSAGE_COLUMNS}, m.fanout_cursor FROM messages m"
            " WHERE NOT m.fanout_done AND NOT m.fanout_split ORDER BY m.accepted_at"
        )
        return [(_message(row), row[8]) for row in rows]

    async def queued_tasks(self, after_id: str | None, limit: int) -> list[DeliveryTask]:
        rows = await self._fetch(
            f"SELECT {_TASK_COLUMNS} FROM deliveries d {_TASK_JOINS}"
            " WHERE d.status = 'queued' AND d.id > $1 ORDER BY d.id LIMIT $2",
            after_id or "",
            limit,
        )
        return _tasks(rows)

    # -- inbox --------------------------------------------------------------------

    async def list_notifications(
        self, user_id: str, *, unread_only: bool, limit: int, before: str | None
    ) -> list[Notification]:
        await self.get_user(user_id)
        sql = f"SELECT {NOTIFICATION_COLUMNS} FROM inbox WHERE user_id = $1"
        params: list[Any] = [user_id]
        if unread_only:
            sql += " AND read_at IS NULL"
        if before is not None:
            row = await self._fetchrow(
                "SELECT seq FROM inbox WHERE id = $1 AND user_id = $2", before, user_id
            )
            if row is None:
                raise NotFound(f"no notification {before!r}", code="notification_not_found")
            params.append(row[0])
            sql += f" AND seq < ${len(params)}"
        params.append(limit)
        sql += f" ORDER BY seq DESC LIMIT ${len(params)}"
        return [notification_row(row, _same) for row in await self._fetch(sql, *params)]

    async def mark_read(self, user_id: str, notification_id: str) -> Notification:
        row = await self._fetchrow(
            "UPDATE inbox SET read_at = coalesce(read_at, $1) WHERE id = $2 AND user_id = $3"
            f" RETURNING {NOTIFICATION_COLUMNS}",
            self._now(),
            notification_id,
            user_id,
        )
        if row is None:
            raise NotFound(f"no notification {notification_id!r}", code="notification_not_found")
        return notification_row(row, _same)

    async def mark_all_read(self, user_id: str) -> int:
        await self.get_user(user_id)
        status = await self._pool.execute(
            "UPDATE inbox SET read_at = $1 WHERE user_id = $2 AND read_at IS NULL",
            self._now(),
            user_id,
        )
        return _rowcount(status)


async def _insert_deliveries(
    conn: asyncpg.Connection, message_id: str, now: datetime, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert (id, user_id, channel, status, recipient, error, owner, mode, not_before,
    note) rows; a row that is there already (a fan-out run again) stays as it is."""
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        "INSERT INTO deliveries (id, message_id, user_id, channel, status, recipient, error,"
        " owner, mode, not_before, note, created_at, updated_at)"
        " SELECT d.id, $1, d.user_id, d.channel, d.status, d.recipient, d.error, d.owner,"
        " d.mode, d.not_before, d.note, $2, $2 FROM unnest($3::text[], $4::text[],"
        " $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],"
        " $11::timestamptz[], $12::text[]) AS d(id, user_id, channel, status, recipient,"
        " error, owner, mode, not_before, note) ON CONFLICT (id) DO NOTHING",
        message_id,
        now,
        *columns,
    )


async def _insert_inbox(
    conn: asyncpg.Connection, message: Message, user_ids: list[str], via: list[str | None]
) -> None:
    """The users' inbox entries of a message, numbered in commit order (see
    ``postgres_feed``): the lock is held until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", INBOX_LOCK)
    await conn.execute(
        "INSERT INTO inbox (id, user_id, message_id, category_id, title, body, priority,"
        " created_at, via) SELECT i.id, i.user_id, $1, $2, $3, $4, $5, $6, i.via"
        " FROM unnest($7::text[], $8::text[], $9::text[]) AS i(id, user_id, via)"
        " ORDER BY i.user_id ON CONFLICT (id) DO NOTHING",
        message.id,
        message.category_id,
        message.title,
        message.body,
        message.priority.value,
        message.accepted_at,  # stable across a re-run fan-out
        [notification_id(message.id, user_id) for user_id in user_ids],
        user_ids,
        via,
    )


async def _segment_page_done(
    conn: asyncpg.Connection, message_id: str, seq: int, cursor: str | None, done: bool
) -> None:
    """Move a segment's cursor; the last segment to finish finishes the fan-out."""
    if done:
        # Segments finishing at once in other transactions wait here, one at a time,
        # so that each sees what the others finished.
        await conn.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", message_id)
    await conn.execute(
        "UPDATE fanout_segments SET cursor = $1, done = $2 WHERE message_id = $3 AND seq = $4",
        cursor,
        done,
        message_id,
        seq,
    )
    if done:
        await conn.execute(
            "UPDATE messages SET fanout_done = true WHERE id = $1 AND NOT EXISTS"
            " (SELECT 1 FROM fanout_segments WHERE message_id = $1 AND NOT done)",
            message_id,
        )


async def _owners(conn: asyncpg.Connection) -> set[str]:
    """Every node named as the owner of unfinished work, jumping from owner to owner
    along the indexes (a loose index scan), so the cost follows the number of owners."""
    owners: set[str] = set()
    for table, column, unfinished in (
        ("deliveries", "owner", "status = 'queued'"),
        ("digests", "owner", "status = 'queued'"),
        ("messages", "fanout_owner", "NOT fanout_done"),
        ("fanout_segments", "owner", "NOT done"),
    ):
        last = ""
        while True:
            found = await conn.fetchval(
                f"SELECT {column} FROM {table} WHERE {unfinished} AND {column} > $1"
                f" ORDER BY {column} LIMIT 1",
                last,
            )
            if found is None:
                break
            last = found
            owners.add(found)
    return owners


async def _release(conn: asyncpg.Connection, node_ids: Sequence[str]) -> None:
    """Hand the nodes' queued deliveries and unfinished fan-outs back to everyone."""
    deliveries = await conn.execute(
        "UPDATE deliveries SET owner = NULL WHERE status = 'queued' AND owner = ANY($1::text[])",
        node_ids,
    )
    fanouts = await conn.execute(
        "UPDATE messages SET fanout_owner = NULL WHERE NOT fanout_done"
        " AND fanout_owner = ANY($1::text[])",
        node_ids,
    )
    segments = await conn.execute(
        "UPDATE fanout_segments SET owner = NULL WHERE NOT done AND owner = ANY($1::text[])",
        node_ids,
    )
    digests = await conn.execute(
        "UPDATE digests SET owner = NULL WHERE status = 'queued' AND owner = ANY($1::text[])",
        node_ids,
    )
    await conn.execute("DELETE FROM nodes WHERE id = ANY($1::text[])", node_ids)
    if _rowcount(deliveries) or _rowcount(fanouts) or _rowcount(segments) or _rowcount(digests):
        await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)


if TYPE_CHECKING:

    def _implements_the_ports(
        store: PostgresStore,
    ) -> tuple[Store, AddressBook, InboxFeed, OpsStore]:
        return store, store, store, store  # mypy checks PostgresStore against the ports here


def _same(value: Any) -> Any:
    """asyncpg already returns datetimes."""
    return value
