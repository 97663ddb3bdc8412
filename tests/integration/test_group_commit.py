"""The group-commit writer on a real SQLite file: synchronous operations run a whole
batch in one trip to the writer thread, and still fail one by one, commit together and
keep their order with the asynchronous ones."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from notefly.domain import Category
from notefly.errors import NotFound
from notefly.store.sqlite import SqliteStore
from notefly.store.turns import WriteTurns
from notefly.store.writer import (
    TRANSACTION_SWITCH_INTERVAL,
    SharedWrite,
    SwitchInterval,
    statement_sizes,
    write_rows,
)
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


async def test_after_commit_runs_on_the_writer_thread_once_committed_before_the_caller(
    store: SqliteStore, tmp_path: Path
) -> None:
    seen: list[tuple[str, object]] = []
    loop_thread = threading.get_ident()

    def after(result: str) -> None:
        # Another connection already sees the row: the transaction has committed.
        committed = query(tmp_path / "n.db", "SELECT id FROM categories WHERE id = ?", (result,))
        seen.append(("after", (result, committed, threading.get_ident() != loop_thread)))

    result = await store.writer.run_sync(insert_category("weather"), after_commit=after)
    seen.append(("caller", result))

    assert seen == [("after", ("weather", [("weather",)], True)), ("caller", "weather")]


async def test_after_commit_of_a_mixed_batch_runs_once_it_has_committed(
    store: SqliteStore, tmp_path: Path
) -> None:
    seen: list[list[tuple[str]]] = []

    async def insert(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO categories (id, name, description, created_at)"
            " VALUES ('mx2', 'M2', '', '')"
        )

    def after(_result: str) -> None:
        seen.append(query(tmp_path / "n.db", "SELECT id FROM categories WHERE id LIKE 'mx%'"))

    await asyncio.gather(
        store.writer.run_sync(insert_category("mx1"), after_commit=after),
        store.writer.run(insert),
    )

    assert [sorted(rows) for rows in seen] == [[("mx1",), ("mx2",)]]


async def test_an_after_commit_that_raises_fails_its_caller_and_keeps_the_work(
    store: SqliteStore, tmp_path: Path
) -> None:
    def after(_result: str) -> None:
        raise RuntimeError("could not start it")

    def never(_result: str) -> None:
        raise AssertionError("not for an operation that failed")

    results = await asyncio.gather(
        store.writer.run_sync(insert_category("weather"), after_commit=after),
        store.writer.run_sync(insert_category("finance"), after_commit=never),  # a conflict
        store.writer.run_sync(insert_category("travel")),
        return_exceptions=True,
    )

    assert isinstance(results[0], RuntimeError)
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert results[2] == "travel"
    rows = query(tmp_path / "n.db", "SELECT id FROM categories WHERE id IN ('weather', 'travel')")
    assert sorted(rows) == [("travel",), ("weather",)]


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


async def test_an_operation_marked_first_goes_ahead_of_heavy_ones_queued_before_it(
    store: SqliteStore,
) -> None:
    # A publish waits for its commit; fan-out pages and outcomes queued before it must
    # not make it wait for their transactions.
    ran: list[str] = []

    def insert_many(prefix: str) -> Callable[[sqlite3.Connection], None]:
        def op(conn: sqlite3.Connection) -> None:
            ran.append(prefix)
            conn.execute(
                "INSERT INTO categories (id, name, description, created_at)"
                " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)"
                " SELECT ? || i, 'Heavy', '', '' FROM n",
                (prefix,),
            )

        return op

    def light(conn: sqlite3.Connection) -> str:
        ran.append("light")
        return insert_category("light")(conn)

    batches = store.writer.batches
    heavy = [store.writer.run_sync(insert_many(f"h{i}-")) for i in range(4)]
    await asyncio.gather(*heavy, store.writer.run_sync(light, first=True))

    # Two heavy operations fill a transaction (4,000 rows): queued in turn, the light
    # one would have waited for two transactions; first, it runs in the first.
    assert ran == ["light", "h0-", "h1-", "h2-", "h3-"]
    assert store.writer.batches - batches == 2


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


async def test_processes_on_one_file_take_turns_at_the_write_lock(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Another process's turn (``WriteTurns`` on the file beside the database) holds
    this store's next transaction back until it is given back."""
    other = WriteTurns(tmp_path / "n.db.turns")
    try:
        assert other.take(0.0)
        write = asyncio.ensure_future(store.writer.run_sync(insert_category("second")))
        await asyncio.sleep(0.3)
        assert not write.done(), "it waits for its turn"
        other.give_back()
        assert await asyncio.wait_for(write, timeout=5) == "second"
        # It gave its turn back after its commit: the other process gets it at once.
        assert other.take(0.0)
        other.give_back()
    finally:
        other.close()


async def test_the_writer_counts_how_long_it_waited_for_the_lock_and_held_it(
    store: SqliteStore, tmp_path: Path
) -> None:
    before = store.write_lock_use()
    other = WriteTurns(tmp_path / "n.db.turns")
    try:
        assert other.take(0.0)
        write = asyncio.ensure_future(store.writer.run_sync(insert_category("second")))
        await asyncio.sleep(0.3)  # another process's turn
        other.give_back()
        await asyncio.wait_for(write, timeout=5)
    finally:
        other.close()

    def slow(conn: sqlite3.Connection) -> None:
        insert_category("third")(conn)
        time.sleep(0.2)  # a long transaction

    await store.writer.run_sync(slow)
    after = store.write_lock_use()
    assert after.transactions - before.transactions == 2
    assert after.waited_seconds - before.waited_seconds >= 0.25
    assert after.held_seconds - before.held_seconds >= 0.18


async def test_a_transaction_with_asynchronous_operations_counts_too(
    store: SqliteStore,
) -> None:
    before = store.write_lock_use()

    async def op(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO categories (id, name, description, created_at)"
            " VALUES ('slow', 'Slow', '', '')"
        )
        await asyncio.sleep(0.2)

    await store.writer.run(op)
    after = store.write_lock_use()
    assert after.transactions - before.transactions == 1
    assert after.held_seconds - before.held_seconds >= 0.18


Rows = list[tuple[Any, ...]]


def record_names(log: list[Rows]) -> Callable[[sqlite3.Connection, Rows], None]:
    """A SharedWrite's write: names categories, keeping the last name given to each."""

    def write(conn: sqlite3.Connection, rows: Rows) -> None:
        log.append(list(rows))
        for category_id, name in rows:
            if name == "boom":
                raise sqlite3.OperationalError("the disk is full")
            conn.execute("UPDATE categories SET name = ? WHERE id = ?", (name, category_id))

    return write


@contextlib.asynccontextmanager
async def writer_busy(store: SqliteStore) -> AsyncIterator[None]:
    """The writer is inside another operation until the block ends (and then finishes
    what came meanwhile)."""
    gate = threading.Event()
    busy = asyncio.ensure_future(store.writer.run_sync(lambda conn: gate.wait(5)))
    await asyncio.sleep(0.05)
    try:
        yield
        await asyncio.sleep(0.05)  # the callers started in the block have added their rows
    finally:
        gate.set()
        await busy


def names(tmp_path: Path) -> dict[str, str]:
    return dict(query(tmp_path / "n.db", "SELECT id, name FROM categories"))


async def test_rows_added_while_the_writer_is_busy_share_one_operation(
    store: SqliteStore, tmp_path: Path
) -> None:
    log: list[Rows] = []
    shared = SharedWrite(store.writer, record_names(log))
    async with writer_busy(store):
        calls = [
            asyncio.ensure_future(shared.add([("finance", "Money")])),
            asyncio.ensure_future(shared.add([("movies", "Films"), ("finance", "Markets")])),
            asyncio.ensure_future(shared.add([])),
        ]
        await asyncio.sleep(0.05)
        assert not any(c.done() for c in calls[:2]), "nothing is reported before it commits"
    await asyncio.gather(*calls)

    assert log == [[("finance", "Money"), ("movies", "Films"), ("finance", "Markets")]]
    assert names(tmp_path)["finance"] == "Markets", "rows apply in the order they were added"
    assert names(tmp_path)["movies"] == "Films"

    await shared.add([("sports", "Games")])  # the writer is idle: an operation of its own
    assert log[-1] == [("sports", "Games")]


async def test_a_shared_operation_that_fails_fails_every_caller_and_writes_nothing(
    store: SqliteStore, tmp_path: Path
) -> None:
    shared = SharedWrite(store.writer, record_names([]))
    async with writer_busy(store):
        first = asyncio.ensure_future(shared.add([("finance", "Money")]))
        second = asyncio.ensure_future(shared.add([("movies", "boom")]))
    results = await asyncio.gather(first, second, return_exceptions=True)

    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert names(tmp_path)["finance"] == "Finance", "the operation rolled back as a whole"

    await shared.add([("finance", "Money")])  # a caller tries again: a new operation
    assert names(tmp_path)["finance"] == "Money"


async def test_a_shared_operation_is_cut_at_its_row_limit(store: SqliteStore) -> None:
    log: list[Rows] = []
    shared = SharedWrite(store.writer, record_names(log), max_rows=2)
    async with writer_busy(store):
        calls = [
            asyncio.ensure_future(shared.add([(c, c.title())]))
            for c in ("finance", "movies", "sports")
        ]
    await asyncio.gather(*calls)
    assert [len(rows) for rows in log] == [2, 1]


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_others(
    store: SqliteStore, tmp_path: Path
) -> None:
    shared = SharedWrite(store.writer, record_names([]))
    async with writer_busy(store):
        leaving = asyncio.ensure_future(shared.add([("finance", "Money")]))
        staying = asyncio.ensure_future(shared.add([("movies", "Films")]))
        await asyncio.sleep(0.05)
        leaving.cancel()
    await staying
    assert (names(tmp_path)["finance"], names(tmp_path)["movies"]) == ("Money", "Films")


async def test_the_writer_keeps_savepoint_journals_in_memory(store: SqliteStore) -> None:
    # 2 is MEMORY: each operation's savepoint journal would otherwise go to a file.
    assert (
        await store.writer.run_sync(lambda conn: conn.execute("PRAGMA temp_store").fetchone()[0])
        == 2
    )


async def test_a_transaction_shortens_the_switch_interval_while_it_holds_the_lock(
    store: SqliteStore,
) -> None:
    before = sys.getswitchinterval()
    seen: list[float] = []

    def failing(conn: sqlite3.Connection) -> None:
        seen.append(sys.getswitchinterval())
        raise ValueError("this operation fails alone")

    results = await asyncio.gather(
        store.writer.run_sync(lambda conn: seen.append(sys.getswitchinterval())),
        store.writer.run_sync(failing),
        return_exceptions=True,
    )

    assert isinstance(results[1], ValueError)
    assert seen == [pytest.approx(TRANSACTION_SWITCH_INTERVAL)] * 2
    assert before > TRANSACTION_SWITCH_INTERVAL
    assert sys.getswitchinterval() == before, "given back once the transaction is over"


async def test_a_transaction_over_several_hops_leaves_the_switch_interval_alone(
    store: SqliteStore,
) -> None:
    before = sys.getswitchinterval()
    batches = store.writer.batches
    seen: list[float] = []

    async def asynchronous(conn: aiosqlite.Connection) -> None:
        seen.append(sys.getswitchinterval())

    await asyncio.gather(
        store.writer.run_sync(lambda conn: seen.append(sys.getswitchinterval())),
        store.writer.run(asynchronous),
    )

    assert store.writer.batches - batches == 1, "both in one transaction, over several hops"
    assert seen == [before, before]
    assert sys.getswitchinterval() == before


def test_the_switch_interval_comes_back_once_the_last_of_overlapping_writers_is_done() -> None:
    before = sys.getswitchinterval()
    interval = SwitchInterval()

    interval.shorten()  # one store's writer begins
    interval.shorten()  # another store's, in the same process
    interval.restore()  # the first one commits
    still = sys.getswitchinterval()
    interval.restore()  # the second one commits

    assert still == pytest.approx(TRANSACTION_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize(
    ("rows", "sizes"),
    [
        (0, []),
        (1, [1]),
        (99, [99]),
        (100, [100]),
        (437, [400, 37]),
        (500, [500]),
        (1037, [500, 500, 37]),
        (1300, [500, 500, 300]),
    ],
)
def test_rows_go_in_few_statements_of_few_sizes(rows: int, sizes: list[int]) -> None:
    assert statement_sizes(rows) == sizes


def test_write_rows_writes_every_row_once() -> None:
    every_size = {n for rows in range(1, 1201) for n in statement_sizes(rows)}
    assert len(every_size) <= 104, "statement texts per call site the cache must hold"
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        for count in (1, 99, 437, 1037):
            conn.execute("DELETE FROM t")
            write_rows(conn, "INSERT INTO t (id, name)", [(i, f"n{i}") for i in range(count)])
            assert conn.execute("SELECT count(*), sum(id) FROM t").fetchone() == (
                count,
                count * (count - 1) // 2,
            )
