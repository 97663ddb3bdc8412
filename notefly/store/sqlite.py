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
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import structlog

from notefly.addresses import EndpointKind
from notefly.domain import (
    QUEUED,
    SENT,
    STATUS_VALUE,
    AudienceIds,
    Category,
    Delivery,
    DeliveryStatus,
    DeliveryTask,
    Message,
    Notification,
    Outcome,
    Recipient,
    Subscription,
    User,
    digest_id,
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
    WriteLockUse,
)
from notefly.schedule import Throttle
from notefly.store.fanout import (
    SEGMENT_STEP_BACK,
    Subscriber,
    new_tuple,
    page_range,
    plan_page,
    segments_of,
)
from notefly.store.migrations import migrate_sqlite
from notefly.store.rows import (
    DELIVERY_COLUMNS,
    NOTIFICATION_COLUMNS,
    USER_COLUMNS,
    delivery,
    notification_row,
    user_row,
)
from notefly.store.sqlite_addresses import SqliteAddressBook, registered_in_page
from notefly.store.sqlite_deadletters import SqliteDeadLetters
from notefly.store.sqlite_feed import SqliteInboxFeed
from notefly.store.sqlite_flight import (
    HOLD_AT_LEAST,
    OPEN_PAGES,
    OUTCOME_WIDTH,
    PAGE_STEP_BACK,
    Held,
    existing,
    held_row,
    insert_held,
    page_deliveries,
    page_key,
    pages_in_flight,
)
from notefly.store.sqlite_keys import SqliteKeys
from notefly.store.sqlite_ops import SqliteOpsMixin
from notefly.store.sqlite_personal import SqlitePersonalData
from notefly.store.sqlite_reads import one_snapshot, read_all, read_on
from notefly.store.sqlite_rows import (
    _MESSAGE_COLUMNS,
    _TASK_QUERY,
    _dt,
    _message,
    _tasks,
    _ts,
    task_address,
)
from notefly.store.turns import WriteTurns
from notefly.store.writer import GroupCommitWriter, SharedWrite, in_savepoint, write_rows

log = structlog.get_logger("notefly.store")
T = TypeVar("T")

IDEMPOTENCY_WINDOW = timedelta(hours=24)
CACHE_KIB = 32 * 1024  # page cache of each connection (writer and reader)
BUSY_TIMEOUT_MS = 10_000  # how long a write waits for another process's lock

# What each claim takes, shared by the look before it (``_finds``) and the claim itself.
# Each has one parameter, now, but the open segments, which have none.
_CLAIMABLE_FANOUTS = (
    "m.fanout_done = 0 AND m.fanout_owner IS NULL AND m.fanout_split = 0"
    " AND (m.deliver_at IS NULL OR m.deliver_at <= ?)"
)
_OPEN_SEGMENTS = "s.done = 0 AND s.owner IS NULL"
_CLAIMABLE_DELIVERIES = (
    "FROM deliveries INDEXED BY deliveries_claimable WHERE status = 'queued'"
    " AND owner IS NULL AND mode = 'immediate' AND (not_before IS NULL OR not_before <= ?)"
)
_CLAIMABLE_DIGESTS = (
    "FROM digests WHERE status = 'queued' AND owner IS NULL"
    " AND (not_before IS NULL OR not_before <= ?)"
)
_DUE_COLLECTED = (
    "FROM deliveries INDEXED BY deliveries_collected WHERE mode = 'digest'"
    " AND status = 'queued' AND digest_id IS NULL AND not_before <= ?"
)


class SqliteStore(
    SqliteAddressBook,
    SqliteInboxFeed,
    SqliteOpsMixin,
    SqliteDeadLetters,
    SqlitePersonalData,
    SqliteKeys,
):
    """The ``Store`` port on one SQLite file."""

    def __init__(
        self,
        writer_conn: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        clock: Clock,
        turns: WriteTurns,
    ) -> None:
        self._writer_conn = writer_conn
        self._reader = reader
        self._clock = clock
        self._turns = turns
        self.writer = GroupCommitWriter(
            writer_conn, lock_timeout=BUSY_TIMEOUT_MS / 1000, turns=turns
        )
        # The shards' rounds, recorded together while the writer is busy.
        self._outcomes = SharedWrite(self.writer, _record_outcomes)
        # Pages with fewer deliveries that go out at once are written whole.
        self.hold_at_least = HOLD_AT_LEAST
        # The deliveries of this node's pages in flight that have no row yet, by id
        # (see sqlite_flight). Added as a page is planned (before it commits: a page
        # planned again, or whose write failed, is the same page with the same ids),
        # taken out once the delivery's first outcome is written.
        self._in_flight: dict[str, Held] = {}
        # Categories are never changed nor removed once added: every publish looks its
        # category up, and a known one needs no trip to the reader thread.
        self._known_categories: dict[str, Category] = {}

    @classmethod
    async def open(cls, path: Path, clock: Clock, *, migrate: bool = True) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            async with _setup_lock(path):
                await writer.execute("PRAGMA journal_mode=WAL")
                if migrate:
                    await migrate_sqlite(writer)
            # From now on the writer waits for the write lock in GroupCommitWriter.
            await writer.execute("PRAGMA busy_timeout=0")
            # Every operation of a group transaction runs under a savepoint, whose
            # journal (the pages as they were) would otherwise spill to a temporary
            # file: a 4 KiB write for nearly every page a fan-out touches.
            await writer.execute("PRAGMA temp_store=MEMORY")
            reader = await _connect(path, "PRAGMA query_only=ON")
        except BaseException:
            await writer.close()
            raise
        try:
            # Named for the threads' CPU time, which is counted by name (notefly.threads).
            await read_on(writer, _thread_named("sqlite-writer"))
            await read_on(reader, _thread_named("sqlite-reader"))
            # The processes on this file take turns at its write lock (see WriteTurns).
            turns = WriteTurns(path.with_name(path.name + ".turns"))
        except BaseException:
            await reader.close()
            await writer.close()
            raise
        store = cls(writer, reader, clock, turns)
        store.writer.start()
        return store

    def write_lock_use(self) -> WriteLockUse:
        """What this process's writer spent waiting for the file's write lock and holding
        it (``SingleWriterStore``)."""
        times = self.writer.lock_times
        return WriteLockUse(times.waited, times.held, times.transactions)

    async def close(self) -> None:
        try:
            await self.writer.stop()
            # Keep the planner's statistics fresh (cheap; SQLite's advice on closing).
            with contextlib.suppress(sqlite3.Error):
                await self._writer_conn.execute("PRAGMA optimize")
        finally:
            await self._reader.close()
            await self._writer_conn.close()
            self._turns.close()

    async def ping(self) -> None:
        await self._one("SELECT 1")

    # -- helpers ----------------------------------------------------------------

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await read_all(self._reader, sql, params)

    async def _finds(self, sql: str, params: Sequence[Any] = ()) -> bool:
        """Whether ``sql`` finds a row, read outside the write lock: the look a claim
        takes before its write transaction. An idle node polls for each kind of work
        every ``poll_seconds``, and a claim of nothing would still take the write lock
        (and its turn) from the workers that have work. What appears just after the
        look is claimed at the next poll, as if it had appeared after the claim."""
        rows = await self._all(f"SELECT EXISTS ({sql})", params)
        return bool(rows[0][0])

    def _now(self) -> str:
        return self._clock.now().isoformat()

    # -- categories ---------------------------------------------------------------

    async def list_categories(self) -> list[Category]:
        rows = await self._all("SELECT id, name, description FROM categories ORDER BY name")
        return [Category(*row) for row in rows]

    async def get_category(self, category_id: str) -> Category:
        known = self._known_categories.get(category_id)
        if known is not None:
            return known
        row = await self._one(
            "SELECT id, name, description FROM categories WHERE id = ?", (category_id,)
        )
        if row is None:  # not remembered: it may be added later, by any process
            raise NotFound(f"no category {category_id!r}", code="category_not_found")
        category = self._known_categories[category_id] = Category(*row)
        return category

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
                f"INSERT INTO users ({USER_COLUMNS}, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user.id,
                    user.name,
                    user.email,
                    user.phone,
                    user.push_token,
                    user.timezone,
                    now,
                    user.quiet_hours,
                    now,
                ),
            )

        await self.writer.run(op)
        return user

    async def get_user(self, user_id: str) -> User:
        row = await self._one(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"no user {user_id!r}", code="user_not_found")
        return user_row(row, _dt)

    async def list_users(self, limit: int = 100) -> list[User]:
        rows = await self._all(
            f"SELECT {USER_COLUMNS} FROM users ORDER BY name, id LIMIT ?", (limit,)
        )
        return [user_row(row, _dt) for row in rows]

    async def update_user(self, user: User) -> User:
        async def op(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute(
                "UPDATE users SET name = ?, email = ?, phone = ?, push_token = ?, timezone = ?,"
                " quiet_hours = ?, updated_at = ? WHERE id = ?",
                (
                    user.name,
                    user.email,
                    user.phone,
                    user.push_token,
                    user.timezone,
                    user.quiet_hours,
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
            # Subscriptions and endpoints go by cascade; inbox, delivery and digest rows
            # hold personal data too (tests/contract/test_erasure_contract.py scans all).
            await conn.execute("DELETE FROM inbox WHERE user_id = ?", (user_id,))
            await conn.execute("DELETE FROM deliveries WHERE user_id = ?", (user_id,))
            await conn.execute("DELETE FROM digests WHERE user_id = ?", (user_id,))
            # A fan-out's cursor is the last user id of its page: step it back to the
            # user before (the next page is the same, since that one is gone).
            await conn.execute(
                "UPDATE messages SET fanout_cursor = (SELECT max(id) FROM users WHERE id < ?)"
                " WHERE fanout_cursor = ?",
                (user_id, user_id),
            )
            # Segments begin and end at user ids too: the user before covers the same
            # users now. A cursor never steps back out of its segment.
            for table, steps in (
                ("fanout_segments", SEGMENT_STEP_BACK),
                ("fanout_pages", PAGE_STEP_BACK),
            ):
                for column, floor in steps:
                    await conn.execute(
                        f"UPDATE {table} SET {column} = max(coalesce("
                        f"(SELECT max(id) FROM users WHERE id < ?), ''), {floor})"
                        f" WHERE {column} = ?",
                        (user_id, user_id),
                    )

        await self.writer.run(op)

    async def upsert_subscription(self, sub: Subscription) -> Subscription:
        stamped = replace(sub, updated_at=self._clock.now())

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO subscriptions (category_id, user_id, channels, updated_at, schedule)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (category_id, user_id)"
                " DO UPDATE SET channels = excluded.channels, updated_at = excluded.updated_at,"
                " schedule = excluded.schedule",
                (
                    sub.category_id,
                    sub.user_id,
                    ",".join(sub.channels),
                    _ts(stamped.updated_at),
                    sub.schedule,
                ),
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
                "INSERT INTO subscriptions (category_id, user_id, channels, updated_at, schedule)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (s.category_id, user_id, ",".join(s.channels), now.isoformat(), s.schedule)
                    for s in subs
                ],
            )

        await self.writer.run(op)
        return [replace(s, user_id=user_id, updated_at=now) for s in subs]

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
            "SELECT user_id, category_id, channels, updated_at, schedule FROM subscriptions"
            " WHERE user_id = ? ORDER BY category_id",
            (user_id,),
        )
        return [
            Subscription(row[0], row[1], tuple(row[2].split(",")), _dt(row[3]), row[4])
            for row in rows
        ]

    # -- messages -----------------------------------------------------------------

    async def accept_message(
        self, message: Message, *, owner: str | None = None
    ) -> tuple[Message, bool]:
        """Commit a message; with a known idempotency key, return the original instead.

        ``owner``: the node that fans it out. Returns the stored message and whether it
        was created now.
        """
        return await self.writer.run_sync(self._accept_op(message, owner), first=True)

    async def accept_with_page(
        self, message: Message, request: PageRequest, *, on_commit: OnCommit | None = None
    ) -> Accepted:
        accept = self._accept_op(message, request.owner)
        plan = request.plan_with(self._fanout_op, message)

        def op(conn: sqlite3.Connection) -> Accepted:
            stored, created = accept(conn)
            if not created:
                return Accepted(stored, False, None)
            return Accepted(stored, True, _first_page(conn, plan, message.id))

        # A publisher waits for this commit: it goes ahead of queued pages and outcomes.
        # ``on_commit`` runs on the writer thread, right after the commit.
        return await self.writer.run_sync(op, first=True, after_commit=on_commit)

    def _accept_op(
        self, message: Message, owner: str | None
    ) -> Callable[[sqlite3.Connection], tuple[Message, bool]]:
        def op(conn: sqlite3.Connection) -> tuple[Message, bool]:
            if message.idempotency_key is not None:
                # A key is one message for 24 hours; after that it is free again. The old
                # message keeps its key with its own id appended, for the record.
                conn.execute(
                    "UPDATE messages SET idempotency_key = idempotency_key || '#' || id"
                    " WHERE idempotency_key = ? AND accepted_at < ?",
                    (
                        message.idempotency_key,
                        (message.accepted_at - IDEMPOTENCY_WINDOW).isoformat(),
                    ),
                )
            cursor = conn.execute(
                "INSERT INTO messages (id, category_id, title, body, data, priority,"
                " idempotency_key, accepted_at, fanout_owner, deliver_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
                    owner,
                    _ts(message.deliver_at),
                ),
            )
            if cursor.rowcount == 1:
                return message, True
            cursor = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.idempotency_key = ?",
                (message.idempotency_key,),
            )
            row = cursor.fetchone()
            assert row is not None  # the conflict says it is there
            return _message(row), False

        return op

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
        # In one statement, so in one snapshot: a delivery of a page in flight counts
        # as queued until its outcome writes its row.
        rows = await self._all(
            "SELECT status, count(*) FROM deliveries WHERE message_id = ? GROUP BY status"
            " UNION ALL SELECT 'queued', sum(pending) FROM fanout_pages WHERE message_id = ?",
            (message_id, message_id),
        )
        counts: Counter[str] = Counter()
        for status, count in rows:
            if count:
                counts[status] += count
        return DeliveryCounts(fanout_done=bool(row[0]), by_status=dict(counts))

    async def list_deliveries(self, message_id: str) -> list[Delivery]:
        """Every delivery of the message: its rows, and those of its pages in flight
        (queued, without a row yet: see ``sqlite_flight.page_deliveries``)."""
        await self.get_message(message_id)

        def read(conn: sqlite3.Connection) -> list[Delivery]:
            with one_snapshot(conn):  # the rows and the pages
                rows = conn.execute(
                    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ?",
                    (message_id,),
                ).fetchall()
                flying = [
                    d for page in pages_in_flight(conn, message_id)
                    for d in page_deliveries(conn, page)
                ]  # fmt: skip
            return [delivery(row, _dt) for row in rows] + flying

        listed = await self._read_sync(read)
        return sorted(listed, key=lambda d: (d.user_id, d.channel))

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

        The page is read and planned on the reader connection, outside the write lock,
        and written only if the audience has not changed since (``audience_version``,
        counted by triggers on users, subscriptions and endpoints); otherwise it is
        planned again inside the write transaction. A throttle counts deliveries that
        any transaction may add, so a page with one is always planned inside.
        """
        enabled = set(channels)
        full = self._fanout_op(
            message,
            after_user,
            limit,
            channels,
            owner=owner,
            throttles=throttles,
            partitions=partitions,
            segment=segment,
        )
        if throttles:
            return await self.writer.run_sync(full)
        after, end = page_range(after_user, segment)

        def read(conn: sqlite3.Connection) -> tuple[int, _PlannedPage]:
            with one_snapshot(conn):  # the version and the page
                (version,) = conn.execute("SELECT n FROM audience_version").fetchone()
                rows, registered = _read_page(conn, message.category_id, after, end, limit)
            return version, self._plan_page(
                message, rows, registered, after, limit, enabled, owner, {}, Counter(),
                partitions, hold=_may_hold(throttles, segment),
            )  # fmt: skip

        version, planned = await self._read_sync(read)

        def write(conn: sqlite3.Connection) -> FanoutPage:
            (now,) = conn.execute("SELECT n FROM audience_version").fetchone()
            if now != version:  # the audience changed meanwhile: plan it afresh
                for gone in planned.held:  # the plan again holds those still in it
                    self._in_flight.pop(gone, None)
                return full(conn)
            return _write_page(conn, message.id, planned, segment)

        return await self.writer.run_sync(write)

    async def _read_sync(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``read`` on the reader connection's thread, in one step (``read_on``)."""
        return await read_on(self._reader, read)

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
    ) -> Callable[[sqlite3.Connection], FanoutPage]:
        """The page read, planned and written in the write transaction."""
        enabled = set(channels)
        throttles = throttles or {}
        after, end = page_range(after_user, segment)
        hold = _may_hold(throttles, segment)

        def op(conn: sqlite3.Connection) -> FanoutPage:
            rows, registered = _read_page(conn, message.category_id, after, end, limit)
            recent = _recent_counts(conn, rows, throttles, self._clock.now())
            planned = self._plan_page(
                message, rows, registered, after, limit, enabled, owner, throttles, recent,
                partitions, hold=hold,
            )  # fmt: skip
            return _write_page(conn, message.id, planned, segment)

        return op

    def _plan_page(
        self,
        message: Message,
        rows: list[Any],
        registered: Mapping[str, Mapping[EndpointKind, int]],
        after_user: str | None,
        limit: int,
        enabled: set[str],
        owner: str | None,
        throttles: Mapping[str, Throttle],
        recent: Counter[tuple[str, str]],
        partitions: int,
        *,
        hold: bool,
    ) -> _PlannedPage:
        """``hold``: keep the deliveries that go out now in flight (sqlite_flight)
        rather than write them as queued."""
        clock_now = self._clock.now()
        now = clock_now.isoformat()
        plan = plan_page(
            message,
            [_subscriber(r) for r in rows],
            enabled=enabled,
            owner=owner,
            throttles=throttles,
            registered=registered,
            recent=recent,
            now=clock_now,
            partitions=partitions,
        )
        hold = hold and owner is not None and len(plan.tasks) >= self.hold_at_least
        page = page_key(message.id, after_user or "") if hold else None
        delivery_rows = []
        held = []
        in_flight = self._in_flight
        mid = message.id
        # Unpacked rather than read by name: thousands of deliveries a page.
        for (
            did,
            user_id,
            channel,
            status,
            to,
            error,
            sender,
            mode,
            not_before,
            note,
        ) in plan.deliveries:
            if page is not None and sender is not None:  # it goes out now
                fields = (page, mid, user_id, channel, to, now, sender, mode, note)
                in_flight[did] = new_tuple(Held, fields)
                held.append(did)
                continue
            delivery_rows.append(
                (did, mid, user_id, channel, STATUS_VALUE[status], to, error, now, sender, mode,
                 _ts(not_before), note, now)
            )  # fmt: skip
        ids = AudienceIds(message.id)
        accepted_at = message.accepted_at.isoformat()  # stable across a re-run fan-out
        # The same for every entry of the message: read once, not once a subscriber
        # (the priority's ``.value`` alone took about 0.4 us).
        category, title, body = message.category_id, message.title, message.body
        priority = message.priority.value
        notification = ids.notification
        inbox_rows = [
            (notification(r[0]), r[0], mid, category, title, body, priority, accepted_at, via)
            for r, via in zip(rows, plan.via, strict=True)
        ]
        done = len(rows) < limit
        last = rows[-1][0] if rows else after_user
        flight = (page, after_user or "", last, owner, len(held), now) if held else None
        return _PlannedPage(
            delivery_rows,
            inbox_rows,
            FanoutPage(plan.tasks, plan.skipped, last, done),
            flight,
            held,
        )

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Record attempts. A final outcome frees the delivery of its owner; a queued one
        (a transient failure) stays with its node and may not be claimed by another
        before ``not_before``."""
        if not outcomes:
            return
        now = self._clock.now()
        rows: list[tuple[Any, ...]] = []
        in_flight = self._in_flight
        inserted = []
        last_at, stamp = None, ""
        for o in outcomes:
            at = o.at or now
            if at is not last_at:  # about 0.8 us each; a round's sends share one time
                last_at, stamp = at, at.isoformat()
            status = o.status
            retrying = status is QUEUED
            not_before = at + timedelta(seconds=o.retry_after or 0) if retrying else None
            held = in_flight.get(o.delivery_id)
            if held is not None:  # of a page in flight: its row comes with this outcome
                rows.append(held_row(held, o, stamp, _ts(not_before), retrying))
                inserted.append(o.delivery_id)
                continue
            rows.append(
                (
                    STATUS_VALUE[status],
                    o.attempts,
                    o.provider,
                    o.provider_message_id,
                    o.recipient,
                    o.subject,
                    o.text,
                    o.error,
                    stamp,
                    stamp if status is SENT else None,
                    _ts(not_before),
                    int(retrying),
                    o.delivery_id,
                )
            )
        await self._outcomes.add(rows)
        for written in inserted:  # their next outcomes update their rows
            in_flight.pop(written, None)

    # -- work distribution ------------------------------------------------------------

    async def heartbeat(self, node_id: str) -> None:
        now = self._now()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO nodes (id, started_at, heartbeat_at) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (node_id, now, now),
            )

        await self.writer.run_sync(op)

    async def release(self, node_id: str) -> None:
        await self.writer.run_sync(lambda conn: _release(conn, [node_id]))

    async def release_dead(self, silent_since: datetime) -> list[str]:
        since = silent_since.isoformat()

        def dead_and_orphaned(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
            cursor = conn.execute("SELECT id FROM nodes WHERE heartbeat_at < ?", (since,))
            dead = [row[0] for row in cursor.fetchall()]
            # Work can also name an owner with no heartbeat row at all (declared dead
            # while it still ran, then gone): hand that back too.
            # Owners first, then the living: a node that starts in between is living.
            owners = _owners(conn)
            cursor = conn.execute("SELECT id FROM nodes")
            live = {row[0] for row in cursor.fetchall()}
            return dead, sorted(o for o in owners if o not in live)

        # Every node asks at every heartbeat, and nearly always no node is dead: look on
        # the reader first, as the claims do, and take the write lock only if one is.
        if not any(await self._read_sync(dead_and_orphaned)):
            return []

        def op(conn: sqlite3.Connection) -> list[str]:
            dead, orphaned = dead_and_orphaned(conn)  # again, under the lock
            if dead:
                _release(conn, dead)
            if orphaned:
                _release(conn, orphaned)
            return dead + orphaned

        return await self.writer.run_sync(op)

    async def split_fanout(
        self, message: Message, after_user: str | None, size: int, owner: str
    ) -> Segment | None:
        # Where the segments begin and end is read outside the write lock: any rising
        # ids divide the audience into ranges that miss and repeat no one, however it
        # changes meanwhile.
        def read(conn: sqlite3.Connection) -> list[str]:
            return _segment_ends(conn, message.category_id, after_user, size)

        ends = await self._read_sync(read)
        if not ends:
            return None

        def op(conn: sqlite3.Connection) -> Segment | None:
            cursor = conn.execute(
                "UPDATE messages SET fanout_split = 1, fanout_owner = NULL"
                " WHERE id = ? AND fanout_split = 0 AND fanout_done = 0 AND fanout_owner = ?"
                " AND coalesce(fanout_cursor, '') = ?",
                (message.id, owner, after_user or ""),
            )
            if cursor.rowcount == 0:
                return None
            segments = segments_of(after_user, ends)
            conn.executemany(
                "INSERT INTO fanout_segments (message_id, seq, start_user, end_user, owner)"
                " VALUES (?, ?, ?, ?, ?)",
                [(message.id, s.seq, s.start, s.end, owner if s.seq == 0 else None)
                 for s in segments],
            )  # fmt: skip
            return segments[0]

        return await self.writer.run_sync(op)

    async def claim_segments(
        self, node_id: str, limit: int
    ) -> list[tuple[Message, Segment, str | None]]:
        if not await self._finds(
            f"SELECT 1 FROM fanout_segments s WHERE {_OPEN_SEGMENTS} UNION ALL {OPEN_PAGES}"
        ):
            return []

        def op(conn: sqlite3.Connection) -> list[tuple[Message, Segment, str | None]]:
            cursor = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS}, s.seq, s.start_user, s.end_user, s.cursor"
                " FROM fanout_segments s JOIN messages m ON m.id = s.message_id"
                f" WHERE {_OPEN_SEGMENTS}"
                " ORDER BY m.accepted_at, s.message_id, s.seq LIMIT ?",
                (limit,),
            )
            rows = list(cursor.fetchall())
            conn.executemany(
                "UPDATE fanout_segments SET owner = ? WHERE message_id = ? AND seq = ?",
                [(node_id, row[0], row[8]) for row in rows],
            )
            claimed = [(_message(row), Segment(row[8], row[9], row[10]), row[11]) for row in rows]
            return claimed + _claim_pages(conn, node_id, limit - len(claimed))

        return await self.writer.run_sync(op)

    async def claim_fanouts(self, node_id: str, limit: int) -> list[tuple[Message, str | None]]:
        now = self._now()
        if not await self._finds(f"SELECT 1 FROM messages m WHERE {_CLAIMABLE_FANOUTS}", (now,)):
            return []

        # The writer runs one operation at a time, so select-then-update cannot race
        # with another claim in this process; other processes wait on the write lock.
        def op(conn: sqlite3.Connection) -> list[tuple[Message, str | None]]:
            cursor = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS}, m.fanout_cursor FROM messages m"
                f" WHERE {_CLAIMABLE_FANOUTS} ORDER BY m.accepted_at LIMIT ?",
                (now, limit),
            )
            rows = list(cursor.fetchall())
            conn.executemany(
                "UPDATE messages SET fanout_owner = ? WHERE id = ?",
                [(node_id, row[0]) for row in rows],
            )
            return [(_message(row), row[8]) for row in rows]

        return await self.writer.run_sync(op)

    async def claim_deliveries(self, node_id: str, limit: int) -> list[DeliveryTask]:
        now = self._now()
        if not await self._finds(f"SELECT 1 {_CLAIMABLE_DELIVERIES}", (now,)):
            return []

        def op(conn: sqlite3.Connection) -> list[DeliveryTask]:
            # Along the index of what is claimable: a digest slot collects many queued,
            # unowned deliveries that only a digest claim takes.
            cursor = conn.execute(
                f"{_TASK_QUERY} WHERE d.id IN (SELECT id {_CLAIMABLE_DELIVERIES}"
                " ORDER BY id LIMIT ?) ORDER BY d.id",
                (now, limit),
            )
            rows = list(cursor.fetchall())
            conn.executemany(
                "UPDATE deliveries SET owner = ? WHERE id = ?", [(node_id, r[0]) for r in rows]
            )
            return _tasks(rows)

        return await self.writer.run_sync(op)

    async def claim_digests(self, node_id: str, limit: int) -> list[DeliveryTask]:
        """Claim due digests: ones waiting for a node (a retry, a dead node's), and new
        ones made of each (user, channel)'s collected deliveries that are due now. Every
        due item of a user and channel goes into one digest, however many slots passed
        while no node was running."""
        now = self._now()
        if not await self._finds(
            f"SELECT 1 {_CLAIMABLE_DIGESTS} UNION ALL SELECT 1 {_DUE_COLLECTED}", (now, now)
        ):
            return []

        def op(conn: sqlite3.Connection) -> list[DeliveryTask]:
            cursor = conn.execute(
                f"SELECT id {_CLAIMABLE_DIGESTS} ORDER BY id LIMIT ?", (now, limit)
            )
            ids = [row[0] for row in cursor.fetchall()]
            conn.executemany(
                "UPDATE digests SET owner = ? WHERE id = ?", [(node_id, i) for i in ids]
            )
            # The first (user, channel) pairs found along the index of what is collected
            # and unclaimed: a GROUP BY over every delivery would walk past all that
            # earlier claims took, batch after batch (quadratic in a big slot).
            cursor = conn.execute(
                f"SELECT DISTINCT user_id, channel {_DUE_COLLECTED} LIMIT ?",
                (now, limit - len(ids)),
            )
            for user_id, channel in cursor.fetchall():
                first, count = conn.execute(
                    "SELECT min(id), count(*) FROM deliveries WHERE user_id = ? AND channel = ?"
                    " AND mode = 'digest' AND status = 'queued' AND digest_id IS NULL"
                    " AND not_before <= ?",
                    (user_id, channel, now),
                ).fetchone()
                gid = digest_id(user_id, channel, first)
                conn.execute(
                    "UPDATE deliveries SET digest_id = ?, owner = ? WHERE user_id = ?"
                    " AND channel = ? AND mode = 'digest' AND status = 'queued'"
                    " AND digest_id IS NULL AND not_before <= ?",
                    (gid, node_id, user_id, channel, now),
                )
                conn.execute(
                    "INSERT INTO digests (id, user_id, channel, status, owner, items,"
                    " created_at, updated_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner,"
                    " items = digests.items + excluded.items",
                    (gid, user_id, channel, node_id, count, now, now),
                )
                ids.append(gid)
            messages: dict[str, Message] = {}
            return [_digest_task(conn, gid, messages) for gid in ids]

        return await self.writer.run_sync(op)

    async def reschedule_collected(
        self, user_id: str, category_id: str, not_before: datetime
    ) -> int:
        """Move the due time of what is collected for a user's digest of a category (the
        user changed the schedule or their time zone)."""

        async def op(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(
                "UPDATE deliveries SET not_before = ? WHERE user_id = ? AND mode = 'digest'"
                " AND status = 'queued' AND digest_id IS NULL AND note IS NULL"
                " AND message_id IN (SELECT id FROM messages WHERE category_id = ?)",
                (not_before.isoformat(), user_id, category_id),
            )
            return cursor.rowcount

        return await self.writer.run(op)

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (the port)
        # SQLite has no notifications between processes: the caller polls.
        await asyncio.sleep(timeout)

    async def unfinished_fanouts(self) -> list[tuple[Message, str | None]]:
        rows = await self._all(
            f"SELECT {_MESSAGE_COLUMNS}, m.fanout_cursor FROM messages m"
            " WHERE m.fanout_done = 0 AND m.fanout_split = 0 ORDER BY m.accepted_at"
        )
        return [(_message(row), row[8]) for row in rows]

    async def queued_tasks(self, after_id: str | None, limit: int) -> list[DeliveryTask]:
        rows = await self._all(
            f"{_TASK_QUERY} WHERE d.status = 'queued' AND d.id > ? ORDER BY d.id LIMIT ?",
            (after_id or "", limit),
        )
        return _tasks(rows)

    # -- inbox --------------------------------------------------------------------

    async def list_notifications(
        self, user_id: str, *, unread_only: bool, limit: int, before: str | None
    ) -> list[Notification]:
        await self.get_user(user_id)
        sql = f"SELECT {NOTIFICATION_COLUMNS} FROM inbox WHERE user_id = ?"
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
        return [notification_row(row, _dt) for row in await self._all(sql, params)]

    async def mark_read(self, user_id: str, notification_id: str) -> Notification:
        now = self._now()

        async def op(conn: aiosqlite.Connection) -> Notification:
            await conn.execute(
                "UPDATE inbox SET read_at = coalesce(read_at, ?) WHERE id = ? AND user_id = ?",
                (now, notification_id, user_id),
            )
            cursor = await conn.execute(
                f"SELECT {NOTIFICATION_COLUMNS} FROM inbox WHERE id = ? AND user_id = ?",
                (notification_id, user_id),
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(
                    f"no notification {notification_id!r}", code="notification_not_found"
                )
            return notification_row(row, _dt)

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


def _subscriber(row: Sequence[Any]) -> Subscriber:
    """A fan-out page row: user id, channels (comma-separated), name, email, phone, push
    token, time zone, schedule, quiet hours."""
    return new_tuple(Subscriber, (row[0], row[1].split(","), *row[2:]))


def _recent_counts(
    conn: sqlite3.Connection,
    rows: Sequence[Sequence[Any]],
    throttles: Mapping[str, Throttle],
    now: datetime,
) -> Counter[tuple[str, str]]:
    """Each (user, channel) of the page: its immediate deliveries within the throttle's
    period, which is all a throttle needs to remember (and survives restarts)."""
    counts: Counter[tuple[str, str]] = Counter()
    users = [row[0] for row in rows]
    for channel, throttle in throttles.items():
        for start in range(0, len(users), 500):
            chunk = users[start : start + 500]
            cursor = conn.execute(
                "SELECT user_id, count(*) FROM deliveries WHERE channel = ? AND mode = 'immediate'"
                f" AND status IN ('queued', 'sent') AND created_at >= ?"
                f" AND user_id IN ({', '.join('?' * len(chunk))}) GROUP BY user_id",
                (channel, (now - throttle.period).isoformat(), *chunk),
            )
            for user_id, count in cursor.fetchall():
                counts[(user_id, channel)] = count
    return counts


DIGEST_PREFIX = "g_"


def _digest_task(
    conn: sqlite3.Connection, gid: str, messages: dict[str, Message] | None = None
) -> DeliveryTask:
    """``messages``: those already read in this claim, by id (the digests of one slot
    mostly carry the same few messages; each is decoded once)."""
    known = {} if messages is None else messages
    cursor = conn.execute(
        "SELECT g.user_id, g.channel, g.attempts, u.name, u.email, u.phone, u.push_token,"
        " u.timezone FROM digests g LEFT JOIN users u ON u.id = g.user_id WHERE g.id = ?",
        (gid,),
    )
    row = cursor.fetchone()
    assert row is not None
    user_id, channel, attempts, name, email, phone, push_token, tz = row
    cursor = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.digest_id = ? ORDER BY m.accepted_at DESC, m.id DESC",
        (gid,),
    )
    items = tuple(known.get(r[0]) or known.setdefault(r[0], _message(r)) for r in cursor)
    user = User(user_id, name or "", email, phone, push_token, tz or "UTC")
    cursor = conn.execute(
        "SELECT recipient FROM deliveries WHERE digest_id = ? AND recipient IS NOT NULL LIMIT 1",
        (gid,),
    )
    recorded = cursor.fetchone()
    address = task_address(user, channel, recorded[0] if recorded else None)
    recipient = Recipient(user_id, user.name, address, user.timezone)
    return DeliveryTask(gid, items[0], channel, recipient, attempts=attempts, items=items)


def _segment_ends(
    conn: sqlite3.Connection, category_id: str, after_user: str | None, size: int
) -> list[str]:
    """Every ``size``-th subscriber after ``after_user``, while more are left after it:
    where the segments of a split end (the last one runs to the end)."""
    ends: list[str] = []
    last = after_user or ""
    while True:
        # The size-th user after the last end, and whether anyone comes after it.
        rows = conn.execute(
            "SELECT user_id FROM subscriptions WHERE category_id = ? AND user_id > ?"
            " ORDER BY user_id LIMIT 2 OFFSET ?",
            (category_id, last, size - 1),
        ).fetchall()
        if len(rows) < 2:
            return ends
        last = rows[0][0]
        ends.append(last)


@dataclass(frozen=True, slots=True)
class _PlannedPage:
    """A fan-out page as rows to write, and what it comes to once they are."""

    deliveries: list[tuple[Any, ...]]
    inbox: list[tuple[Any, ...]]
    page: FanoutPage
    # The fanout_pages row when the page holds deliveries in flight, and their ids.
    flight: tuple[Any, ...] | None = None
    held: list[str] = field(default_factory=list)


def _may_hold(throttles: Mapping[str, Throttle] | None, segment: Segment | None) -> bool:
    """Whether a page may keep its deliveries that go out at once in flight: not with
    a throttle (it counts rows), nor when it plans again a page that was in flight."""
    return not throttles and (segment is None or segment.replay is None)


def _read_page(
    conn: sqlite3.Connection,
    category_id: str,
    after_user: str | None,
    end_user: str | None,
    limit: int,
) -> tuple[list[Any], dict[str, dict[EndpointKind, int]]]:
    """The next ``limit`` subscribers after ``after_user`` (up to ``end_user``), with
    their users, and the endpoints they registered."""
    bounded = "" if end_user is None else " AND s.user_id <= ?"
    params: tuple[Any, ...] = (category_id, after_user or "")
    if end_user is not None:
        params += (end_user,)
    cursor = conn.execute(
        "SELECT s.user_id, s.channels, u.name, u.email, u.phone, u.push_token,"
        " u.timezone, s.schedule, u.quiet_hours"
        " FROM subscriptions s JOIN users u ON u.id = s.user_id"
        f" WHERE s.category_id = ? AND s.user_id > ?{bounded} ORDER BY s.user_id LIMIT ?",
        (*params, limit),
    )
    rows = list(cursor.fetchall())
    registered = registered_in_page(conn, category_id, after_user, rows[-1][0]) if rows else {}
    return rows, registered


def _write_page(
    conn: sqlite3.Connection, message_id: str, planned: _PlannedPage, segment: Segment | None
) -> FanoutPage:
    page = planned.page
    replay = segment.replay if segment is not None else None
    if replay is not None:
        # A page in flight of a node that died, planned again: what has a row by now
        # was sent, or is queued for whoever claims it.
        sent = existing(conn, [task.id for task in page.tasks])
        if sent:
            page = replace(page, tasks=[task for task in page.tasks if task.id not in sent])
    write_rows(
        conn,
        "INSERT OR IGNORE INTO deliveries (id, message_id, user_id, channel, status,"
        " recipient, error, created_at, owner, mode, not_before, note, updated_at)",
        planned.deliveries,
    )
    write_rows(
        conn,
        "INSERT OR IGNORE INTO inbox (id, user_id, message_id, category_id, title, body,"
        " priority, created_at, via)",
        planned.inbox,
    )
    if planned.flight is not None:
        conn.execute(
            "INSERT OR REPLACE INTO fanout_pages (id, after_user, last_user, owner, pending,"
            " created_at, message_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*planned.flight, message_id),
        )
    if replay is not None:
        if page.done:
            conn.execute("DELETE FROM fanout_pages WHERE id = ?", (replay,))
        return page
    if segment is None:
        conn.execute(
            "UPDATE messages SET fanout_cursor = ?, fanout_done = ? WHERE id = ?",
            (page.cursor, int(page.done), message_id),
        )
        return page
    conn.execute(
        "UPDATE fanout_segments SET cursor = ?, done = ? WHERE message_id = ? AND seq = ?",
        (page.cursor, int(page.done), message_id, segment.seq),
    )
    if page.done:  # the last segment to finish finishes the message's fan-out
        conn.execute(
            "UPDATE messages SET fanout_done = 1 WHERE id = ? AND NOT EXISTS"
            " (SELECT 1 FROM fanout_segments WHERE message_id = ? AND done = 0)",
            (message_id, message_id),
        )
    return page


def _record_outcomes(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Outcome rows of any number of rounds, in the order they were recorded."""
    # One row per delivery, the last outcome of each (as one update after another
    # would leave it): an UPDATE ... FROM joins each delivery to a single row.
    # The first outcome of a delivery in flight inserts its row instead (``held_row``):
    # no other outcome of it can be in the same write.
    held = [r for r in rows if len(r) != OUTCOME_WIDTH]
    if held:
        insert_held(conn, held)
        rows = [r for r in rows if len(r) == OUTCOME_WIDTH]
    rows = list({r[-1]: r for r in rows}.values())
    digests = [r for r in rows if r[-1].startswith(DIGEST_PREFIX)]
    singles = [r for r in rows if not r[-1].startswith(DIGEST_PREFIX)] if digests else rows
    write_rows(
        conn,
        "UPDATE deliveries SET status = o.column1, attempts = o.column2,"
        " provider = o.column3, provider_message_id = o.column4,"
        " recipient = coalesce(o.column5, deliveries.recipient), subject = o.column6,"
        " text = o.column7, error = o.column8, updated_at = o.column9,"
        " sent_at = o.column10, not_before = o.column11,"
        " owner = CASE WHEN o.column12 = 1 THEN deliveries.owner END FROM (",
        singles,
        ") AS o WHERE deliveries.id = o.column13",
    )
    if digests:
        _record_digests(conn, digests)


def _record_digests(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Outcome rows of digests: the digest, and (once final) every delivery it carried."""
    conn.executemany(
        "UPDATE digests SET status = ?, attempts = ?, provider = ?, provider_message_id = ?,"
        " recipient = coalesce(?, recipient), subject = ?, text = ?, error = ?,"
        " updated_at = ?, sent_at = ?, not_before = ?,"
        " owner = CASE WHEN ? = 1 THEN owner END WHERE id = ?",
        rows,
    )
    final = [r for r in rows if r[0] != DeliveryStatus.QUEUED.value]
    conn.executemany(
        "UPDATE deliveries SET status = ?, provider = ?, provider_message_id = ?,"
        " error = ?, updated_at = ?, sent_at = ?, owner = NULL WHERE digest_id = ?",
        [(r[0], r[2], r[3], r[7], r[8], r[9], r[12]) for r in final],
    )


def _claim_pages(
    conn: sqlite3.Connection, node_id: str, limit: int
) -> list[tuple[Message, Segment, str | None]]:
    """Claim pages in flight that their node left (see sqlite_flight), each to plan
    again as a segment of its message. A negative ``seq`` (the page's row number)
    tells it from the message's own segments."""
    if limit <= 0:
        return []
    cursor = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS}, p.id, p.rowid, p.after_user, p.last_user"
        " FROM fanout_pages p JOIN messages m ON m.id = p.message_id"
        " WHERE p.owner IS NULL ORDER BY m.accepted_at, p.rowid LIMIT ?",
        (limit,),
    )
    rows = list(cursor.fetchall())
    conn.executemany(
        "UPDATE fanout_pages SET owner = ? WHERE id = ?", [(node_id, row[8]) for row in rows]
    )
    return [
        (_message(row), Segment(-row[9], row[10], row[11], replay=row[8]), None) for row in rows
    ]


def _owners(conn: sqlite3.Connection) -> set[str]:
    """Every node named as the owner of unfinished work. Jumps from owner to owner along
    the indexes, so the cost follows the number of owners, not of deliveries."""
    owners: set[str] = set()
    for table, column, unfinished in (
        ("deliveries", "owner", "status = 'queued'"),
        ("digests", "owner", "status = 'queued'"),
        ("messages", "fanout_owner", "fanout_done = 0"),
        ("fanout_segments", "owner", "done = 0"),
        ("fanout_pages", "owner", "owner IS NOT NULL"),
    ):
        last = ""
        while True:
            cursor = conn.execute(
                f"SELECT {column} FROM {table} WHERE {unfinished} AND {column} > ?"
                f" ORDER BY {column} LIMIT 1",
                (last,),
            )
            row = cursor.fetchone()
            if row is None:
                break
            last = row[0]
            owners.add(last)
    return owners


def _release(conn: sqlite3.Connection, node_ids: Sequence[str]) -> None:
    """Hand the nodes' queued deliveries and unfinished fan-outs back to everyone."""
    marks = ", ".join("?" * len(node_ids))
    conn.execute(
        f"UPDATE deliveries SET owner = NULL WHERE status = 'queued' AND owner IN ({marks})",
        node_ids,
    )
    conn.execute(
        f"UPDATE messages SET fanout_owner = NULL WHERE fanout_done = 0"
        f" AND fanout_owner IN ({marks})",
        node_ids,
    )
    conn.execute(
        f"UPDATE fanout_segments SET owner = NULL WHERE done = 0 AND owner IN ({marks})",
        node_ids,
    )
    conn.execute(
        f"UPDATE digests SET owner = NULL WHERE status = 'queued' AND owner IN ({marks})",
        node_ids,
    )
    conn.execute(f"UPDATE fanout_pages SET owner = NULL WHERE owner IN ({marks})", node_ids)
    conn.execute(f"DELETE FROM nodes WHERE id IN ({marks})", node_ids)


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


def _thread_named(name: str) -> Callable[[sqlite3.Connection], None]:
    def rename(_conn: sqlite3.Connection) -> None:
        threading.current_thread().name = name

    return rename


async def _connect(path: Path, *pragmas: str) -> aiosqlite.Connection:
    # Room for the statements of every size that write_rows compiles, and the rest.
    conn = await aiosqlite.connect(path, isolation_level=None, cached_statements=1024)
    try:
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA foreign_keys=ON")
        # synchronous=FULL: a 202 means the message survives a power cut, not only a
        # process crash; group commit pays the fsync once for many publishes.
        await conn.execute("PRAGMA synchronous=FULL")
        # A shard's outcomes update deliveries spread over a fan-out's range of ids (its
        # users are hashed to it): once a broadcast's rows and index entries outgrow
        # SQLite's default 2 MB page cache, it misses on most of them.
        await conn.execute(f"PRAGMA cache_size={-CACHE_KIB}")
        for pragma in pragmas:
            await conn.execute(pragma)
    except BaseException:
        await conn.close()  # its thread is non-daemon: never leave it running
        raise
    return conn


def _first_page(
    conn: sqlite3.Connection, plan: Callable[[sqlite3.Connection], FanoutPage], message_id: str
) -> FanoutPage | None:
    """Plan a message's first page inside its accept transaction, under a savepoint: a
    page that fails is undone alone, and the fan-out plans it again later."""
    page, error = in_savepoint(conn, plan, "first_page")
    if error is not None:
        log.warning("fanout.first_page_failed", message_id=message_id, error=repr(error))
    return cast(FanoutPage | None, page)
