"""What the registration-based providers ask of the store: who and what a delivery is
for (a digest included), and the endpoints of a user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from notefly.errors import NotFound
from tests.integration.channel_helpers import World, make_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for found in make_world(tmp_path):
        yield found


async def test_a_delivery_names_its_user_and_message(world: World) -> None:
    ada = await world.user(email="ada@example.org")
    await world.directory.subscribe(ada.id, "finance", ["email"])
    task = await world.task(ada, "email", title="Rates up")

    context = await world.store.delivery_context(task.id)

    assert (context.delivery_id, context.user_id) == (task.id, ada.id)
    assert context.message == task.message


async def test_a_digest_names_its_user_and_newest_message(world: World) -> None:
    ada = await world.user(email="ada@example.org")
    await world.directory.subscribe(ada.id, "finance", ["email"])
    older = await world.task(ada, "email", title="Older")
    newer = await world.task(ada, "email", title="Newer")

    async def collect(conn: aiosqlite.Connection) -> None:  # as the digest collector does
        await conn.execute(
            "UPDATE deliveries SET digest_id = 'g_test' WHERE id IN (?, ?)", (older.id, newer.id)
        )

    await world.store.writer.run(collect)
    context = await world.store.delivery_context("g_test")

    assert (context.user_id, context.message.id) == (ada.id, newer.message.id)


async def test_an_unknown_delivery_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await world.store.delivery_context("d_unknown")
