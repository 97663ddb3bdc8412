"""The group-commit writer on a real SQLite file: synchronous operations run a whole
batch in one trip to the writer thread, and still fail one by one, commit together and
keep their order with the asynchronous ones."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiosqlite
import pytest

from notefly.domain import Category
from notefly.errors import NotFound
from notefly.store.sqlite import SqliteStore
from tests.integration.test_sqlite_store import FakeClock, query


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "n.db", FakeClock())
    try:
        yield store
    finally:
        await store.close()


def insert_category(category_id: str) -> Callable[[sqlite3.Connection], str]:
    def op(conn: sqlite3.Connection) -> str:
        conn.execute(
            "INSERT INTO categories (id, name, description, created_at) VALUES (?, ?, '', '')",
            (category_id, category_id.title()),
        )
        return category_id

    return op


async def test_a_batch_of_synchronous_operations_commits_together_and_fails_alone(
    store: SqliteStore, tmp_path: Path
) -> None:
    batches = store.writer.batches
    results = await asyncio.gather(
        store.writer.run_sync(insert_category("weather")),
        store.writer.run_sync(insert_category("finance")),  # exists already: a conflict
        store.writer.run_sync(insert_category("travel")),
        return_exceptions=True,
    )

    assert store.writer.batches - batches == 1, "the three operations shared one transaction"
    assert results[0] == "weather"
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert results[2] == "travel"
    rows = query(tmp_path / "n.db", "SELECT id FROM categories WHERE id IN (?, ?, ?)",
                 ("weather", "travel", "finance"))  # fmt: skip
    assert sorted(r[0] for r in rows) == ["finance", "travel", "weather"]
    assert query(tmp_path / "n.db", "SELECT name FROM categories WHERE id = 'finance'") == [
        ("Finance",)
    ], "the failed insert changed nothing"


async def test_mixed_operations_run_in_the_order_they_came_in_one_transaction(
    store: SqliteStore, tmp_path: Path
) -> None:
    seen: list[str] = []

    async def count_then_insert(conn: aiosqlite.Connection) -> int:
        cursor = await conn.execute("SELECT count(*) FROM categories WHERE id LIKE 'x%'")
        row = await cursor.fetchone()
        assert row is not None
        await conn.execute(
            "INSERT INTO categories (id, name, description, created_at) VALUES ('x2', 'X2', '', '')"
        )
        seen.append("async")
        return int(row[0])

    def count(conn: sqlite3.Connection) -> int:
        seen.append("sync")
        return int(conn.execute("SELECT count(*) FROM categories WHERE id LIKE 'x%'").fetchone()[0])

    batches = store.writer.batches
    results = await asyncio.gather(
        store.writer.run_sync(insert_category("x1")),
        store.writer.run(count_then_insert),
        store.writer.run_sync(count),
    )

    assert store.writer.batches - batches == 1
    # Each operation saw the writes of those before it in the same transaction.
    assert results == ["x1", 1, 2]
    assert seen == ["async", "sync"]
    assert query(tmp_path / "n.db", "SELECT count(*) FROM categories WHERE id LIKE 'x%'") == [(2,)]


async def test_a_category_another_process_adds_is_found_after_it_was_missing(
    store: SqliteStore, tmp_path: Path
) -> None:
    with pytest.raises(NotFound):
        await store.get_category("weather")
    other = await SqliteStore.open(tmp_path / "n.db", FakeClock(), migrate=False)
    try:
        await other.add_category(Category("weather", "Weather", "Storms"))
    finally:
        await other.close()

    assert await store.get_category("weather") == Category("weather", "Weather", "Storms")
    assert await store.get_category("weather") == Category("weather", "Weather", "Storms")


async def test_heavy_operations_are_spread_over_short_transactions(
    store: SqliteStore, tmp_path: Path
) -> None:
    def insert_many(prefix: str) -> Callable[[sqlite3.Connection], int]:
        def op(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO categories (id, name, description, created_at)"
                " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)"
                " SELECT ? || i, 'Heavy', '', '' FROM n",
                (prefix,),
            )
            return cursor.rowcount

        return op

    batches = store.writer.batches
    results = await asyncio.gather(
        *(store.writer.run_sync(insert_many(f"h{i}-")) for i in range(4))
    )
    heavy = store.writer.batches - batches

    batches = store.writer.batches
    await asyncio.gather(*(store.writer.run_sync(insert_category(f"light{i}")) for i in range(4)))
    light = store.writer.batches - batches

    assert results == [2500] * 4
    assert (heavy, light) == (2, 1), "a transaction stops taking operations at 4,000 rows"
    assert query(tmp_path / "n.db", "SELECT count(*) FROM categories WHERE id LIKE 'h%-%'") == [
        (10_000,)
    ]


async def test_a_write_waits_for_another_process_lock_and_goes_through_after_it(
    store: SqliteStore, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "n.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker's group commit holds the lock
    other.execute(
        "INSERT INTO categories (id, name, description, created_at) VALUES ('first', 'F', '', '')"
    )
    write = asyncio.ensure_future(store.writer.run_sync(insert_category("second")))
    await asyncio.sleep(0.3)
    assert not write.done(), "it waits while the lock is held"

    other.execute("COMMIT")
    other.close()

    assert await asyncio.wait_for(write, timeout=5) == "second"
    rows = query(tmp_path / "n.db", "SELECT id FROM categories WHERE id IN ('first', 'second')")
    assert sorted(r[0] for r in rows) == ["first", "second"]
    assert (
        await store.writer.run_sync(lambda conn: conn.execute("PRAGMA busy_timeout").fetchone()[0])
        == 0
    ), "the writer waits in its own short steps, not in SQLite's busy handler"


async def test_the_writer_keeps_savepoint_journals_in_memory(store: SqliteStore) -> None:
    # 2 is MEMORY: each operation's savepoint journal would otherwise go to a file.
    assert (
        await store.writer.run_sync(lambda conn: conn.execute("PRAGMA temp_store").fetchone()[0])
        == 2
    )
