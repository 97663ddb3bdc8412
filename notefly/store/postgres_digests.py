"""Digests and throttles on PostgreSQL: what ``PostgresStore`` needs for deliveries that
do not go out at once (see ``notefly.policy``).

A digest is formed from one (user, channel)'s collected deliveries that are due. Nodes
form digests at the same time: each locks the deliveries it puts in a digest with
``SKIP LOCKED``, so a delivery lands in exactly one digest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from notefly.domain import DeliveryStatus, DeliveryTask, Message, Priority, Recipient, User
from notefly.domain import digest_id as make_digest_id
from notefly.schedule import Throttle
from notefly.store.sqlite_rows import task_address

DIGEST_PREFIX = "g_"

_MESSAGE_COLUMNS = (
    "m.id, m.category_id, m.title, m.body, m.data, m.priority, m.idempotency_key, m.accepted_at"
)


async def recent_counts(
    conn: asyncpg.Connection,
    user_ids: Sequence[str],
    throttles: Mapping[str, Throttle],
    now: datetime,
) -> Counter[tuple[str, str]]:
    """Each (user, channel) of the page: its immediate deliveries within the throttle's
    period, which is all a throttle needs to remember (and survives restarts)."""
    counts: Counter[tuple[str, str]] = Counter()
    for channel, throttle in throttles.items():
        rows = await conn.fetch(
            "SELECT user_id, count(*) FROM deliveries WHERE channel = $1"
            " AND mode = 'immediate' AND status IN ('queued', 'sent') AND created_at >= $2"
            " AND user_id = ANY($3::text[]) GROUP BY user_id",
            channel,
            now - throttle.period,
            list(user_ids),
        )
        for user_id, count in rows:
            counts[(user_id, channel)] = count
    return counts


async def claim_digests(
    conn: asyncpg.Connection, node_id: str, now: datetime, limit: int
) -> list[DeliveryTask]:
    """Inside a transaction: due digests waiting for a node, then new ones."""
    rows = await conn.fetch(
        "WITH picked AS (SELECT id FROM digests WHERE status = 'queued' AND owner IS NULL"
        " AND (not_before IS NULL OR not_before <= $2) ORDER BY id LIMIT $3"
        " FOR UPDATE SKIP LOCKED)"
        " UPDATE digests g SET owner = $1 FROM picked WHERE g.id = picked.id RETURNING g.id",
        node_id,
        now,
        limit,
    )
    ids = sorted(row[0] for row in rows)
    groups = await conn.fetch(
        "SELECT user_id, channel FROM deliveries WHERE mode = 'digest' AND status = 'queued'"
        " AND digest_id IS NULL AND not_before <= $1 GROUP BY user_id, channel LIMIT $2",
        now,
        limit - len(ids),
    )
    for user_id, channel in groups:
        gid = await _form_digest(conn, node_id, user_id, channel, now)
        if gid is not None:
            ids.append(gid)
    return [await _digest_task(conn, gid) for gid in ids]


async def _form_digest(
    conn: asyncpg.Connection, node_id: str, user_id: str, channel: str, now: datetime
) -> str | None:
    """One digest of what is due for a user and channel and not being formed by another
    node right now; None when another node took it all."""
    items: list[str] = await conn.fetchval(
        "SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM deliveries"
        " WHERE user_id = $1 AND channel = $2 AND mode = 'digest' AND status = 'queued'"
        " AND digest_id IS NULL AND not_before <= $3 FOR UPDATE SKIP LOCKED) AS due",
        user_id,
        channel,
        now,
    )
    if not items:
        return None
    gid = make_digest_id(user_id, channel, items[0])
    await conn.execute(
        "UPDATE deliveries SET digest_id = $1, owner = $2 WHERE id = ANY($3::text[])",
        gid,
        node_id,
        items,
    )
    await conn.execute(
        "INSERT INTO digests (id, user_id, channel, status, owner, items, created_at,"
        " updated_at) VALUES ($1, $2, $3, 'queued', $4, $5, $6, $6)"
        " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner,"
        " items = digests.items + excluded.items",
        gid,
        user_id,
        channel,
        node_id,
        len(items),
        now,
    )
    return gid


async def _digest_task(conn: asyncpg.Connection, gid: str) -> DeliveryTask:
    row = await conn.fetchrow(
        "SELECT g.user_id, g.channel, g.attempts, u.name, u.email, u.phone, u.push_token,"
        " u.timezone FROM digests g LEFT JOIN users u ON u.id = g.user_id WHERE g.id = $1",
        gid,
    )
    assert row is not None
    user_id, channel, attempts, name, email, phone, push_token, tz = row
    rows = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.digest_id = $1 ORDER BY m.accepted_at DESC, m.id DESC",
        gid,
    )
    items = tuple(
        Message(
            id=r[0],
            category_id=r[1],
            title=r[2],
            body=r[3],
            data=r[4],
            priority=Priority(r[5]),
            idempotency_key=r[6],
            accepted_at=r[7],
        )
        for r in rows
    )
    user = User(user_id, name or "", email, phone, push_token, tz or "UTC")
    recorded = await conn.fetchval(
        "SELECT recipient FROM deliveries WHERE digest_id = $1 AND recipient IS NOT NULL LIMIT 1",
        gid,
    )
    address = task_address(user, channel, recorded)
    recipient = Recipient(user_id, user.name, address, user.timezone)
    return DeliveryTask(gid, items[0], channel, recipient, attempts=attempts, items=items)


async def record_digests(conn: asyncpg.Connection, columns: Sequence[Sequence[Any]]) -> None:
    """Outcomes of digests, as the columns ``PostgresStore.record_outcomes`` builds: the
    digest, and (once final) every delivery it carried."""
    await conn.execute(
        "UPDATE digests g SET status = o.status, attempts = o.attempts,"
        " provider = o.provider, provider_message_id = o.provider_message_id,"
        " recipient = coalesce(o.recipient, g.recipient), subject = o.subject,"
        " text = o.text, error = o.error, updated_at = o.at, sent_at = o.sent_at,"
        " not_before = o.not_before,"
        " owner = CASE WHEN o.status = 'queued' THEN g.owner END"
        f" FROM {OUTCOMES} WHERE g.id = o.id",
        *columns,
    )
    await conn.execute(
        "UPDATE deliveries d SET status = o.status, provider = o.provider,"
        " provider_message_id = o.provider_message_id, error = o.error,"
        f" updated_at = o.at, sent_at = o.sent_at, owner = NULL FROM {OUTCOMES}"
        f" WHERE d.digest_id = o.id AND o.status != '{DeliveryStatus.QUEUED.value}'",
        *columns,
    )


# The outcome columns as a table ``o``, from twelve array parameters.
OUTCOMES = (
    "unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],"
    " $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],"
    " $12::timestamptz[]) AS o(id, status, attempts, provider, provider_message_id,"
    " recipient, subject, text, error, at, sent_at, not_before)"
)
