"""The live inbox: ``GET /users/{id}/stream``, Server-Sent Events.

Each new inbox entry is one ``notification`` event whose ``id:`` is its inbox
sequence number, so a client that reconnects with ``Last-Event-ID`` (browsers do it
by themselves) gets what it missed. A first connection starts after ``?after=``: a
sequence number, or the id of the newest notification the client shows; without it,
with what arrives from now on. A comment line is sent after ``heartbeat_seconds`` of
silence, so proxies keep the connection and a dead client is noticed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from quart import Blueprint, make_response, request
from quart.typing import ResponseReturnValue
from quart_schema import document_response

from client.api import ErrorOut, NotificationOut
from client.channel_services import ChannelServices, channel_services
from notefly.errors import InvalidInput
from notefly.live import InboxFeed

blueprint = Blueprint("stream", __name__)

BATCH = 100
RETRY_MS = 2000  # how soon a browser reconnects


async def start_after(
    feed: InboxFeed, user_id: str, last_event_id: str | None, after: str | None
) -> int:
    """The sequence number a stream starts after: ``Last-Event-ID`` (a reconnect), else
    ``?after=`` (a number or a notification id), else the newest entry now."""
    if last_event_id:
        if not last_event_id.isdigit():
            raise InvalidInput("Last-Event-ID must be a number", code="validation_failed")
        return int(last_event_id)
    if after:
        return int(after) if after.isdigit() else await feed.inbox_seq(user_id, after)
    return await feed.inbox_head()


def event(seq: int, payload: dict[str, object]) -> str:
    return f"id: {seq}\nevent: notification\ndata: {json.dumps(payload)}\n\n"


async def events(svc: ChannelServices, user_id: str, after: int) -> AsyncIterator[str]:
    async with svc.watcher.listen(user_id) as news:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            news.clear()  # before reading: news arriving meanwhile sets it again
            entries = await svc.feed.inbox_after(user_id, after, BATCH)
            for seq, notification in entries:
                payload = NotificationOut.of(notification).model_dump(mode="json")
                yield event(seq, payload)
                after = seq
            if len(entries) == BATCH:
                continue
            try:
                await asyncio.wait_for(news.wait(), svc.heartbeat_seconds)
            except TimeoutError:
                yield ": heartbeat\n\n"


@blueprint.get("/users/<user_id>/stream")
@document_response(ErrorOut, 404)
async def stream(user_id: str) -> ResponseReturnValue:
    """New notifications of a user as Server-Sent Events (``text/event-stream``)."""
    svc = channel_services()
    await svc.directory.get(user_id)  # NotFound: a 404, before the stream starts
    after = await start_after(
        svc.feed, user_id, request.headers.get("Last-Event-ID"), request.args.get("after")
    )
    response = await make_response(
        events(svc, user_id, after),
        200,
        {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        },
    )
    response.timeout = None  # type: ignore[union-attr]
    return response
