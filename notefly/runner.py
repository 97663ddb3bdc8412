"""Running Notefly: the store, the actor system and the HTTP services of one process.

The runner owns the lifecycle: it starts the container's resources, serves the apps
with hypercorn until SIGTERM or SIGINT, then stops the actors and closes the store,
so that the process exits within a few seconds and nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import Any

import structlog
from hypercorn.asyncio import serve
from hypercorn.config import Config

from notefly import demo
from notefly.containers import Container, resolve, start, stop
from notefly.plugins import load_app_factory

log = structlog.get_logger("notefly")


@dataclass(frozen=True, slots=True)
class Service:
    name: str  # "broker" or "client"
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def hypercorn_config(service: Service, grace: float, *, reuse_port: bool = False) -> Config:
    config = Config()
    config.bind = [f"{service.host}:{service.port}"]
    if reuse_port:
        # Several worker processes bind the same port; hypercorn sets SO_REUSEPORT when
        # it is told there are several workers (it spawns none itself under serve()).
        config.workers = 2
    config.graceful_timeout = grace
    config.accesslog = None
    config.errorlog = "-"
    return config


async def run(
    container: Container,
    services: list[Service],
    *,
    seed_demo: bool = False,
    grace: float = 3.0,
    reuse_port: bool = False,
) -> None:
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown.set)
    with_broker = any(s.name == "broker" for s in services)
    await start(container.store)
    try:
        if with_broker:
            await start(container.actors)
        apps: list[tuple[Service, Any]] = [
            (s, load_app_factory(s.name)(container)) for s in services
        ]
        servers = [
            asyncio.create_task(
                serve(
                    app,
                    hypercorn_config(s, grace, reuse_port=reuse_port),
                    shutdown_trigger=shutdown.wait,
                )
            )
            for s, app in apps
        ]
        log.info("notefly.ready", **{s.name: s.url for s in services})
        if seed_demo:
            await _seed(container, publish=with_broker)
        await asyncio.gather(*servers)
    finally:
        log.info("notefly.stopping")
        if with_broker:
            await stop(container.actors)
        await stop(container.store)
        log.info("notefly.stopped")


async def _seed(container: Container, *, publish: bool) -> None:
    store = await resolve(container.store)
    users = await demo.seed_users(await resolve(container.directory), store)
    log.info("demo.users", users=[f"{u.name} ({u.id})" for u in users])
    if publish:
        ids = await demo.publish_messages(await resolve(container.publisher), key_prefix="demo")
        log.info("demo.published", messages=ids)
