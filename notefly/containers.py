"""The composition root: one container per process builds every object.

Nothing is built at import time. The store and the actor system are Resources with a
start and a stop; tests override providers (``container.channels.override(...)``)
before anything is resolved.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dependency_injector import containers, providers

from notefly.actors import ActorSystem
from notefly.actors.pump import PumpSettings
from notefly.actors.shard import ShardSettings
from notefly.breaker import Breakers, BreakerSettings, OnChange
from notefly.clock import SortableIds, SystemClock
from notefly.config import Settings
from notefly.metrics import PrometheusObserver
from notefly.plugins import load_channels
from notefly.ports import Channel, Clock, Observer, Store
from notefly.registrations import RegistrationPolicy, Registrations
from notefly.rendering import TemplateRenderer, build_environment
from notefly.services import Catalogue, Directory, Inbox, Publisher
from notefly.store.sqlite import SqliteStore
from notefly.unsubscribe import UnsubscribeLinks

if TYPE_CHECKING:
    from notefly.store.postgres import PostgresStore

T = TypeVar("T")


async def open_store(
    settings: Settings, clock: Clock
) -> AsyncIterator[SqliteStore | PostgresStore]:
    """The store ``settings.database_url`` names: SQLite, or PostgreSQL for several nodes."""
    store: SqliteStore | PostgresStore
    if settings.store_backend == "postgres":
        # Imported here: SQLite users need no PostgreSQL driver.
        from notefly.store.postgres import PostgresStore

        assert settings.database_url is not None
        store = await PostgresStore.open(
            settings.database_url, clock, pool_size=settings.database_pool_size
        )
    else:
        store = await SqliteStore.open(settings.sqlite_path, clock)
    try:
        yield store
    finally:
        await store.close()


async def run_actors(
    settings: Settings,
    store: Store,
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
        node_id=settings.node,
        shards_per_channel=settings.shards_per_channel,
        page_size=settings.fanout_page_size,
        segment_users=settings.fanout_segment_users,
        max_pending=settings.max_pending,
        max_fanouts=settings.max_fanouts,
        throttles=settings.throttles,
        shard_settings=ShardSettings(
            max_attempts=settings.max_attempts,
            retry_base_seconds=settings.retry_base_seconds,
            round_size=settings.round_size,
            send_timeout_seconds=settings.send_timeout_seconds,
        ),
        pump_settings=PumpSettings(
            heartbeat_seconds=settings.heartbeat_seconds,
            node_timeout_seconds=settings.node_timeout_seconds,
            poll_seconds=settings.poll_seconds,
        ),
    )
    await system.start()
    try:
        yield system
    finally:
        for channel in channels.values():
            stand_down = getattr(channel, "stand_down", None)
            if stand_down is not None:
                stand_down()  # a circuit breaker must not open on our own shutdown
        await system.stop()
        await close_channels(channels)


async def close_channels(channels: Mapping[str, Channel]) -> None:
    """Close the providers that hold connections (``aclose``), once nothing sends."""
    for channel in channels.values():
        aclose = getattr(channel, "aclose", None)
        if aclose is not None:
            await aclose()


def breaker_listener(observer: object) -> OnChange | None:
    """The observer's hook for breaker changes (the metrics), if it has one."""
    hook = getattr(observer, "breaker_changed", None)
    return cast(OnChange, hook) if callable(hook) else None


def guard_channels(channels: Mapping[str, Channel], breakers: Breakers) -> dict[str, Channel]:
    return breakers.guard(channels)


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
    channels = providers.ThreadSafeSingleton(load_channels, settings, addresses=store)
    observer: providers.Provider[Observer] = providers.ThreadSafeSingleton(PrometheusObserver)
    breakers = providers.ThreadSafeSingleton(
        Breakers,
        settings=providers.Callable(BreakerSettings.from_settings, settings),
        monotonic=monotonic,
        on_change=providers.Callable(breaker_listener, observer),
    )
    # What the actors send through: every provider behind its circuit breaker.
    guarded_channels = providers.ThreadSafeSingleton(guard_channels, channels, breakers)
    actors = providers.Resource(
        run_actors,
        observer=observer,
        settings=settings,
        store=store,
        renderer=renderer,
        channels=guarded_channels,
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
        addresses=store,
    )
    registrations = providers.Factory(
        Registrations,
        book=store,
        store=store,
        ids=ids,
        clock=clock,
        policy=providers.Callable(RegistrationPolicy.from_settings, settings),
    )
    unsubscribe_links = providers.ThreadSafeSingleton(UnsubscribeLinks.from_settings, settings)
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
