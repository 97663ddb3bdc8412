"""What is the SQLite store's own (WAL, group commit), on a real file. What every store
must do is in tests/contract, run against SQLite and PostgreSQL alike.

Rows are checked through a separate ``sqlite3`` connection where it matters that they
are really on disk (another process would see exactly that), not only in the store's
own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notefly.domain import (
    Category,
    Message,
    Priority,
)
from notefly.errors import Conflict
from notefly.store.sqlite import SqliteStore

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when the test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        self._now = now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "n.db"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(db_path, clock)
    try:
        yield store
    finally:
        await store.close()


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read through a connection of its own, as another process would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def message(message_id: str = "m1", **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": message_id,
        "category_id": "sports",
        "body": f"body of {message_id}",
        "accepted_at": T0,
        "title": f"title of {message_id}",
        "data": {"score": "2-1", "tags": ["derby"]},
        "priority": Priority.HIGH,
    }
    fields.update(overrides)
    return Message(**fields)


# the file


async def test_the_database_is_in_wal_mode(store: SqliteStore, db_path: Path) -> None:
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]


# claims


async def test_claims_of_nothing_take_no_write_transaction(
    store: SqliteStore, clock: FakeClock
) -> None:
    # An idle node polls for every kind of work; finding none must not cost the write
    # lock that the busy workers need.
    before = store.writer.batches
    for _ in range(3):
        assert await store.claim_fanouts("n1", 16) == []
        assert await store.claim_segments("n1", 2) == []
        assert await store.claim_deliveries("n1", 1000) == []
        assert await store.claim_digests("n1", 200) == []
    assert store.writer.batches == before
    # A message due later is nothing to claim yet either ...
    await store.accept_message(message("m1", deliver_at=T0 + timedelta(minutes=5)))
    accepted = store.writer.batches
    assert await store.claim_fanouts("n1", 16) == []
    assert store.writer.batches == accepted
    # ... until it is due.
    clock.advance(300)
    assert [m.id for m, _cursor in await store.claim_fanouts("n1", 16)] == ["m1"]
    assert store.writer.batches == accepted + 1


async def test_looking_for_dead_nodes_takes_the_write_lock_only_when_one_is(
    store: SqliteStore, clock: FakeClock
) -> None:
    await store.heartbeat("n1")
    await store.accept_message(message("m1"), owner="gone")  # an owner with no heartbeat
    before = store.writer.batches
    assert await store.release_dead(clock.now() - timedelta(seconds=30)) == ["gone"]
    assert store.writer.batches == before + 1
    # Everyone alive and nothing orphaned: no write transaction.
    assert await store.release_dead(clock.now() - timedelta(seconds=30)) == []
    assert store.writer.batches == before + 1
    clock.advance(60)
    assert await store.release_dead(clock.now() - timedelta(seconds=30)) == ["n1"]
    assert store.writer.batches == before + 2


# group commit


async def test_concurrent_publishes_share_few_transactions(
    store: SqliteStore, db_path: Path
) -> None:
    batches_before = store.writer.batches
    results = await asyncio.gather(*(store.accept_message(message(f"m{i:03}")) for i in range(200)))
    batches = store.writer.batches - batches_before

    assert all(created for _message, created in results)
    assert query(db_path, "SELECT count(*) FROM messages") == [(200,)]
    assert batches < 20, f"200 concurrent publishes took {batches} transactions"


async def test_a_failing_operation_fails_alone_in_its_batch(
    store: SqliteStore, db_path: Path
) -> None:
    batches_before = store.writer.batches
    results = await asyncio.gather(
        store.accept_message(message("m1")),
        store.add_category(Category("finance", "Finance again")),
        store.add_category(Category("weather", "Weather")),
        store.accept_message(message("m2")),
        return_exceptions=True,
    )

    assert store.writer.batches - batches_before == 1, "the four operations shared a batch"
    assert isinstance(results[1], Conflict)
    assert results[0] == (message("m1"), True)
    assert results[2] == Category("weather", "Weather")
    assert results[3] == (message("m2"), True)
    assert query(db_path, "SELECT id FROM messages ORDER BY id") == [("m1",), ("m2",)]
    assert query(db_path, "SELECT name FROM categories WHERE id IN ('finance', 'weather')") == [
        ("Finance",),
        ("Weather",),
    ]
