"""Versioned PostgreSQL migrations on real, fresh databases.

Each test gets empty databases of its own on the test server (see
``tests/contract/postgres_server.py``: skipped when there is none, failing in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from notefly.store.migrations import load_migrations
from notefly.store.sqlite import SqliteStore
from tests.contract.postgres_server import PostgresServer, reach_server, sweep


class FixedClock:
    def now(self) -> datetime:
        return datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    server = reach_server()
    try:
        yield server
    finally:
        sweep(server)


@pytest.fixture
async def url(server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database."""
    name = await server.create()
    try:
        yield server.url(name)
    finally:
        await server.drop(name)


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def migrate(url: str) -> list[int]:
    import asyncpg

    from notefly.store.postgres_migrations import migrate_postgres

    conn = await asyncpg.connect(url)
    try:
        return await migrate_postgres(conn)
    finally:
        await conn.close()


def expected_rows() -> list[tuple[int, str]]:
    return [(m.version, m.name) for m in load_migrations("postgres")]


async def applied(url: str) -> list[tuple[Any, ...]]:
    return await query(url, "SELECT version, name FROM schema_migrations ORDER BY version")


def test_postgres_has_the_same_migrations_as_sqlite() -> None:
    # A schema change made for one backend only would split the store contract.
    assert expected_rows() == [(m.version, m.name) for m in load_migrations("sqlite")]
    assert expected_rows()[:3] == [(1, "0001_init"), (2, "0002_work"), (3, "0003_channels")]


async def test_a_fresh_database_gets_every_migration(url: str) -> None:
    assert await migrate(url) == [version for version, _name in expected_rows()]

    assert await applied(url) == expected_rows()
    tables = await query(
        url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert {row[0] for row in tables} == {
        "schema_migrations",
        "categories",
        "users",
        "subscriptions",
        "messages",
        "deliveries",
        "inbox",
        "nodes",
        "endpoints",
        "digests",
        "api_keys",
        "fanout_segments",
        "fanout_pages",
    }
    assert await query(url, "SELECT id FROM categories ORDER BY id") == [
        ("finance",),
        ("movies",),
        ("sports",),
    ]


async def test_both_backends_have_the_same_tables_and_columns(url: str, tmp_path: Path) -> None:
    from notefly.store.postgres import PostgresStore

    store = await PostgresStore.open(url, FixedClock())
    await store.close()
    rows = await query(
        url,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public'",
    )
    postgres: dict[str, set[str]] = {}
    for table, column in rows:
        postgres.setdefault(table, set()).add(column)

    path = tmp_path / "n.db"
    sqlite_store = await SqliteStore.open(path, FixedClock())
    await sqlite_store.close()
    sqlite: dict[str, set[str]] = {}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for (table,) in tables:
            columns = conn.execute(f"PRAGMA table_info({table})").fetchall()
            sqlite[table] = {column[1] for column in columns}

    # SQLite's count of audience changes serves its single write lock (a fan-out page
    # planned outside it is checked against the count); PostgreSQL plans under row locks.
    assert sqlite.pop("audience_version") == {"id", "n"}
    assert postgres == sqlite


async def test_migrating_again_applies_nothing(url: str) -> None:
    from notefly.store.postgres import PostgresStore

    store = await PostgresStore.open(url, FixedClock())
    await store.close()
    stamps = await query(url, "SELECT version, applied_at FROM schema_migrations")

    assert await migrate(url) == []
    store = await PostgresStore.open(url, FixedClock())
    await store.close()

    assert await query(url, "SELECT version, applied_at FROM schema_migrations") == stamps
    assert await query(url, "SELECT count(*) FROM categories") == [(3,)]


async def test_three_stores_opening_a_fresh_database_at_once_migrate_it_once(
    server: PostgresServer,
) -> None:
    from notefly.domain import User
    from notefly.store.postgres import PostgresStore

    for attempt in range(3):  # a race that passes once proves little
        name = await server.create()
        url = server.url(name)
        try:
            results = await asyncio.gather(
                *(PostgresStore.open(url, FixedClock()) for _ in range(3)),
                return_exceptions=True,
            )
            stores = [r for r in results if isinstance(r, PostgresStore)]
            try:
                assert len(stores) == 3, f"attempt {attempt}: {results}"
                await stores[0].add_user(User("u1", "Ada"))
                assert [(await s.get_user("u1")).name for s in stores] == ["Ada"] * 3
            finally:
                for store in stores:
                    await store.close()

            assert await applied(url) == expected_rows()
            assert await query(url, "SELECT count(*) FROM categories") == [(3,)]
        finally:
            await server.drop(name)


async def test_a_store_opened_without_migrating_leaves_the_database_alone(url: str) -> None:
    from notefly.store.postgres import PostgresStore

    store = await PostgresStore.open(url, FixedClock(), migrate=False)
    await store.close()
    tables = await query(
        url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert tables == []
