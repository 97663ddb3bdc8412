"""The PostgreSQL side of the benchmark: throwaway databases, their seed, and the
delivery log read from them while the nodes run (``deliverylog`` reads SQLite).

Every database of a run is named ``notefly_bench_<random>`` (the seeded one, used as
the template of the others) or ``notefly_bench_<random>_<suffix>``, and is dropped when
the run ends unless ``--keep`` asked otherwise. Where the server is:
``NOTEFLY_BENCH_POSTGRES_URL`` (a URL of its maintenance database), by default the
local server as user ``postgres``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from notefly.bench.deliverylog import Progress
from notefly.bench.seed import BATCH, ChannelChoice
from notefly.store.postgres_migrations import migrate_postgres

URL_VARIABLE = "NOTEFLY_BENCH_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "notefly_bench_"
CONNECT_SECONDS = 5.0
USER_COLUMNS = (
    "id",
    "name",
    "email",
    "phone",
    "push_token",
    "timezone",
    "created_at",
    "updated_at",
)


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server of the benchmark cannot be reached or used."""


def admin_url(env: Mapping[str, str]) -> str:
    """The URL of the server's maintenance database, from ``env`` or the default."""
    return env.get(URL_VARIABLE) or DEFAULT_URL


def server_label(url: str) -> str:
    """``host:port`` of ``url``: what may be shown of it (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}"


class BenchDatabases:
    """The databases of one benchmark run on one server: created, then all dropped."""

    def __init__(self, admin: str, token: str | None = None) -> None:
        self.admin = admin
        self.base = f"{PREFIX}{token or secrets.token_hex(4)}"
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return urlunsplit(urlsplit(self.admin)._replace(path=f"/{name}"))

    def name(self, suffix: str = "") -> str:
        return f"{self.base}_{suffix}" if suffix else self.base

    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self.admin, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise PostgresUnavailable(
                f"PostgreSQL is not reachable at {server_label(self.admin)}"
                f" (set {URL_VARIABLE}): {exc!r}"
            ) from exc

    async def version(self) -> str:
        """The server's version; raises ``PostgresUnavailable`` when it is away."""
        conn = await self._connect()
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    async def create(self, suffix: str = "", *, template: str | None = None) -> str:
        """A new database (a copy of ``template``, which nobody may be connected to);
        its name."""
        name = self.name(suffix)
        conn = await self._connect()
        try:
            copy = f" TEMPLATE {template}" if template else ""
            await conn.execute(f"CREATE DATABASE {name}{copy}")
        finally:
            await conn.close()
        self.created.append(name)
        return name

    async def drop(self, *names: str) -> None:
        conn = await self._connect()
        try:
            for name in names:
                await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                if name in self.created:
                    self.created.remove(name)
        finally:
            await conn.close()

    async def drop_all(self) -> None:
        # The copies first: a template cannot be dropped while it is being copied.
        await self.drop(*reversed(self.created))


async def seed_subscribers(
    url: str, category: str, count: int, channels: ChannelChoice, *, prefix: str = "u"
) -> int:
    """Migrate the database at ``url`` and add ``count`` users subscribed to
    ``category`` (and the category); the number of deliveries one message to it makes."""
    conn = await asyncpg.connect(url, timeout=CONNECT_SECONDS)
    try:
        await migrate_postgres(conn)
        now = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO categories (id, name, description, created_at)"
            " VALUES ($1, $2, 'benchmark', $3) ON CONFLICT (id) DO NOTHING",
            category,
            category.replace("-", " ").title(),
            now,
        )
        deliveries = 0
        for start in range(0, count, BATCH):
            indexes = range(start, min(start + BATCH, count))
            await conn.copy_records_to_table(
                "users",
                columns=USER_COLUMNS,
                records=[
                    (
                        f"{prefix}{i:07d}",
                        f"User {i}",
                        f"user{i}@example.org",
                        f"+1555{i:07d}",
                        f"push-token-{i}",
                        "UTC",
                        now,
                        now,
                    )
                    for i in indexes
                ],
            )
            subs = [(category, f"{prefix}{i:07d}", list(channels(i)), now) for i in indexes]
            deliveries += sum(len(s[2]) for s in subs)
            await conn.copy_records_to_table(
                "subscriptions",
                columns=["category_id", "user_id", "channels", "updated_at"],
                records=subs,
            )
        await conn.execute("ANALYZE")  # the planner sees the seeded sizes from the start
        return deliveries
    finally:
        await conn.close()


async def add_category(url: str, category: str) -> None:
    """A category without subscribers: publishing to it costs an accept and no delivery."""
    conn = await asyncpg.connect(url, timeout=CONNECT_SECONDS)
    try:
        await conn.execute(
            "INSERT INTO categories (id, name, description, created_at)"
            " VALUES ($1, $1, 'benchmark', $2) ON CONFLICT (id) DO NOTHING",
            category,
            datetime.now(UTC),
        )
    finally:
        await conn.close()


class PostgresDeliveryLog:
    """What the nodes recorded in one database, read while they run (one connection)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, url: str) -> PostgresDeliveryLog:
        return cls(await asyncpg.connect(url, timeout=CONNECT_SECONDS))

    async def close(self) -> None:
        await self._conn.close()

    async def _scalar(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args)

    async def nodes(self) -> set[str]:
        """The nodes that have heartbeated."""
        return {row[0] for row in await self._conn.fetch("SELECT id FROM nodes")}

    async def messages(self, category: str) -> int:
        return int(
            await self._scalar("SELECT count(*) FROM messages WHERE category_id = $1", category)
        )

    async def progress(self) -> Progress:
        # Both counts use partial indexes that hold only the unfinished rows.
        unfanned = await self._scalar("SELECT count(*) FROM messages WHERE NOT fanout_done")
        queued = await self._scalar("SELECT count(*) FROM deliveries WHERE status = 'queued'")
        return Progress(int(unfanned), int(queued))

    async def by_status(self) -> dict[str, int]:
        rows = await self._conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY status")
        return {row[0]: int(row[1]) for row in rows}

    async def sent_per_message(self, category: str) -> dict[str, int]:
        """Deliveries recorded as sent, by message of ``category`` (0 for none)."""
        rows = await self._conn.fetch(
            "SELECT m.id, count(d.id) FILTER (WHERE d.status = 'sent') FROM messages m"
            " LEFT JOIN deliveries d ON d.message_id = m.id WHERE m.category_id = $1"
            " GROUP BY m.id",
            category,
        )
        return {row[0]: int(row[1]) for row in rows}

    async def repeated_recipients(self) -> int:
        """Delivery rows beyond the first for the same message, user and channel."""
        return int(
            await self._scalar(
                "SELECT count(*) - count(DISTINCT (message_id, user_id, channel)) FROM deliveries"
            )
        )

    async def span(self, category: str) -> tuple[datetime, datetime] | None:
        """The first accept of a message of ``category`` and the last of its
        deliveries recorded as sent."""
        row = await self._conn.fetchrow(
            "SELECT min(m.accepted_at), (SELECT max(d.sent_at) FROM deliveries d"
            " JOIN messages dm ON dm.id = d.message_id"
            " WHERE d.status = 'sent' AND dm.category_id = $1)"
            " FROM messages m WHERE m.category_id = $1",
            category,
        )
        if row is None or row[0] is None or row[1] is None:
            return None
        return row[0], row[1]

    async def fanout_owners(self, category: str) -> dict[str, int]:
        """How many parts of the fan-outs of ``category`` each node took on: a message
        that was not split, or one segment of a split one."""
        rows = await self._conn.fetch(
            "SELECT owner, count(*) FROM ("
            " SELECT coalesce(fanout_owner, '-') AS owner FROM messages"
            " WHERE category_id = $1 AND NOT fanout_split"
            " UNION ALL SELECT coalesce(s.owner, '-') FROM fanout_segments s"
            " JOIN messages m ON m.id = s.message_id WHERE m.category_id = $1) AS parts"
            " GROUP BY 1",
            category,
        )
        return {row[0]: int(row[1]) for row in rows}


async def wait_done(
    log: PostgresDeliveryLog,
    within: float,
    interval: float,
    *,
    category: str,
    expect_messages: int,
) -> tuple[bool, float]:
    """Poll until ``expect_messages`` messages of ``category`` are accepted and every
    fan-out and delivery is final, for at most ``within`` seconds; (done, seconds)."""
    started = time.monotonic()
    while True:
        progress = await log.progress()
        accepted = await log.messages(category)
        waited = time.monotonic() - started
        if progress.done and accepted >= expect_messages:
            return True, waited
        if waited > within:
            return False, waited
        await asyncio.sleep(interval)
