"""The operator's dashboard: GET /dashboard, its local assets and its live stream.

The page renders nothing itself: its script (``static/dashboard.js``, no library, no
CDN) listens to ``/dashboard/events``, a server-sent event stream of the operations
snapshot every second, and draws counters, the throughput chart, recent messages,
failed deliveries (with a redrive button) and provider health.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from quart import Blueprint, Response, render_template, send_from_directory
from quart_schema import hide

from broker.ops import ops
from notefly.errors import NotFound
from notefly.operations import Operations

blueprint = Blueprint("dashboard", __name__, template_folder="templates")
STATIC = Path(__file__).parent / "static"
ASSETS = frozenset({"dashboard.js", "dashboard.css"})
INTERVAL_SECONDS = 1.0
# A stream ends after this long and the browser reconnects (EventSource does so by
# itself): no response lives forever, and a reconnect picks up a restarted broker.
STREAM_SECONDS = 300.0

log = structlog.get_logger("notefly.dashboard")


@blueprint.get("/dashboard")
@hide
async def dashboard() -> str:
    return await render_template("dashboard.html")


@blueprint.get("/dashboard/static/<name>")
@hide
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}")
    return await send_from_directory(STATIC, name)


@blueprint.get("/dashboard/events")
@hide
async def events() -> Response:
    response = Response(
        _stream(ops().operations),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # a stream, bounded by STREAM_SECONDS instead
    return response


async def _stream(operations: Operations) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    ends = loop.time() + STREAM_SECONDS
    yield b"retry: 1000\n\n"
    while loop.time() < ends:
        try:
            snapshot = await operations.snapshot()
        except Exception as exc:  # the store may be down: say so, keep streaming
            log.warning("dashboard.snapshot_failed", error=repr(exc))
            yield _event("problem", {"error": f"{type(exc).__name__}: {exc}"})
        else:
            yield _event("snapshot", snapshot)
        await asyncio.sleep(INTERVAL_SECONDS)


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
