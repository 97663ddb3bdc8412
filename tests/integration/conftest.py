"""Fixtures of the integration tests: real stores on temporary SQLite files."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol

from client.app import create_app as create_client_app
from notefly.config import Settings
from notefly.containers import Container, resolve
from notefly.domain import Message, Rendered
from notefly.ports import SendResult
from notefly.services import Directory
from notefly.store.sqlite import SqliteStore
from tests.integration.running import broker_app

# -- the client service -----------------------------------------------------------

ClientPublish = Callable[..., Awaitable[Message]]


@pytest.fixture
async def client_container(tmp_path: Path) -> AsyncIterator[Container]:
    """A container on a fresh SQLite file; the client needs no actor system."""
    container = Container(settings=Settings(data_dir=tmp_path))
    started = container.store.init()
    assert started is not None  # an async Resource starts and stops with an awaitable
    await started
    try:
        yield container
    finally:
        stopped = container.store.shutdown()
        assert stopped is not None
        await stopped


@pytest.fixture
async def client_store(client_container: Container) -> SqliteStore:
    return await resolve(client_container.store)


@pytest.fixture
async def client_http(client_container: Container) -> AsyncIterator[TestClientProtocol]:
    app = create_client_app(client_container)
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.fixture
def client_message_ids() -> Iterator[str]:
    # Zero-padded so the ids sort in the order the messages are published.
    return (f"msg_test_{n:06d}" for n in itertools.count(1))


@pytest.fixture
def client_publish(client_store: SqliteStore, client_message_ids: Iterator[str]) -> ClientPublish:
    """Publish as the broker would: commit the message, then write its audience's inbox."""

    async def publish(category: str, body: str, title: str | None = None) -> Message:
        message = Message(
            id=next(client_message_ids),
            category_id=category,
            body=body,
            title=title,
            accepted_at=datetime.now(UTC),
        )
        stored, _created = await client_store.accept_message(message)
        await client_store.fanout_page(stored, None, 100, ["sms", "email", "push"])
        return stored

    return publish


# -- the broker service -------------------------------------------------------------


class RecordingChannel:
    """A provider that records every call (from the event loop) and sends nothing."""

    provider = "recording"

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, Rendered]] = []
        self._lock = threading.Lock()

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        with self._lock:
            self.calls.append((delivery_id, rendered))
        return SendResult(self.provider, provider_message_id=f"rec-{delivery_id}")


@dataclass
class Broker:
    client: Any
    container: Container
    channels: dict[str, RecordingChannel]
    directory: Directory
    db_path: Path

    async def publish(self, **payload: Any) -> Any:
        return await self.client.post("/pub", json=payload)

    async def delivered(self, message_id: str, within: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                status: dict[str, Any] = await (
                    await self.client.get(f"/messages/{message_id}")
                ).get_json()
                if status["status"] == "delivered":
                    return status
                await asyncio.sleep(0.02)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    settings = Settings(data_dir=tmp_path, max_body_bytes=16 * 1024)
    channels = {name: RecordingChannel(name) for name in settings.channels}
    async with broker_app(settings, channels) as (http, container):
        yield Broker(
            http, container, channels, await resolve(container.directory), settings.sqlite_path
        )
