"""Versioned SQLite migrations on real files."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from notefly.domain import User
from notefly.store.migrations import Migration, load_migrations, migrate_sqlite
from notefly.store.sqlite import SqliteStore

TABLES = {"categories", "users", "subscriptions", "messages", "deliveries", "inbox"}


class FixedClock:
    def now(self) -> datetime:
        return datetime(2024, 5, 1, tzinfo=UTC)


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def applied(path: Path) -> list[tuple[Any, ...]]:
    return query(path, "SELECT version, name FROM schema_migrations ORDER BY version")


def expected_rows() -> list[tuple[int, str]]:
    return [(m.version, m.name) for m in load_migrations("sqlite")]


async def test_the_migrations_ship_with_the_package() -> None:
    migrations = load_migrations("sqlite")
    assert [(m.version, m.name) for m in migrations][:1] == [(1, "0001_init")]
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})


async def test_a_fresh_file_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await migrate_sqlite(conn) == [m.version for m in load_migrations("sqlite")]

    assert applied(path) == expected_rows()
    tables = {row[0] for row in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= TABLES


async def test_opening_again_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    store = await SqliteStore.open(path, FixedClock())
    await store.close()
    stamps = query(path, "SELECT version, applied_at FROM schema_migrations")

    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await migrate_sqlite(conn) == []
    store = await SqliteStore.open(path, FixedClock())
    await store.close()

    assert query(path, "SELECT version, applied_at FROM schema_migrations") == stamps
    assert query(path, "SELECT count(*) FROM categories") == [(3,)]


async def test_two_stores_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    for attempt in range(5):  # a race that passes once proves little
        path = tmp_path / f"race{attempt}.db"
        results = await asyncio.gather(
            SqliteStore.open(path, FixedClock()),
            SqliteStore.open(path, FixedClock()),
            return_exceptions=True,
        )
        stores = [r for r in results if isinstance(r, SqliteStore)]
        try:
            assert len(stores) == 2, f"attempt {attempt}: {results}"
            first, second = stores
            await first.add_user(User("u1", "Ada"))
            assert (await second.get_user("u1")).name == "Ada"
        finally:
            for store in stores:
                await store.close()

        assert applied(path) == expected_rows()
        assert query(path, "SELECT count(*) FROM categories") == [(3,)]


async def test_every_lookup_of_deliveries_by_user_searches_an_index(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await migrate_sqlite(conn)
    lookups = [  # erasure, a user's data, digest collection, throttle counts
        "DELETE FROM deliveries WHERE user_id = 'u'",
        "SELECT id FROM deliveries WHERE user_id = 'u' ORDER BY created_at DESC, id DESC",
        "SELECT min(id), count(*) FROM deliveries WHERE user_id = 'u' AND channel = 'sms'",
        "SELECT user_id, count(*) FROM deliveries WHERE channel = 'sms'"
        " AND created_at >= '2024-05-01' AND user_id IN ('u', 'v') GROUP BY user_id",
    ]
    indexes = {row[0] for row in query(path, "SELECT name FROM sqlite_master WHERE type='index'")}

    assert "deliveries_by_user" not in indexes  # deliveries_recent leads with user_id
    for sql in lookups:
        plan = " ".join(row[3] for row in query(path, f"EXPLAIN QUERY PLAN {sql}"))
        assert (
            plan.startswith("SEARCH deliveries USING ")
            and "INDEX deliveries_recent (user_id=?" in plan
        ), (sql, plan)


def test_the_initial_script_splits_into_its_statements() -> None:
    init = next(m for m in load_migrations("sqlite") if m.version == 1)
    statements = init.statements()

    assert [s.splitlines()[0].split("(")[0].strip() for s in statements] == [
        "CREATE TABLE categories",
        "CREATE TABLE users",
        "CREATE TABLE subscriptions",
        "CREATE INDEX subscriptions_by_user ON subscriptions",
        "CREATE TABLE messages",
        "CREATE INDEX messages_fanout_pending ON messages",
        "CREATE TABLE deliveries",
        "CREATE INDEX deliveries_by_message ON deliveries",
        "CREATE INDEX deliveries_queued ON deliveries",
        "CREATE INDEX deliveries_by_user ON deliveries",
        "CREATE TABLE inbox",
        "CREATE INDEX inbox_by_user ON inbox",
        "INSERT INTO categories",
    ]
    for statement in statements:
        assert statement.endswith(";")
        assert not any(line.lstrip().startswith("--") for line in statement.splitlines())


def test_statements_ignore_comment_lines_and_respect_literals() -> None:
    script = """\
-- a leading comment; with a semicolon
CREATE TABLE t (
    -- an indented comment;
    v TEXT
);
INSERT INTO t VALUES ('a;b'), ('-- not a comment');
CREATE TRIGGER t_copy AFTER INSERT ON t BEGIN
    INSERT INTO t VALUES ('x');
    SELECT 1;
END;
-- a trailing comment
SELECT count(*) FROM t"""
    statements = Migration(9, "0009_test", script).statements()

    assert len(statements) == 4
    assert statements[0] == "CREATE TABLE t (\n    v TEXT\n);"
    assert statements[1] == "INSERT INTO t VALUES ('a;b'), ('-- not a comment');"
    assert statements[3] == "SELECT count(*) FROM t"
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        for statement in statements[:3]:
            conn.execute(statement)
        assert conn.execute("SELECT v FROM t ORDER BY v").fetchall() == [
            ("-- not a comment",),
            ("a;b",),
        ]
