"""Fixtures of the integration tests: real stores on temporary SQLite files."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol

from client.app import create_app as create_client_app
from notefly.config import Settings
from notefly.containers import Container, resolve
from notefly.domain import Message
from notefly.store.sqlite import SqliteStore

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
