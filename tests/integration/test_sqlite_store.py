"""The SQLite store on a real file: what a caller of the ``Store`` port would notice.

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
    DeliveryTask,
    Message,
    Priority,
    Subscription,
    User,
    notification_id,
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


# The "sports" audience used by the fan-out tests, in user id order.
ENABLED = ("email", "sms", "inapp")
AUDIENCE = [
    (User("u1", "Ada", email="ada@example.org"), ("email",)),
    (User("u2", "Bob"), ("sms",)),  # no phone: skipped
    # Cyd has a push token: push is skipped only because this broker has no push channel.
    (
        User("u3", "Cyd", phone="+15550103", push_token="tok3", timezone="Europe/Paris"),
        ("sms", "push"),
    ),
    (User("u4", "Dee", email="dee@example.org", phone="+15550104"), ("email", "sms")),
    (User("u5", "Eve"), ("inapp",)),  # a channel (an operator's own) that needs no address
]
EXPECTED_QUEUED = {
    ("u1", "email"): "ada@example.org",
    ("u3", "sms"): "+15550103",
    ("u4", "email"): "dee@example.org",
    ("u4", "sms"): "+15550104",
    ("u5", "inapp"): None,
}
EXPECTED_SKIPPED = {("u2", "sms"), ("u3", "push")}


async def seed_audience(store: SqliteStore) -> None:
    # u0 sorts first but follows another category: it must never be part of a page.
    await store.add_user(User("u0", "Zed", email="zed@example.org"))
    await store.upsert_subscription(Subscription("u0", "finance", ("email",)))
    for user, channels in AUDIENCE:
        await store.add_user(user)
        await store.upsert_subscription(Subscription(user.id, "sports", channels))


async def fan_out_completely(
    store: SqliteStore, msg: Message, after: str | None = None, limit: int = 2
) -> list[DeliveryTask]:
    tasks: list[DeliveryTask] = []
    while True:
        page = await store.fanout_page(msg, after, limit, ENABLED)
        tasks += page.tasks
        after = page.cursor
        if page.done:
            return tasks


# catalogue


# users


# subscriptions


# accepting messages


async def test_the_database_is_in_wal_mode(store: SqliteStore, db_path: Path) -> None:
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]


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


# fan-out


# outcomes and queued work


# inbox


async def inbox_with_three_messages(store: SqliteStore, clock: FakeClock) -> list[str]:
    """u1 and u4 both follow sports; returns u1's notification ids, oldest first.

    Message n is accepted at T0 + n minutes and fanned out a second later.
    """
    await seed_audience(store)
    for minute, message_id in enumerate(("m1", "m2", "m3"), start=1):
        clock.set(T0 + timedelta(minutes=minute))
        msg = message(message_id, accepted_at=clock.now())
        await store.accept_message(msg)
        clock.advance(1)
        await fan_out_completely(store, msg, limit=10)
    return [notification_id(m, "u1") for m in ("m1", "m2", "m3")]
