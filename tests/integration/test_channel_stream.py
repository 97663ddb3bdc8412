"""The live inbox stream (Server-Sent Events) served for real on loopback, with inbox
entries written by the fan-out, as the broker would write them from any process."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from client.app import create_app
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.domain import Message, User
from notefly.store.sqlite import SqliteStore
from tests.integration.serving import events, next_event, serving

_ids = itertools.count(1)


@dataclass
class Live:
    url: str
    store: SqliteStore
    http: httpx.AsyncClient

    async def user(self, name: str = "Ada") -> User:
        response = await self.http.post("/users", json={"name": name, "email": "a@example.org"})
        fields = response.json()
        user = User(**{k: v for k, v in fields.items() if k not in ("created_at", "token")})
        await self.http.post(
            "/sub", json={"user": user.id, "category": "finance", "channels": ["email"]}
        )
        return user

    async def publish(self, body: str, category: str = "finance") -> Message:
        message = Message(
            id=f"msg_{next(_ids):06d}",
            category_id=category,
            body=body,
            title=body.title(),
            accepted_at=datetime.now(UTC),
        )
        stored, _ = await self.store.accept_message(message)
        await self.store.fanout_page(stored, None, 1000, ["email"])
        return stored


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    env = {"NOTEFLY_STREAM_POLL_SECONDS": "0.05", "NOTEFLY_STREAM_HEARTBEAT_SECONDS": "0.3"}
    container = Container(settings=Settings(data_dir=tmp_path, env=env))
    await start(container.store)
    try:
        async with (
            serving(create_app(container)) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as http,
        ):
            yield Live(url, await resolve(container.store), http)
    finally:
        await stop(container.store)


async def test_a_new_notification_is_pushed_as_it_is_written(live: Live) -> None:
    ada = await live.user()
    await live.publish("before the stream")  # not news for a stream opened after it
    async with live.http.stream("GET", f"/users/{ada.id}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = events(response)
        assert (await next_event(stream, "retry")).data == "2000"
        message = await live.publish("rates up")
        event = await next_event(stream, "notification")
    assert event.id is not None and event.id.isdigit()
    sent = event.json()
    assert (sent["message_id"], sent["body"], sent["title"]) == (message.id, "rates up", "Rates Up")
    assert (sent["category"], sent["read"]) == ("finance", False)


async def test_a_reconnect_with_last_event_id_gets_what_it_missed(live: Live) -> None:
    ada = await live.user()
    async with live.http.stream("GET", f"/users/{ada.id}/stream") as response:
        stream = events(response)
        await live.publish("one")
        seen = await next_event(stream, "notification")
    missed = [await live.publish("two"), await live.publish("three")]
    headers = {"Last-Event-ID": seen.id or ""}
    async with live.http.stream("GET", f"/users/{ada.id}/stream", headers=headers) as response:
        stream = events(response)
        got = [await next_event(stream, "notification") for _ in missed]
    assert [e.json()["message_id"] for e in got] == [m.id for m in missed]
    assert int(got[0].id or 0) > int(seen.id or 0)


async def test_a_page_starts_after_the_newest_notification_it_shows(live: Live) -> None:
    ada = await live.user()
    await live.publish("shown on the page")
    page = (await live.http.get(f"/users/{ada.id}/notifications")).json()["notifications"]
    unseen = await live.publish("arrived before the stream opened")
    query = f"/users/{ada.id}/stream?after={page[0]['id']}"
    async with live.http.stream("GET", query) as response:
        event = await next_event(events(response), "notification")
    assert event.json()["message_id"] == unseen.id


async def test_a_quiet_stream_sends_heartbeats(live: Live) -> None:
    ada = await live.user()
    async with live.http.stream("GET", f"/users/{ada.id}/stream") as response:
        beat = await next_event(events(response), "comment", within=5)
    assert beat.data == "heartbeat"


async def test_each_listener_gets_only_its_own_notifications(live: Live) -> None:
    users = [await live.user(f"user{i}") for i in range(12)]
    other = await live.user("elsewhere")
    await live.http.post(
        "/sub", json={"user": other.id, "category": "sports", "channels": ["email"]}
    )
    await live.http.request("DELETE", "/sub", json={"user": other.id, "category": "finance"})

    async def listen(user: User) -> list[str]:
        async with live.http.stream("GET", f"/users/{user.id}/stream") as response:
            stream = events(response)
            await next_event(stream, "retry")
            ready.release()
            first = await next_event(stream, "notification")
            second = await next_event(stream, "notification")
            return [first.json()["body"], second.json()["body"]]

    ready = asyncio.Semaphore(0)
    listeners = [asyncio.create_task(listen(u)) for u in [*users, other]]
    for _ in listeners:
        await ready.acquire()
    await live.publish("for finance")
    await live.publish("for sports", category="sports")
    await live.publish("finance again")
    await live.publish("sports again", category="sports")
    results = await asyncio.gather(*listeners)
    assert results[:-1] == [["for finance", "finance again"]] * len(users)
    assert results[-1] == ["for sports", "sports again"]


async def test_unknown_users_and_bad_cursors_are_refused(live: Live) -> None:
    response = await live.http.get("/users/usr_nobody/stream")
    assert response.status_code == 404 and response.json()["error"]["code"] == "user_not_found"
    ada = await live.user()
    response = await live.http.get(f"/users/{ada.id}/stream", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 422
    response = await live.http.get(f"/users/{ada.id}/stream?after=n_unknown")
    assert response.status_code == 404
