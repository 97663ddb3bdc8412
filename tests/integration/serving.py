"""Serving a Quart app for real (hypercorn, on an ephemeral loopback port) inside a test's
event loop, and reading Server-Sent Events from it with httpx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart


@contextlib.asynccontextmanager
async def serving(app: Quart) -> AsyncIterator[str]:
    """Serve ``app``; yields its base URL. The socket is bound before the server starts,
    so there is no race for the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 0.5
    config.accesslog = None
    stopping = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stopping.wait))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stopping.set()
        await server


@dataclass
class Event:
    id: str | None = None
    event: str = "message"
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a ``text/event-stream`` response; comments come as events of their
    own kind, ``"comment"``, and ``retry:`` lines as ``"retry"``."""
    current = Event()
    async for line in response.aiter_lines():
        if line == "":
            if current.data or current.id is not None:
                yield current
            current = Event()
        elif line.startswith(":"):
            yield Event(event="comment", data=line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                current.id = value
            elif name == "event":
                current.event = value
            elif name == "data":
                current.data += value
            elif name == "retry":
                yield Event(event="retry", data=value)


async def next_event(stream: AsyncIterator[Event], kind: str, within: float = 10.0) -> Event:
    """The next event of a kind, skipping the others, within a deadline."""
    async with asyncio.timeout(within):
        async for found in stream:
            if found.event == kind:
                return found
    raise AssertionError(f"the stream ended before a {kind!r} event")
