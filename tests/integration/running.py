"""A broker app on a real container (store and actors started), with swapped providers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from dependency_injector import providers

from broker.app import create_app
from notefly.config import Settings
from notefly.containers import Container, start, stop


@contextlib.asynccontextmanager
async def broker_app(
    settings: Settings, channels: Mapping[str, Any]
) -> AsyncIterator[tuple[Any, Container]]:
    """Yields the app's test client and its container; stops everything afterwards."""
    container = Container(settings=settings)
    container.channels.override(providers.Object(dict(channels)))
    await start(container.store)
    await start(container.actors)
    app = create_app(container)
    try:
        async with app.test_app() as test_app:
            yield test_app.test_client(), container
    finally:
        await stop(container.actors)
        await stop(container.store)
