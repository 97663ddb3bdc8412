"""/metrics on both services: the counters move with the work, scraped over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as HttpClient

from tests.integration.opsbroker import OpsBroker, parse_metrics, running_broker, sample


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[OpsBroker]:
    async with running_broker(tmp_path) as running:
        yield running


async def test_counters_move_when_messages_are_delivered(broker: OpsBroker):
    await broker.user(
        "alice", {"finance": ["sms", "email"]}, email="a@example.org", phone="+14155550101"
    )
    await broker.user("carol", {"finance": ["email"]}, email="c@example.org")
    before = await broker.metrics()
    assert sample(before, "notefly_messages_accepted_total", category="finance") == 0

    await broker.delivered(await broker.publish("finance", "Rates up"))
    await broker.delivered(await broker.publish("finance", "Rates down"))
    after = await broker.metrics()

    assert sample(after, "notefly_messages_accepted_total", category="finance") == 2
    sent = {
        channel: sample(
            after, "notefly_deliveries_total", channel=channel, provider="switch", status="sent"
        )
        for channel in ("email", "sms", "push")
    }
    assert sent == {"email": 4, "sms": 2, "push": 0}
    latency = sample(
        after, "notefly_provider_latency_seconds_count", channel="email", provider="switch"
    )
    assert latency == 4
    published = sample(
        after,
        "notefly_http_request_duration_seconds_count",
        service="broker",
        method="POST",
        route="/pub",
        status="202",
    )
    assert published == 2
    assert sample(after, "notefly_deliveries_queued") == 0
    assert sample(after, "notefly_actor_shards") == 3  # 3 channels x 1 shard
    assert sample(after, "notefly_actor_pending_deliveries") == 0


async def test_retries_and_dead_letters_are_counted(broker: OpsBroker):
    await broker.user("bad", {"sports": ["email"]}, email="gone@example.org")
    await broker.user("flaky", {"sports": ["sms"]}, phone="+14155550102")
    broker.channels["email"].refusing.add("gone@example.org")
    broker.channels["sms"].transient = 1

    await broker.delivered(await broker.publish("sports", "Final score"))
    m = await broker.metrics()

    assert sample(m, "notefly_delivery_retries_total", channel="sms", provider="switch") == 1
    assert (
        sample(m, "notefly_deliveries_total", channel="sms", provider="switch", status="sent") == 1
    )
    assert sample(m, "notefly_dead_letters_total", channel="email", provider="switch") == 1
    assert sample(m, "notefly_dead_letters_stored") == 1  # read from the store at scrape


async def test_every_configured_provider_has_a_closed_breaker(broker: OpsBroker):
    m = await broker.metrics()
    for channel in ("sms", "email", "push"):
        assert (
            sample(
                m,
                "notefly_circuit_breaker_state",
                channel=channel,
                provider="switch",
                state="closed",
            )
            == 1
        )
        assert (
            sample(
                m, "notefly_circuit_breaker_state", channel=channel, provider="switch", state="open"
            )
            == 0
        )


async def test_unmatched_paths_do_not_explode_the_route_label(broker: OpsBroker):
    for n in range(3):
        assert (await broker.client.get(f"/no/such/page/{n}")).status_code == 404
    m = await broker.metrics()
    unmatched = sample(
        m,
        "notefly_http_request_duration_seconds_count",
        service="broker",
        method="GET",
        route="unmatched",
        status="404",
    )
    assert unmatched == 3
    assert not [k for k in m if ("route", "/no/such/page/0") in k[1]]


async def test_the_client_exposes_its_request_metrics(client_http: HttpClient):
    response = await client_http.post("/users", json={"name": "dana"})
    assert response.status_code == 201
    assert (await client_http.get("/users")).status_code == 200
    response = await client_http.get("/metrics")
    assert response.status_code == 200
    m = parse_metrics(await response.get_data(as_text=True))
    labels = {"service": "client", "route": "/users"}
    assert (
        sample(
            m, "notefly_http_request_duration_seconds_count", **labels, method="POST", status="201"
        )
        == 1
    )
    assert (
        sample(
            m, "notefly_http_request_duration_seconds_count", **labels, method="GET", status="200"
        )
        == 1
    )


async def test_the_sqlite_write_lock_use_is_counted(broker: OpsBroker):
    await broker.user("alice", {"finance": ["sms"]}, phone="+14155550101")
    await broker.delivered(await broker.publish("finance", "Rates up"))
    deadline = time.monotonic() + 10
    while True:  # the broker counts it once a second
        after = await broker.metrics()
        if sample(after, "notefly_store_write_transactions_total") > 0:
            break
        assert time.monotonic() < deadline, "the writer's transactions were never counted"
        await asyncio.sleep(0.1)
    assert sample(after, "notefly_store_write_lock_held_seconds_total") > 0
    # Exposed even when no write had to wait (``sample`` reads 0 for a missing one).
    assert ("notefly_store_write_lock_wait_seconds_total", frozenset()) in after


async def test_the_threads_cpu_time_is_counted_by_kind(broker: OpsBroker):
    await broker.user("alice", {"finance": ["sms"]}, phone="+14155550101")
    await broker.delivered(await broker.publish("finance", "Rates up"))
    expected = {"MainThread", "sqlite-writer", "sqlite-reader", "shard-sms"}
    deadline = time.monotonic() + 10
    while True:  # counted at each scrape, and once a second
        after = await broker.metrics()
        kinds = {
            dict(labels)["thread"]: seconds
            for (name, labels), seconds in after.items()
            if name == "notefly_thread_cpu_seconds_total"
        }
        if expected <= kinds.keys():
            break
        assert time.monotonic() < deadline, f"threads counted: {sorted(kinds)}"
        await asyncio.sleep(0.1)
    assert kinds["MainThread"] > 0  # it started the broker
    # The broker runs in this process: its threads, counted once each, used no more
    # than the process did (each thread's figure is whole clock ticks, rounded down).
    assert sum(kinds.values()) <= time.process_time()
