"""The fan-out reference: the plain single-threaded loop, on the same data as Notefly.

For each message: read the audience, render each delivery with the same Jinja2
templates and renderer Notefly uses, and insert the delivery rows (status ``sent``)
in batched transactions with the same durability (WAL, ``synchronous=FULL``). No
actors, no HTTP, no event loop: the cost of the work itself in one Python thread.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from notefly.domain import Message, Recipient, User, delivery_id
from notefly.rendering import TemplateRenderer, build_environment

BATCH = 1000


@dataclass(frozen=True, slots=True)
class PlainResult:
    deliveries: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0


def plain_fanout(
    path: Path, category: str, messages: list[Message], *, batch: int = BATCH
) -> PlainResult:
    """Deliver ``messages`` to the subscribers of ``category`` in the file at ``path``."""
    renderer = TemplateRenderer(build_environment())
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        started, cpu = time.perf_counter(), time.process_time()
        count = sum(_deliver(conn, renderer, category, m, batch) for m in messages)
        return PlainResult(count, time.perf_counter() - started, time.process_time() - cpu)
    finally:
        conn.close()


def _deliver(
    conn: sqlite3.Connection,
    renderer: TemplateRenderer,
    category: str,
    message: Message,
    batch: int,
) -> int:
    conn.execute(
        "INSERT INTO messages (id, category_id, title, body, priority, accepted_at,"
        " fanout_done) VALUES (?, ?, ?, ?, ?, ?, 1)",
        (
            message.id,
            category,
            message.title,
            message.body,
            message.priority.value,
            message.accepted_at.isoformat(),
        ),
    )
    audience = conn.execute(
        "SELECT s.user_id, s.channels, u.name, u.email, u.phone, u.push_token, u.timezone"
        " FROM subscriptions s JOIN users u ON u.id = s.user_id"
        " WHERE s.category_id = ? ORDER BY s.user_id",
        (category,),
    ).fetchall()
    rows: list[tuple[object, ...]] = []
    count = 0
    for user_id, channels, name, email, phone, push_token, tz in audience:
        user = User(user_id, name, email, phone, push_token, tz)
        for channel in channels.split(","):
            recipient = Recipient(user_id, name, user.address_for(channel), tz)
            rendered = renderer.render(channel, message, recipient)
            now = datetime.now(UTC).isoformat()
            rows.append(
                (
                    delivery_id(message.id, user_id, channel),
                    message.id,
                    user_id,
                    channel,
                    "sent",
                    1,
                    "log",
                    rendered.to,
                    rendered.subject,
                    rendered.text,
                    now,
                    now,
                    now,
                )
            )
            if len(rows) >= batch:
                count += _insert(conn, rows)
    return count + _insert(conn, rows)


def _insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> int:
    if not rows:
        return 0
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO deliveries (id, message_id, user_id, channel, status, attempts, provider,"
        " recipient, subject, text, created_at, updated_at, sent_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")
    written = len(rows)
    rows.clear()
    return written
