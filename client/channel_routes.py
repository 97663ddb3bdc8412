"""The client's routes for the real channels, installed by ``install(app, container)``:
push subscriptions and the VAPID key, webhooks and Apprise URLs, the live inbox stream,
one-click unsubscribe."""

from __future__ import annotations

from quart import Quart

from client import endpoints, push, stream, unsubscribe
from client.channel_services import EXTENSION, ChannelServices
from notefly.containers import Container, resolve
from notefly.live import InboxWatcher
from notefly.provider_settings import ProviderSettings


def install(app: Quart, container: Container) -> None:
    own = ProviderSettings(container.settings(), "STREAM", "the live stream")
    poll_seconds = own.seconds("POLL_SECONDS", 0.5)
    heartbeat_seconds = own.seconds("HEARTBEAT_SECONDS", 15.0)

    @app.before_serving
    async def resolve_channel_services() -> None:
        store = await resolve(container.store)
        app.extensions[EXTENSION] = ChannelServices(
            registrations=await resolve(container.registrations),
            directory=await resolve(container.directory),
            feed=store,
            watcher=InboxWatcher(store, poll_seconds=poll_seconds),
            links=await resolve(container.unsubscribe_links),
            heartbeat_seconds=heartbeat_seconds,
        )

    @app.after_serving
    async def stop_watching() -> None:
        found = app.extensions.get(EXTENSION)
        if found is not None:
            await found.watcher.aclose()

    for module in (push, endpoints, stream, unsubscribe):
        app.register_blueprint(module.blueprint)
