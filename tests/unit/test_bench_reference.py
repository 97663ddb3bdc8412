"""The plain loop does the work it stands for; the digest seed is what fan-out writes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notefly.bench import seed
from notefly.bench.plain import plain_fanout
from notefly.bench.scenarios.digest import ITEMS, NotImplementedYet, seed_digests
from notefly.domain import Message


async def test_plain_loop_renders_and_records_every_delivery(tmp_path: Path):
    db = tmp_path / "plain.db"
    await seed.create_schema(db)
    per_message = seed.seed_subscribers(db, "bench", 40, seed.some_channels())
    now = datetime.now(UTC)
    messages = [
        Message(id=f"m{i}", category_id="bench", body="Rates rose.", title="Rates", accepted_at=now)
        for i in range(2)
    ]

    result = plain_fanout(db, "bench", messages, batch=7)

    assert result.deliveries == 2 * per_message
    assert result.rate > 0 and result.cpu_seconds > 0
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT channel, status, recipient, text FROM deliveries ORDER BY id"
        ).fetchall()
    assert len(rows) == 2 * per_message
    assert {status for _, status, _, _ in rows} == {"sent"}
    assert all(text and "Rates rose." in text for _, _, _, text in rows)
    sms = [recipient for channel, _, recipient, _ in rows if channel == "sms"]
    assert sms and all(r.startswith("+1555") for r in sms)


async def test_digest_seed_collects_items_due_at_one_moment(tmp_path: Path):
    db = tmp_path / "digest.db"
    await seed.create_schema(db)
    due = datetime(2030, 1, 2, 7, 30, 15, tzinfo=UTC)

    seed_digests(db, 5, due)

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT user_id, mode, status, not_before, digest_id FROM deliveries"
        ).fetchall()
        schedules = {r[0] for r in conn.execute("SELECT schedule FROM subscriptions")}
    assert len(rows) == 5 * ITEMS
    assert len({user for user, *_ in rows}) == 5
    assert {(mode, status, at, gid) for _, mode, status, at, gid in rows} == {
        ("digest", "queued", due.isoformat(), None)
    }
    assert schedules == {"daily@07:30"}


def test_without_digests_in_the_schema_the_scenario_says_so(tmp_path: Path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE TABLE categories (id TEXT PRIMARY KEY, name, description, created_at);"
            "CREATE TABLE users (id TEXT PRIMARY KEY, name, email, phone, push_token,"
            " timezone, created_at, updated_at);"
            "CREATE TABLE subscriptions (category_id, user_id, channels, updated_at);"
            "CREATE TABLE deliveries (id TEXT PRIMARY KEY);"
        )
    with pytest.raises(NotImplementedYet, match="digests are not implemented"):
        seed_digests(db, 3, datetime.now(UTC))
