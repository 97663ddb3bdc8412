"""Reading what Notefly recorded, read-only, while it runs.

The ``deliveries`` table is the delivery log: a delivery is done when its row says
``sent`` (or ``failed``/``skipped``), and ``sent_at`` is when the provider took it.
Each benchmark runs a Notefly of its own on a database of its own, so "every message"
and "every delivery" in this file are the benchmark's.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from notefly.store.sqlite_flight import IN_FLIGHT


@dataclass(frozen=True, slots=True)
class Progress:
    unfanned: int  # messages whose audience is not all turned into deliveries yet
    queued: int  # deliveries not final yet

    @property
    def done(self) -> bool:
        return self.unfanned == 0 and self.queued == 0


class DeliveryLog:
    def __init__(self, path: Path) -> None:
        # Used from one worker thread at a time (asyncio.to_thread), never concurrently.
        self._conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False
        )

    def close(self) -> None:
        self._conn.close()

    def _scalar(self, sql: str, params: tuple[object, ...] = ()) -> object:
        return self._conn.execute(sql, params).fetchone()[0]

    def nodes(self) -> int:
        return int(str(self._scalar("SELECT count(*) FROM nodes")))

    def messages(self) -> int:
        return int(str(self._scalar("SELECT count(*) FROM messages")))

    def progress(self) -> Progress:
        # Both counts use partial indexes that hold only the unfinished rows.
        unfanned = self._scalar("SELECT count(*) FROM messages WHERE fanout_done = 0")
        queued = self._scalar("SELECT count(*) FROM deliveries WHERE status = 'queued'")
        in_flight = self._scalar(IN_FLIGHT)  # deliveries in hand without rows yet
        return Progress(int(str(unfanned)), int(str(queued)) + int(str(in_flight)))

    def by_status(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status")
        return dict(rows)

    def span(self) -> tuple[datetime, datetime] | None:
        """The first accept of a message and the last delivery recorded as sent."""
        first = self._scalar("SELECT min(accepted_at) FROM messages")
        last = self._scalar("SELECT max(sent_at) FROM deliveries WHERE status = 'sent'")
        if first is None or last is None:
            return None
        return datetime.fromisoformat(str(first)), datetime.fromisoformat(str(last))

    def fanout_owners(self) -> dict[str, int]:
        """How many parts of fan-outs each node took on: a message that was not split
        (the node that accepted it fans it out), or one segment of a split one."""
        rows = self._conn.execute(
            "SELECT owner, count(*) FROM ("
            " SELECT coalesce(fanout_owner, '-') AS owner FROM messages WHERE fanout_split = 0"
            " UNION ALL SELECT coalesce(owner, '-') FROM fanout_segments) GROUP BY 1"
        )
        return dict(rows)

    def timeline(self) -> dict[str, tuple[datetime, datetime, datetime]]:
        """For each message with a delivery sent: when it was accepted, when its first
        delivery row was written (fanned out) and when that delivery was sent."""
        rows = self._conn.execute(
            "SELECT m.id, m.accepted_at, min(d.created_at), min(d.sent_at) FROM messages m"
            " JOIN deliveries d ON d.message_id = m.id WHERE d.status = 'sent' GROUP BY m.id"
        )
        return {
            mid: (datetime.fromisoformat(a), datetime.fromisoformat(c), datetime.fromisoformat(s))
            for mid, a, c, s in rows
        }


async def wait_done(
    log: DeliveryLog, within: float, interval: float, *, expect_messages: int
) -> tuple[bool, float]:
    """Poll until ``expect_messages`` messages are accepted and all their deliveries
    are final, for at most ``within`` seconds; (done, seconds waited)."""
    started = time.monotonic()
    while True:
        progress = await asyncio.to_thread(log.progress)
        accepted = await asyncio.to_thread(log.messages)
        waited = time.monotonic() - started
        if progress.done and accepted >= expect_messages:
            return True, waited
        if waited > within:
            return False, waited
        await asyncio.sleep(interval)
