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
    # A slot starts with few digests: a generic plan made then (a connection keeps its
    # prepared statements) scans the whole digests table, which grows with every claim.
    # Plans made for each call see the table's size as it is now, and use its indexes.
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
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
    # Pairs are found along the index of what is collected, oldest due first, a few rows
    # at a time: a GROUP BY over every collected delivery would sort all of them at each
    # claim, what earlier claims took included (quadratic in a big slot). A pair another
    # node is forming right now (its rows locked) is passed over, not waited for.
    passed: set[tuple[str, str]] = set()
    while len(ids) < limit:
        found = await conn.fetch(
            "SELECT user_id, channel FROM deliveries WHERE mode = 'digest'"
            " AND status = 'queued' AND digest_id IS NULL AND not_before <= $1"
            " AND (user_id, channel) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))"
            " ORDER BY not_before LIMIT $4",
            now,
            [user_id for user_id, _ in passed],
            [channel for _, channel in passed],
            limit - len(ids),
        )
        if not found:
            break
        wanted = list(dict.fromkeys((row[0], row[1]) for row in found))
        formed = await _form_digests(conn, node_id, wanted, now)
        passed.update(pair for pair in wanted if pair not in formed)
        ids += formed.values()
    return await _digest_tasks(conn, ids)


async def _form_digests(
    conn: asyncpg.Connection, node_id: str, pairs: Sequence[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], str]:
    """One digest for each (user, channel) of what is due and not being formed by another
    node right now; the digest ids by pair, in the order of ``pairs``, without the pairs
    another node took it all of."""
    # Row locks alone let two nodes split a pair: while one locks its rows in turn, the
    # other skips those already locked and takes the rest. A lock on the pair itself,
    # held until the transaction ends, gives each pair to one node; a pair another node
    # holds is passed over, as its rows were.
    mine = await conn.fetch(
        "SELECT p.user_id, p.channel FROM unnest($1::text[], $2::text[]) AS p(user_id, channel)"
        " WHERE pg_try_advisory_xact_lock(hashtextextended(p.user_id || chr(31) || p.channel, 0))",
        [user_id for user_id, _ in pairs],
        [channel for _, channel in pairs],
    )
    held = {(row[0], row[1]) for row in mine}
    pairs = [pair for pair in pairs if pair in held]
    if not pairs:
        return {}
    rows = await conn.fetch(
        "SELECT id, user_id, channel FROM deliveries"
        " WHERE (user_id, channel) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
        " AND mode = 'digest' AND status = 'queued' AND digest_id IS NULL"
        " AND not_before <= $3 ORDER BY id FOR UPDATE SKIP LOCKED",
        [user_id for user_id, _ in pairs],
        [channel for _, channel in pairs],
        now,
    )
    items: dict[tuple[str, str], list[str]] = {}
    for delivery_id, user_id, channel in rows:
        items.setdefault((user_id, channel), []).append(delivery_id)
    formed = {pair: make_digest_id(*pair, items[pair][0]) for pair in pairs if pair in items}
    if not formed:
        return formed
    await conn.execute(
        "UPDATE deliveries d SET digest_id = c.digest_id, owner = $1"
        " FROM unnest($2::text[], $3::text[]) AS c(id, digest_id) WHERE d.id = c.id",
        node_id,
        [delivery_id for pair, ids in items.items() for delivery_id in ids],
        [formed[pair] for pair, ids in items.items() for _ in ids],
    )
    await conn.execute(
        "INSERT INTO digests (id, user_id, channel, status, owner, items, created_at,"
        " updated_at) SELECT n.id, n.user_id, n.channel, 'queued', $1, n.items, $6, $6"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::int[])"
        " AS n(id, user_id, channel, items)"
        " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner,"
        " items = digests.items + excluded.items",
        node_id,
        list(formed.values()),
        [user_id for user_id, _ in formed],
        [channel for _, channel in formed],
        [len(items[pair]) for pair in formed],
        now,
    )
    return formed


async def _digest_tasks(conn: asyncpg.Connection, ids: Sequence[str]) -> list[DeliveryTask]:
    """The tasks of these digests, in this order, read in three queries whatever their
    number."""
    heads = {
        row[0]: row[1:]
        for row in await conn.fetch(
            "SELECT g.id, g.user_id, g.channel, g.attempts, u.name, u.email, u.phone,"
            " u.push_token, u.timezone FROM digests g LEFT JOIN users u ON u.id = g.user_id"
            " WHERE g.id = ANY($1::text[])",
            list(ids),
        )
    }
    items: dict[str, list[Message]] = {}
    for r in await conn.fetch(
        f"SELECT d.digest_id, {_MESSAGE_COLUMNS} FROM deliveries d"
        " JOIN messages m ON m.id = d.message_id WHERE d.digest_id = ANY($1::text[])"
        " ORDER BY d.digest_id, m.accepted_at DESC, m.id DESC",
        list(ids),
    ):
        items.setdefault(r[0], []).append(
            Message(
                id=r[1],
                category_id=r[2],
                title=r[3],
                body=r[4],
                data=r[5],
                priority=Priority(r[6]),
                idempotency_key=r[7],
                accepted_at=r[8],
            )
        )
    recorded = dict(
        await conn.fetch(
            "SELECT DISTINCT ON (digest_id) digest_id, recipient FROM deliveries"
            " WHERE digest_id = ANY($1::text[]) AND recipient IS NOT NULL ORDER BY digest_id",
            list(ids),
        )
    )
    tasks = []
    for gid in ids:
        user_id, channel, attempts, name, email, phone, push_token, tz = heads[gid]
        user = User(user_id, name or "", email, phone, push_token, tz or "UTC")
        address = task_address(user, channel, recorded.get(gid))
        recipient = Recipient(user_id, user.name, address, user.timezone)
        carried = tuple(items[gid])
        tasks.append(
            DeliveryTask(gid, carried[0], channel, recipient, attempts=attempts, items=carried)
        )
    return tasks


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
