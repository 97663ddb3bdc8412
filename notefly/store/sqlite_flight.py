"""Pages in flight on SQLite: deliveries written once, with their outcome.

Written as queued when its page commits and rewritten with its outcome a moment later,
a delivery that goes out at once costs two writes under the file's one write lock:
about 7 us to insert and 9-10 us to update (the row grows by its text, and moves
between the indexes of queued and of final rows). Several workers share that lock, so
it bounds a broadcast's rate. Held back instead, the delivery is inserted once, by the
outcome, and its page keeps a row of its own (``fanout_pages``) until the last of its
deliveries is written: that row, not the deliveries, is what survives a crash, and the
node that claims it plans the range again and sends only what has no row yet.

Pages with a throttle are written whole, as before: a throttle counts the deliveries
of every message in its period, so those must have rows as soon as they are planned.
So are small pages (``HOLD_AT_LEAST``).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

from notefly.domain import SENT, STATUS_VALUE, AudienceIds, Delivery, DeliveryStatus, Outcome
from notefly.store.writer import ROWS_PER_STATEMENT, write_rows

# The users a page in flight names, and what each may not step back below when that
# user is erased (as ``SEGMENT_STEP_BACK``).
PAGE_STEP_BACK = (("last_user", "after_user"), ("after_user", "''"))

# A page in flight costs statements of its own (its row, its count, its removal), each
# a wait for the GIL under the lock: a page with fewer deliveries that go out at once
# (a message to a few users) is written whole.
HOLD_AT_LEAST = 100
_PAGE = itemgetter(-1)  # a held row's page, its last value

OPEN_PAGES = "SELECT 1 FROM fanout_pages WHERE owner IS NULL"
# The deliveries of pages in flight: queued, for every count of the work left.
IN_FLIGHT = "SELECT coalesce(sum(pending), 0) FROM fanout_pages"


def page_key(message_id: str, after_user: str) -> str:
    """A page's key: a page planned again (its first try rolled back, or the audience
    changed before it was written) is the same page. A hash, so that it names no user
    (an erased one's id may not stay behind)."""
    digest = hashlib.blake2b(f"{message_id}/{after_user}".encode(), digest_size=12)
    return "p_" + digest.hexdigest()


class Held(NamedTuple):
    """What a delivery in flight needs to become a row, besides its outcome."""

    page: str  # its page's row in fanout_pages (``page_key``)
    message_id: str
    user_id: str
    channel: str
    recipient: str | None  # as planned, when the outcome names none
    created_at: str
    owner: str | None  # keeps it while it waits to be retried
    mode: str
    note: str | None


# An outcome row of a delivery with a row (see SqliteStore.record_outcomes): 13 values,
# the delivery id last. A held row (``held_row``) is longer.
OUTCOME_WIDTH = 13
_INSERTED = (
    "id, message_id, user_id, channel, status, attempts, provider, provider_message_id,"
    " recipient, subject, text, error, created_at, updated_at, sent_at, not_before, owner,"
    " mode, note"
)
# Most held rows are sends that went out at once and are over: no error, no retry, no
# owner, no note, mode immediate. Those leave the five columns at their defaults and
# bind 14 values instead of 19: 6.2 instead of 7.7 us a row under the write lock (a
# microbenchmark of 1,200-row transactions).
_INSERTED_PLAIN = (
    "id, message_id, user_id, channel, status, attempts, provider, provider_message_id,"
    " recipient, subject, text, created_at, updated_at, sent_at"
)
PLAIN_HELD_WIDTH = 15  # _INSERTED_PLAIN, then the page
_SHARED_WIDTH = 11  # the columns both lists begin with, up to text
_PLAIN_MODE = "immediate"  # the column's default


def held_row(
    held: Held, outcome: Outcome, stamp: str, not_before: str | None, retrying: bool
) -> tuple[Any, ...]:
    """The row a delivery in flight is inserted as with its first outcome (the columns
    of ``_INSERTED``, or of ``_INSERTED_PLAIN`` when the others keep their defaults),
    then its page. Made outside the write lock."""
    status = outcome.status
    sent_at = stamp if status is SENT else None
    recipient = outcome.recipient if outcome.recipient is not None else held.recipient
    # The plain row, made as one tuple: most of a broadcast's rows are plain.
    row = (
        outcome.delivery_id, held.message_id, held.user_id, held.channel,
        STATUS_VALUE[status], outcome.attempts, outcome.provider,
        outcome.provider_message_id, recipient, outcome.subject, outcome.text,
        held.created_at, stamp, sent_at, held.page,
    )  # fmt: skip
    if (
        outcome.error is None
        and not_before is None
        and not retrying
        and held.mode == _PLAIN_MODE
        and held.note is None
    ):
        return row
    return (
        *row[:_SHARED_WIDTH], outcome.error, held.created_at, stamp, sent_at, not_before,
        held.owner if retrying else None, held.mode, held.note, held.page,
    )  # fmt: skip


def insert_held(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write the deliveries of pages in flight with their first outcomes (``held_row``),
    and let their pages go once every delivery of theirs has a row.

    Not for a user erased meanwhile: the send happened, but nothing of theirs may come
    back. A row that exists after all (the page was planned again elsewhere, its node
    thought dead) is left as it is: the node that wrote it sends it and records it.
    Each statement here writes many rows (see ``write_rows``)."""
    plain = [r for r in rows if len(r) == PLAIN_HELD_WIDTH]
    full = [r for r in rows if len(r) != PLAIN_HELD_WIDTH] if len(plain) < len(rows) else []
    for columns, shaped in ((_INSERTED_PLAIN, plain), (_INSERTED, full)):
        if shaped:
            values = ", ".join(f"column{i}" for i in range(1, len(shaped[0])))  # not the page
            write_rows(
                conn,
                f"INSERT OR IGNORE INTO deliveries ({columns}) SELECT {values} FROM (",
                shaped,
                ") AS v WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = v.column3)",
            )
    pages = Counter(map(_PAGE, rows))  # no Python frame a row: this runs under the lock
    counts = list(pages.items())
    write_rows(
        conn,
        "UPDATE fanout_pages SET pending = pending - v.column2 FROM (",
        counts,
        ") AS v WHERE fanout_pages.id = v.column1",
    )
    marks = ", ".join("?" * len(pages))
    conn.execute(f"DELETE FROM fanout_pages WHERE id IN ({marks}) AND pending <= 0", list(pages))


def existing(conn: sqlite3.Connection, ids: Iterable[str]) -> set[str]:
    """Those of ``ids`` that have a delivery row."""
    found: set[str] = set()
    ids = list(ids)
    for first in range(0, len(ids), ROWS_PER_STATEMENT):
        chunk = ids[first : first + ROWS_PER_STATEMENT]
        marks = ", ".join("?" * len(chunk))
        cursor = conn.execute(f"SELECT id FROM deliveries WHERE id IN ({marks})", chunk)
        found.update(row[0] for row in cursor)
    return found


class PageInFlight(NamedTuple):
    message_id: str
    after_user: str
    last_user: str
    created_at: datetime
    category_id: str


def pages_in_flight(conn: sqlite3.Connection, message_id: str | None = None) -> list[PageInFlight]:
    """The pages in flight (of one message, or of all), newest first."""
    rows = conn.execute(
        "SELECT p.message_id, p.after_user, p.last_user, p.created_at, m.category_id"
        " FROM fanout_pages p JOIN messages m ON m.id = p.message_id"
        " WHERE ? IS NULL OR p.message_id = ? ORDER BY p.created_at DESC, p.rowid DESC",
        (message_id, message_id),
    ).fetchall()
    return [PageInFlight(m, a, last, datetime.fromisoformat(c), cat) for m, a, last, c, cat in rows]


def page_deliveries(conn: sqlite3.Connection, page: PageInFlight) -> list[Delivery]:
    """The page's deliveries that have no row yet: queued, as the counts show them.
    Read from the page's range of the audience as it is now; a channel a user added
    since the page was planned is listed until the page is over, though it is not on
    its way. All have the page's time as their last update."""
    subscribers = conn.execute(
        "SELECT user_id, channels FROM subscriptions"
        " WHERE category_id = ? AND user_id > ? AND user_id <= ? ORDER BY user_id",
        (page.category_id, page.after_user, page.last_user),
    ).fetchall()
    ids = AudienceIds(page.message_id)
    candidates = [
        (ids.delivery(user_id, channel), user_id, channel)
        for user_id, channels in subscribers
        for channel in channels.split(",")
    ]
    written = existing(conn, [c[0] for c in candidates])
    at = page.created_at
    return [
        Delivery(
            did, page.message_id, user_id, channel, DeliveryStatus.QUEUED, 0, None, None,
            None, None, None, None, at, at, None,
        )
        for did, user_id, channel in candidates
        if did not in written
    ]  # fmt: skip
