"""The references do the work they stand for, and the digest scenario says it cannot run."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from notefly.bench import seed
from notefly.bench.harness import QUICK, Bench
from notefly.bench.plain import plain_fanout
from notefly.bench.report import FAIL
from notefly.bench.scenarios import digest
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


async def test_digest_scenario_fails_with_its_reason_instead_of_a_number(tmp_path: Path):
    bench = Bench(QUICK, 2, tmp_path, {}, None, say=lambda _text: None)
    result = await digest.run(bench)
    [row] = result.rows
    assert row.verdict == FAIL
    assert row.value is None
    assert "digests are not implemented" in row.result
