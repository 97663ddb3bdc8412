"""GET /deliveries and POST /deliveries/redrive on a running broker (SQLite, actors)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.opsbroker import OpsBroker, running_broker, sample


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[OpsBroker]:
    async with running_broker(tmp_path) as running:
        yield running


async def dead(broker: OpsBroker) -> dict[str, str]:
    """Two refusing mailboxes: a movies and a sports message failed for good, and one
    sms was sent. Returns the message ids and the failed deliveries' ids."""
    await broker.user("ann", {"movies": ["email"]}, email="ann@example.org")
    await broker.user(
        "ben", {"sports": ["email", "sms"]}, email="ben@example.org", phone="+14155550123"
    )
    broker.channels["email"].refusing |= {"ann@example.org", "ben@example.org"}
    movies = await broker.publish("movies", "Premiere tonight")
    await broker.delivered(movies)
    sports = await broker.publish("sports", "Derby at eight")
    await broker.delivered(sports)
    (movie_email,) = await broker.deliveries(movies)
    sport_email = next(d for d in await broker.deliveries(sports) if d["channel"] == "email")
    return {
        "movies": movies,
        "sports": sports,
        "movie email": movie_email["id"],
        "sport email": sport_email["id"],
    }


async def listing(broker: OpsBroker, query: str) -> dict[str, Any]:
    code, body = await broker.json(f"/deliveries?{query}")
    assert code == 200, body
    return body  # type: ignore[no-any-return]


async def test_dead_letters_are_listed_with_filters_and_pages(broker: OpsBroker) -> None:
    ids = await dead(broker)

    body = await listing(broker, "status=dead")
    assert [d["id"] for d in body["deliveries"]] == [ids["sport email"], ids["movie email"]]
    assert body["next_cursor"] is None
    newest = body["deliveries"][0]
    assert (newest["message_id"], newest["category"], newest["channel"]) == (
        ids["sports"],
        "sports",
        "email",
    )
    assert newest["status"] == "failed" and "550 mailbox" in newest["error"]
    assert await listing(broker, "status=failed") == body
    movies = await listing(broker, "status=dead&category=Movies")
    assert [d["id"] for d in movies["deliveries"]] == [ids["movie email"]]
    assert (await listing(broker, "status=dead&channel=sms"))["deliveries"] == []
    sent = await listing(broker, "status=sent")
    assert [(d["channel"], d["user"] != "") for d in sent["deliveries"]] == [("sms", True)]
    assert len((await listing(broker, ""))["deliveries"]) == 3

    first = await listing(broker, "status=dead&limit=1")
    assert [d["id"] for d in first["deliveries"]] == [ids["sport email"]]
    assert first["next_cursor"]
    second = await listing(broker, f"status=dead&limit=1&cursor={first['next_cursor']}")
    assert [d["id"] for d in second["deliveries"]] == [ids["movie email"]]
    assert second["next_cursor"] is None

    # The time window is over the last change; an unescaped '+' of a zone is understood.
    changed = newest["updated_at"]
    window = await listing(broker, f"status=dead&since={changed}")
    assert [d["id"] for d in window["deliveries"]] == [ids["sport email"]]
    before = await listing(broker, f"status=dead&until={quote(changed)}")
    assert [d["id"] for d in before["deliveries"]] == [ids["movie email"]]


async def test_a_bulk_redrive_sends_the_matching_dead_letters_again(broker: OpsBroker) -> None:
    ids = await dead(broker)
    broker.channels["email"].refusing.clear()  # the mailboxes are back

    response = await broker.client.post("/deliveries/redrive", json={"category": "movies"})

    assert response.status_code == 202
    assert await response.get_json() == {
        "status": "queued",
        "redriven": 1,
        "ids": [ids["movie email"]],
        "more": False,
    }
    await broker.delivered(ids["movies"])
    (row,) = await broker.deliveries(ids["movies"])
    assert (row["id"], row["status"], row["attempts"], row["error"]) == (
        ids["movie email"],
        "sent",
        1,
        None,
    )
    assert broker.channels["email"].sent == [ids["movie email"]]
    left = await listing(broker, "status=dead")
    assert [d["id"] for d in left["deliveries"]] == [ids["sport email"]]
    m = await broker.metrics()
    assert sample(m, "notefly_redrives_total", channel="email") == 1

    # Nothing failed in movies any more: a repeat queues nothing.
    again = await broker.client.post("/deliveries/redrive", json={"category": "movies"})
    assert (await again.get_json())["redriven"] == 0
    # The rest, one per call: the limit bounds a call and "more" says to call again.
    await broker.user("cat", {"sports": ["email"]}, email="cat@example.org")
    broker.channels["email"].refusing.add("cat@example.org")
    sports = await broker.publish("sports", "Extra time")
    await broker.delivered(sports)
    cat_email = next(d["id"] for d in await broker.deliveries(sports) if d["status"] == "failed")
    broker.channels["email"].refusing.clear()
    one = await broker.client.post("/deliveries/redrive", json={"status": "dead", "limit": 1})
    assert (await one.get_json())["more"] is True
    rest = await broker.client.post("/deliveries/redrive", json={})
    assert (await rest.get_json())["redriven"] == 1
    await broker.delivered(sports)
    await broker.delivered(ids["sports"])
    assert (await listing(broker, "status=dead"))["deliveries"] == []
    sent = broker.channels["email"].sent
    assert [sent.count(i) for i in (ids["movie email"], ids["sport email"], cat_email)] == [1] * 3


async def test_concurrent_bulk_redrives_send_each_delivery_once(broker: OpsBroker) -> None:
    ids = await dead(broker)
    broker.channels["email"].refusing.clear()

    responses = await asyncio.gather(
        *(broker.client.post("/deliveries/redrive", json={}) for _ in range(4))
    )

    taken = [i for r in responses for i in (await r.get_json())["ids"]]
    assert sorted(taken) == sorted([ids["movie email"], ids["sport email"]])
    await broker.delivered(ids["movies"])
    await broker.delivered(ids["sports"])
    assert sorted(broker.channels["email"].sent) == sorted(taken)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=zombie", "status"),
        ("since=yesterday", "since"),
        ("since=2024-05-01T09:00:00", "since"),  # no zone
        ("until=2024-13-01T09:00:00Z", "until"),
        ("since=0001-01-01T00:00:00%2B01:00", "since"),  # before year 1 in UTC
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("colour=red", "colour"),
    ],
)
async def test_a_bad_listing_query_is_refused_with_422(
    broker: OpsBroker, query: str, field: str
) -> None:
    code, body = await broker.json(f"/deliveries?{query}")
    assert code == 422
    assert body["error"]["code"] == "validation_failed"
    assert field in {d["field"] for d in body["error"]["details"]}


async def test_a_bad_cursor_or_window_is_refused_with_422(broker: OpsBroker) -> None:
    code, body = await broker.json("/deliveries?cursor=not-a-cursor")
    assert (code, body["error"]["code"]) == (422, "invalid_cursor")
    for raw in (
        "2024-05-01T09:00:00|d_1",
        "0001-01-01T00:00:00+01:00|d_1",
        "2024-05-01T09:00:00Z|",
    ):
        cursor = base64.urlsafe_b64encode(raw.encode()).decode()
        code, body = await broker.json(f"/deliveries?cursor={cursor}")
        assert (code, body["error"]["code"]) == (422, "invalid_cursor"), raw
    code, body = await broker.json(
        "/deliveries?since=2024-05-02T00:00:00Z&until=2024-05-01T00:00:00Z"
    )
    assert (code, body["error"]["code"]) == (422, "validation_failed")
    assert set(body["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"status": "sent"}, "status"),
        ({"status": "queued"}, "status"),
        ({"limit": 10_001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"since": "last week"}, "since"),
        ({"channel": ""}, "channel"),
        ({"everything": True}, "everything"),
    ],
)
async def test_a_bad_redrive_is_refused_with_422(
    broker: OpsBroker, payload: dict[str, Any], field: str
) -> None:
    response = await broker.client.post("/deliveries/redrive", json=payload)
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["code"] == "validation_failed"
    assert field in {d["field"] for d in error["details"]}


async def test_the_endpoints_are_described_in_openapi(broker: OpsBroker) -> None:
    code, spec = await broker.json("/openapi.json")
    assert code == 200
    listing_params = {p["name"] for p in spec["paths"]["/deliveries"]["get"]["parameters"]}
    assert listing_params >= {"status", "channel", "category", "since", "until", "limit", "cursor"}
    redrive = spec["paths"]["/deliveries/redrive"]["post"]
    assert {"202", "422"} <= set(redrive["responses"])
    assert "requestBody" in redrive
