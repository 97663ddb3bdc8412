"""The benchmark's PostgreSQL databases and delivery-log reader, on the real test server
(``tests/contract/postgres_server.py``: skipped when there is none, failing in CI)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from notefly.bench.pglog import (
    PREFIX,
    BenchDatabases,
    PostgresDeliveryLog,
    add_category,
    seed_subscribers,
    wait_done,
)
from notefly.bench.seed import some_channels
from tests.contract.postgres_server import PostgresServer, reach_server

CATEGORY = "bench-nodes"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    return reach_server()


@pytest.fixture
async def dbs(server: PostgresServer) -> AsyncIterator[BenchDatabases]:
    databases = BenchDatabases(server.admin_url)
    try:
        yield databases
    finally:
        await databases.drop_all()


async def existing(server: PostgresServer, prefix: str) -> list[str]:
    conn = await asyncpg.connect(server.admin_url)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%"
        )
    finally:
        await conn.close()
    return sorted(row[0] for row in rows)


async def test_databases_are_named_for_the_bench_and_all_dropped(
    server: PostgresServer, dbs: BenchDatabases
):
    template = await dbs.create()
    copy = await dbs.create("2nodes", template=template)
    assert template.startswith(PREFIX) and copy == f"{template}_2nodes"
    assert await existing(server, dbs.base) == [template, copy]
    await dbs.drop_all()
    assert await existing(server, dbs.base) == []
    assert dbs.created == []


async def test_seeded_copy_is_read_back_as_the_nodes_record_it(dbs: BenchDatabases):
    template = await dbs.create()
    per_message = await seed_subscribers(dbs.url(template), CATEGORY, 40, some_channels())
    await add_category(dbs.url(template), "bench-nodes-ingest")
    url = dbs.url(await dbs.create("1nodes", template=template))
    choice = some_channels()
    assert per_message == sum(len(choice(i)) for i in range(40))

    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM subscriptions") == 40
        channels = await conn.fetchval(
            "SELECT channels FROM subscriptions WHERE user_id = 'u0000000'"
        )
        assert tuple(channels) == choice(0)
        # What two nodes would have written for one message: its fan-out and deliveries.
        await conn.execute(
            "INSERT INTO nodes (id, started_at, heartbeat_at) VALUES"
            " ('bench-node-1', $1, $1), ('bench-node-2', $1, $1)",
            T0,
        )
        await conn.execute(
            "INSERT INTO messages (id, category_id, body, priority, accepted_at, fanout_owner,"
            " fanout_done) VALUES ('msg_1', $1, 'b', 'normal', $2, 'bench-node-2', true)",
            CATEGORY,
            T0,
        )
        for i, status in enumerate(["sent", "sent", "queued"]):
            await conn.execute(
                "INSERT INTO deliveries (id, message_id, user_id, channel, status, created_at,"
                " updated_at, sent_at) VALUES ($1, 'msg_1', $2, 'sms', $3, $4, $4, $5)",
                f"dlv_{i}",
                f"u{i:07d}",
                status,
                T0,
                T0 + timedelta(seconds=i + 1) if status == "sent" else None,
            )
        log = await PostgresDeliveryLog.open(url)
        try:
            assert await log.nodes() == {"bench-node-1", "bench-node-2"}
            assert await log.messages(CATEGORY) == 1
            assert (await log.progress()).queued == 1
            done, _ = await wait_done(log, 0.2, 0.05, category=CATEGORY, expect_messages=1)
            assert not done  # one delivery still queued
            assert await log.by_status() == {"sent": 2, "queued": 1}
            assert await log.sent_per_message(CATEGORY) == {"msg_1": 2}
            assert await log.repeated_recipients() == 0
            assert await log.span(CATEGORY) == (T0, T0 + timedelta(seconds=2))
            assert await log.fanout_owners(CATEGORY) == {"bench-node-2": 1}

            await conn.execute("UPDATE deliveries SET status = 'sent' WHERE id = 'dlv_2'")
            done, _ = await wait_done(log, 5, 0.05, category=CATEGORY, expect_messages=1)
            assert done
        finally:
            await log.close()
    finally:
        await conn.close()
