"""/healthz and /readyz of both services on real stores: what an orchestrator sees."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as HttpClient

from client.app import create_app as create_client_app
from notefly.config import Settings
from notefly.containers import Container, start, stop
from notefly.health import known_migrations
from tests.integration.opsbroker import OpsBroker, running_broker


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[OpsBroker]:
    async with running_broker(tmp_path) as running:
        yield running


def checks(body: dict[str, object]) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in body["checks"]}  # type: ignore[attr-defined]


async def test_a_running_broker_is_alive_and_ready(broker: OpsBroker):
    status, body = await broker.json("/healthz")
    assert status == 200 and body["status"] == "ok"
    status, body = await broker.json("/readyz")
    assert status == 200
    assert body["ready"] is True
    assert checks(body) == {"store": True, "migrations": True, "actors": True}


async def test_a_broker_whose_actors_stopped_is_alive_but_not_ready(broker: OpsBroker):
    await stop(broker.container.actors)
    status, _body = await broker.json("/healthz")
    assert status == 200  # the process is alive: do not restart it for this
    status, body = await broker.json("/readyz")
    assert status == 503
    assert checks(body) == {"store": True, "migrations": True, "actors": False}
    detail = next(c["detail"] for c in body["checks"] if c["name"] == "actors")
    assert detail == "no shard actor is running"


async def test_a_missing_migration_makes_the_broker_not_ready(broker: OpsBroker):
    latest = known_migrations("sqlite")[-1]

    def forget_latest() -> None:
        with sqlite3.connect(broker.db_path, timeout=10) as db:
            db.execute("DELETE FROM schema_migrations WHERE version = ?", (latest,))

    # Off the event loop: the broker's writer needs the loop to finish what it holds.
    await asyncio.to_thread(forget_latest)
    status, body = await broker.json("/readyz")
    assert status == 503
    assert checks(body)["migrations"] is False
    assert f"pending: {latest}" in str(body)


async def test_the_client_is_ready_with_its_store_and_schema(client_http: HttpClient):
    response = await client_http.get("/readyz")
    assert response.status_code == 200
    body = await response.get_json()
    assert checks(body) == {"store": True, "migrations": True}


async def test_a_client_whose_store_is_closed_is_not_ready(tmp_path: Path):
    container = Container(settings=Settings(data_dir=tmp_path))
    await start(container.store)
    app = create_client_app(container)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/readyz")).status_code == 200
        await stop(container.store)
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = await response.get_json()
        assert checks(body) == {"store": False, "migrations": False}


async def test_readiness_is_in_the_api_description(broker: OpsBroker):
    _status, spec = await broker.json("/openapi.json")
    assert {"/readyz", "/status", "/deliveries/{delivery_id}/retry"} <= set(spec["paths"])
    assert "/metrics" not in spec["paths"] and "/dashboard" not in spec["paths"]
