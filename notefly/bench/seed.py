"""Test data written straight into a SQLite file before Notefly starts.

Registering a million users over HTTP would take longer than the benchmark itself:
the schema comes from the store's own migrations, the rows from batched inserts.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from notefly.clock import SystemClock
from notefly.store.sqlite import SqliteStore

CHANNELS = ("sms", "email", "push")
BATCH = 50_000

ChannelChoice = Callable[[int], tuple[str, ...]]


async def create_schema(path: Path) -> None:
    """An empty Notefly database at ``path``, migrated as the store does at start-up."""
    store = await SqliteStore.open(path, SystemClock())
    await store.close()


def one_channel(index: int) -> tuple[str, ...]:
    """sms, email, push, sms, ...: one delivery per subscriber."""
    return (CHANNELS[index % len(CHANNELS)],)


def some_channels(seed: int = 8) -> ChannelChoice:
    """1 to 3 of sms/email/push per subscriber, at random (2 on average), reproducibly."""
    rng = random.Random(seed)
    choices = [tuple(sorted(rng.sample(CHANNELS, rng.randint(1, 3)))) for _ in range(997)]
    return lambda index: choices[index % len(choices)]


def user_row(prefix: str, index: int, now: str) -> tuple[str, ...]:
    return (
        f"{prefix}{index:07d}",
        f"User {index}",
        f"user{index}@example.org",
        f"+1555{index:07d}",
        f"push-token-{index}",
        "UTC",
        now,
        now,
    )


def seed_category(conn: sqlite3.Connection, category: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO categories (id, name, description, created_at) VALUES (?, ?, ?, ?)",
        (category, category.replace("-", " ").title(), "benchmark", _now()),
    )


def seed_subscribers(
    path: Path, category: str, count: int, channels: ChannelChoice, *, prefix: str = "u"
) -> int:
    """Add ``count`` users subscribed to ``category``; the number of deliveries one
    message to the category makes."""
    now = _now()
    deliveries = 0
    with _connect(path) as conn:
        seed_category(conn, category)
        for start in range(0, count, BATCH):
            indexes = range(start, min(start + BATCH, count))
            conn.executemany(
                "INSERT INTO users (id, name, email, phone, push_token, timezone, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (user_row(prefix, i, now) for i in indexes),
            )
            subs = [(category, f"{prefix}{i:07d}", ",".join(channels(i)), now) for i in indexes]
            deliveries += sum(len(s[2].split(",")) for s in subs)
            conn.executemany(
                "INSERT INTO subscriptions (category_id, user_id, channels, updated_at)"
                " VALUES (?, ?, ?, ?)",
                subs,
            )
            conn.commit()
    return deliveries


def seed_categories(path: Path, categories: Sequence[str]) -> None:
    with _connect(path) as conn:
        for category in categories:
            seed_category(conn, category)
        conn.commit()


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection for bulk loading."""
    conn = sqlite3.connect(path)
    try:
        # Losing a half-seeded file to a power cut costs nothing: the next run seeds anew.
        conn.execute("PRAGMA synchronous=OFF")
        yield conn
    finally:
        conn.close()


def _now() -> str:
    return datetime.now(UTC).isoformat()
