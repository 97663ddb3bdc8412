"""A publish flood meets a bounded node: 429 with Retry-After, and nothing is lost."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.app import create_app
from notefly.config import Settings
from notefly.containers import Container, resolve, start
from notefly.domain import Rendered, User
from notefly.ports import SendResult
from tests.integration.running import broker_app


class StalledChannel:
    """A provider that does not answer until released, like one that is down."""

    provider = "stalled"

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = asyncio.Event()
        self.sent = 0

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        await self.gate.wait()
        self.sent += 1
        return SendResult(self.provider)


@pytest.fixture
async def flooded(tmp_path: Path) -> AsyncIterator[tuple[Any, StalledChannel, Path]]:
    settings = Settings(data_dir=tmp_path, max_pending=2, max_fanouts=3, send_timeout_seconds=60)
    email = StalledChannel("email")
    channels = {"email": email, "sms": StalledChannel("sms"), "push": StalledChannel("push")}
    async with broker_app(settings, channels) as (http, container):
        directory = await resolve(container.directory)
        for name in ("ann", "ben"):
            await directory.register(User(id=name, name=name, email=f"{name}@example.org"))
            await directory.subscribe(name, "finance", ["email"])
        try:
            yield http, email, settings.sqlite_path
        finally:
            email.gate.set()  # let stalled sends end before the actors stop


async def test_a_flood_gets_429_and_everything_accepted_is_delivered(flooded):
    http, email, db_path = flooded
    accepted, refused = [], None
    for n in range(20):  # bounded: the node holds 2 deliveries and 3 waiting fan-outs
        response = await http.post("/pub", json={"category": "finance", "body": f"tick {n}"})
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 202
        accepted.append((await response.get_json())["id"])
        await asyncio.sleep(0.05)  # let the fan-outs reach the full node
    assert refused is not None, "a full node kept accepting"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.get_json())["error"]["code"] == "overloaded"

    email.gate.set()  # the provider comes back: the backlog drains
    async with asyncio.timeout(20):
        while True:
            with sqlite3.connect(db_path) as db:
                sent = db.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'")
                if sent.fetchone()[0] == 2 * len(accepted):
                    break
            await asyncio.sleep(0.05)
    again = await http.post("/pub", json={"category": "finance", "body": "after the flood"})
    assert again.status_code == 202


async def test_an_unreachable_store_is_503_with_retry_after(tmp_path: Path):
    container = Container(settings=Settings(data_dir=tmp_path))
    await start(container.store)
    app = create_app(container)
    async with app.test_app() as test_app:
        http = test_app.test_client()
        store = await resolve(container.store)
        await store.close()  # the database goes away under a running service
        response = await http.get("/categories")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert (await response.get_json())["error"]["code"] == "store_unavailable"
