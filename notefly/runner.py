"""Running Notefly: the store, the actor system and the HTTP services of one process.

The runner owns the lifecycle: it starts the container's resources, serves the apps
with hypercorn until SIGTERM or SIGINT, then stops the actors and closes the store,
so that the process exits within a few seconds and nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from dataclasses import dataclass
from typing import Any

import structlog
from hypercorn.asyncio import serve
from hypercorn.config import Config

from notefly import demo
from notefly.auth import ensure_safe_binding
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

    def on_signal(sig: signal.Signals) -> None:
        # When shutdown began: the servers stop reading new requests right after it.
        if not shutdown.is_set():
            log.info("notefly.shutdown", signal=sig.name)
        shutdown.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    with_broker = any(s.name == "broker" for s in services)
    await start(container.store)
    try:
        # Open mode (no keys) only on loopback: refuse before anything listens.
        store = await resolve(container.store)
        await ensure_safe_binding(store, container.settings(), [s.host for s in services])
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
        tune_gc()
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


# Young collections every 50k allocations instead of 700: a fan-out allocates a few
# objects per delivery, and each collection walks what is young.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Once started: what exists now (modules, templates, the container) lives as long
    as the process, so it leaves the collector's view (``gc.freeze``) and full
    collections no longer walk it; they took 170-340 ms at a time under load."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _seed(container: Container, *, publish: bool) -> None:
    store = await resolve(container.store)
    users = await demo.seed_users(await resolve(container.directory), store)
    log.info("demo.users", users=[f"{u.name} ({u.id})" for u in users])
    if publish:
        ids = await demo.publish_messages(await resolve(container.publisher), key_prefix="demo")
        log.info("demo.published", messages=ids)
