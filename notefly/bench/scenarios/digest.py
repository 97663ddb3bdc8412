"""5. Digest load: 100,000 users (``--quick``: 10,000) whose daily email digest falls
due at the same moment, each with a few notifications collected since the last one;
every digest rendered and sent within 60 s (``--quick``: 6 s, the same rate).

What the fan-out writes for a digest subscriber is written straight into the file
before Notefly starts (the subscription's ``daily@HH:MM`` schedule, and per user and
message a delivery row collected for the digest: ``mode='digest'``, ``queued``, due at
``not_before``), so the scenario measures the digests, not a fan-out before them. The
clock runs from the moment they fell due to the last digest recorded as sent.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from notefly.bench import seed
from notefly.bench.harness import Bench, Result, notefly
from notefly.bench.report import Row, Target, not_measured, number
from notefly.domain import delivery_id

SCENARIO = "5 digest"
CATEGORY = "bench-digest"
CHANNEL = "email"
ITEMS = 3  # notifications collected per user since the last digest
FULL_USERS, FULL_SECONDS = 100_000, 60.0  # the target of issue #8
LEAD_SECONDS = 15.0  # from seeding to the moment every digest falls due
SENT = ("daily digests sent after falling due", Target("<=", FULL_SECONDS, "s"))
CHECKS = (SENT,)
GRACE_SECONDS = 2.0  # waited past the target: what is not sent by then fails it


class NotImplementedYet(Exception):
    """What the scenario needs from Notefly does not exist (yet)."""


async def run(bench: Bench) -> Result:
    users = bench.sizes.digest_users
    target = Target("<=", FULL_SECONDS * users / FULL_USERS, "s")
    measure = f"{_size(users)} {SENT[0]}"
    try:
        return await _measure(bench, users, measure, target)
    except NotImplementedYet as missing:
        return Result(
            [not_measured(SCENARIO, measure, str(missing), target)],
            {"measured": False, "reason": str(missing)},
        )


async def _measure(bench: Bench, users: int, measure: str, target: Target) -> Result:
    due = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS)

    def seed_collected(db: Path) -> None:
        seed_digests(db, users, due)

    async with notefly(bench, "digest", seed_collected) as node:
        ready = datetime.now(UTC)
        await asyncio.sleep(max(0.0, (due - ready).total_seconds()))
        deadline = time.monotonic() + target.threshold + GRACE_SECONDS
        progress = await asyncio.to_thread(digest_progress, node.db)
        while progress[0] < users and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            progress = await asyncio.to_thread(digest_progress, node.db)
    sent, last_sent = progress
    raw = {"users": users, "items": ITEMS, "sent": sent, "late_start_s": _late(ready, due)}
    if sent < users or last_sent is None:
        waited = target.threshold + GRACE_SECONDS
        row = Row(
            SCENARIO, measure, waited if sent < users else None, "s", target,
            detail=f"at least; {number(sent)} of {number(users)} sent by then,"
            f" {number(sent / waited)} digests/s",
            reason="no digest was sent",
        )  # fmt: skip
        return Result([row], {**raw, "finished": False})
    seconds = (last_sent - due).total_seconds()
    detail = f"{number(users / seconds)} digests/s, {ITEMS} items each, {CHANNEL}"
    if raw["late_start_s"] > 0:
        detail += f"; Notefly was ready {raw['late_start_s']:.1f} s after they fell due"
    return Result(
        [Row(SCENARIO, measure, seconds, "s", target, detail=detail)],
        {**raw, "finished": True, "seconds": seconds},
    )


def seed_digests(db: Path, users: int, due: datetime) -> None:
    """Subscribers with a daily digest due at ``due``, and what was collected for them."""
    seed.seed_subscribers(db, CATEGORY, users, lambda _i: (CHANNEL,), prefix="dg")
    conn = sqlite3.connect(db)
    try:
        if not _has_digests(conn):
            raise NotImplementedYet("digests are not implemented")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(
            "UPDATE subscriptions SET schedule = ? WHERE category_id = ?",
            (f"daily@{due:%H:%M}", CATEGORY),
        )
        messages = [f"msg_bench_digest_{k}" for k in range(ITEMS)]
        for k, mid in enumerate(messages):
            accepted = (due - timedelta(hours=ITEMS - k)).isoformat()
            conn.execute(
                "INSERT INTO messages (id, category_id, title, body, priority, accepted_at,"
                " fanout_done) VALUES (?, ?, ?, ?, 'normal', ?, 1)",
                (mid, CATEGORY, f"Update {k + 1}", f"What happened, part {k + 1}.", accepted),
            )
        created, not_before = (due - timedelta(hours=1)).isoformat(), due.isoformat()
        for start in range(0, users, seed.BATCH):
            conn.executemany(
                "INSERT INTO deliveries (id, message_id, user_id, channel, status, recipient,"
                " created_at, updated_at, mode, not_before)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, 'digest', ?)",
                (
                    (delivery_id(mid, uid, CHANNEL), mid, uid, CHANNEL, email, created,
                     created, not_before)
                    for uid, email in _users(start, min(start + seed.BATCH, users))
                    for mid in messages
                ),
            )  # fmt: skip
        conn.commit()
    finally:
        conn.close()


def digest_progress(db: Path) -> tuple[int, datetime | None]:
    """Digests sent so far, and when the last one was."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        sent, last = conn.execute(
            "SELECT count(*), max(sent_at) FROM digests WHERE status = 'sent'"
        ).fetchone()
    finally:
        conn.close()
    return int(sent), datetime.fromisoformat(last) if last else None


def _users(start: int, stop: int) -> list[tuple[str, str]]:
    return [(f"dg{i:07d}", f"user{i}@example.org") for i in range(start, stop)]


def _has_digests(conn: sqlite3.Connection) -> bool:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    columns = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
    return "digests" in tables and {"mode", "digest_id", "not_before"} <= columns


def _late(ready: datetime, due: datetime) -> float:
    return max(0.0, (ready - due).total_seconds())


def _size(n: int) -> str:
    return f"{n // 1000}k"
