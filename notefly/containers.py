"""The composition root: one container per process builds every object.

Nothing is built at import time. The store and the actor system are Resources with a
start and a stop; tests override providers (``container.channels.override(...)``)
before anything is resolved.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar, cast

from dependency_injector import containers, providers

from notefly.actors import ActorSystem
from notefly.actors.shard import ShardSettings
from notefly.clock import SortableIds, SystemClock
from notefly.config import Settings
from notefly.plugins import load_channels
from notefly.ports import Channel, Clock, NullObserver, Observer
from notefly.rendering import TemplateRenderer, build_environment
from notefly.services import Catalogue, Directory, Inbox, Publisher
from notefly.store.sqlite import SqliteStore

T = TypeVar("T")


async def open_store(settings: Settings, clock: Clock) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(settings.sqlite_path, clock)
    try:
        yield store
    finally:
        await store.close()


async def run_actors(
    settings: Settings,
    store: SqliteStore,
    renderer: TemplateRenderer,
    channels: Mapping[str, Channel],
    clock: Clock,
    monotonic: Callable[[], float],
    observer: Observer,
) -> AsyncIterator[ActorSystem]:
    system = ActorSystem(
        observer=observer,
        store=store,
        renderer=renderer,
        channels=channels,
        clock=clock,
        monotonic=monotonic,
        shards_per_channel=settings.shards_per_channel,
        page_size=settings.fanout_page_size,
        shard_settings=ShardSettings(
            max_attempts=settings.max_attempts,
            retry_base_seconds=settings.retry_base_seconds,
            round_size=settings.round_size,
            entity_idle_seconds=settings.entity_idle_seconds,
            send_timeout_seconds=settings.send_timeout_seconds,
        ),
    )
    await system.start()
    try:
        yield system
    finally:
        await system.stop()


def _template_dirs(settings: Settings) -> list[object]:
    return [settings.template_dir] if settings.template_dir else []


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    clock = providers.ThreadSafeSingleton(SystemClock)
    monotonic = providers.Object(time.monotonic)
    ids = providers.ThreadSafeSingleton(SortableIds, clock)

    store = providers.Resource(open_store, settings=settings, clock=clock)
    template_env = providers.ThreadSafeSingleton(
        build_environment, providers.Callable(_template_dirs, settings)
    )
    renderer = providers.ThreadSafeSingleton(TemplateRenderer, template_env)
    channels = providers.ThreadSafeSingleton(load_channels, settings)
    observer: providers.Provider[Observer] = providers.ThreadSafeSingleton(NullObserver)
    actors = providers.Resource(
        run_actors,
        observer=observer,
        settings=settings,
        store=store,
        renderer=renderer,
        channels=channels,
        clock=clock,
        monotonic=monotonic,
    )

    publisher = providers.Factory(
        Publisher, store=store, dispatcher=actors, ids=ids, clock=clock, observer=observer
    )
    directory = providers.Factory(
        Directory,
        store=store,
        ids=ids,
        clock=clock,
        channels=providers.Callable(lambda s: s.channels, settings),
    )
    inbox = providers.Factory(Inbox, store=store)
    catalogue = providers.Factory(Catalogue, store=store)


async def resolve(provider: Callable[[], T]) -> T:
    """The object a provider gives, awaiting it when it depends on an async Resource."""
    value: Any = provider()
    if inspect.isawaitable(value):
        value = await value
    return cast(T, value)


async def start(resource: Any) -> None:
    """Initialise a Resource provider (async or not)."""
    result = resource.init()
    if inspect.isawaitable(result):
        await result


async def stop(resource: Any) -> None:
    """Shut a Resource provider down (async or not); a no-op if it never started."""
    result = resource.shutdown()
    if inspect.isawaitable(result):
        await result
