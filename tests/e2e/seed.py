"""A failed delivery written into a store before the broker starts.

The log providers that the end-to-end tests run never fail, and a test-only provider
would need an entry point of its own. So the tests create the schema with the real
``notefly migrate``, then write the rows a shard records when a provider gives up on a
delivery (status ``failed``, its attempts, the provider's error), for a user whose
address is valid. The broker then starts on that store, exactly as after an outage.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from notefly.domain import delivery_id

ERROR = "421 relay unavailable: connection refused (seeded by the test)"


@dataclass(frozen=True)
class Seeded:
    message_id: str
    delivery_id: str
    user_id: str


def failed_delivery(data_dir: Path) -> Seeded:
    subprocess.run(
        [sys.executable, "-m", "notefly", "migrate", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    now = datetime.now(UTC).isoformat()
    user, message = "usr_seeded_erin", "msg_00000000001seeded"
    did = delivery_id(message, user, "email")
    with contextlib.closing(sqlite3.connect(data_dir / "notefly.db", timeout=10)) as db, db:
        db.execute(
            "INSERT INTO users (id, name, email, timezone, created_at, updated_at)"
            " VALUES (?, 'Erin', 'erin@example.org', 'UTC', ?, ?)",
            (user, now, now),
        )
        db.execute(
            "INSERT INTO messages (id, category_id, title, body, data, priority, accepted_at,"
            " fanout_done) VALUES (?, 'finance', 'Rates up', 'The key rate rose.', '{}',"
            " 'normal', ?, 1)",
            (message, now),
        )
        db.execute(
            "INSERT INTO deliveries (id, message_id, user_id, channel, status, attempts,"
            " provider, recipient, error, created_at, updated_at)"
            " VALUES (?, ?, ?, 'email', 'failed', 5, 'log', 'erin@example.org', ?, ?, ?)",
            (did, message, user, ERROR, now, now),
        )
    return Seeded(message, did, user)
