"""The broker's HTTP API on a real container: SQLite store, actors, swapped providers."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from notefly.domain import User
from tests.integration.conftest import Broker


async def _user(broker: Broker, name: str, **addresses: str) -> str:
    user = await broker.directory.register(User(id="", name=name, **addresses))
    return user.id


async def test_a_swapped_provider_receives_exactly_the_expected_calls(broker: Broker):
    alice = await _user(broker, "alice", email="alice@example.org", phone="+14155550101")
    bob = await _user(broker, "bob", push_token="tok-bob")
    carol = await _user(broker, "carol", email="carol@example.org")
    await broker.directory.subscribe(alice, "finance", ["sms", "email"])
    await broker.directory.subscribe(bob, "movies", ["push"])
    await broker.directory.subscribe(bob, "sports", ["push"])
    for category in ("finance", "movies", "sports"):
        await broker.directory.subscribe(carol, category, ["email"])

    ids = {}
    for category in ("finance", "movies", "sports"):
        response = await broker.publish(
            category=category, body=f"{category} body", title=f"{category} title"
        )
        assert response.status_code == 202
        ids[category] = (await response.get_json())["id"]
    for message_id in ids.values():
        await broker.delivered(message_id)

    calls = {
        name: sorted((r.to, r.text) for _, r in ch.calls) for name, ch in broker.channels.items()
    }
    assert calls["sms"] == [("+14155550101", "FIN: finance title: finance body")]
    assert [to for to, _ in calls["email"]] == sorted(
        ["alice@example.org", "carol@example.org", "carol@example.org", "carol@example.org"]
    )
    assert calls["push"] == [("tok-bob", "movies body"), ("tok-bob", "sports body")]
    email_subjects = sorted(r.subject or "" for _, r in broker.channels["email"].calls)
    assert email_subjects == ["finance title", "finance title", "movies title", "sports title"]
    # Each delivery id reached its provider once.
    all_ids = [d for ch in broker.channels.values() for d, _ in ch.calls]
    assert len(all_ids) == len(set(all_ids)) == 7


async def test_202_means_committed(broker: Broker):
    response = await broker.publish(category="sports", body="Goal")
    assert response.status_code == 202
    body = await response.get_json()
    assert body["status"] == "accepted"
    assert response.headers["Location"] == f"/messages/{body['id']}"
    # Another connection, as another process would, sees the message at once.
    with sqlite3.connect(broker.db_path) as db:
        assert db.execute("SELECT body FROM messages WHERE id = ?", (body["id"],)).fetchone() == (
            "Goal",
        )


async def test_a_repeated_idempotency_key_sends_nothing_again(broker: Broker):
    dana = await _user(broker, "dana", email="dana@example.org")
    await broker.directory.subscribe(dana, "movies", ["email"])
    first = await broker.publish(category="movies", body="Once", idempotency_key="k-1")
    first_id = (await first.get_json())["id"]
    await broker.delivered(first_id)
    second = await broker.publish(category="movies", body="Once", idempotency_key="k-1")
    assert second.status_code == 202
    assert (await second.get_json())["id"] == first_id
    assert second.headers["Idempotent-Replayed"] == "true"
    await asyncio.sleep(0.2)  # give a wrongly started second fan-out time to show
    assert len(broker.channels["email"].calls) == 1


async def test_message_status_and_deliveries(broker: Broker):
    erin = await _user(broker, "erin", email="erin@example.org")  # no phone
    await broker.directory.subscribe(erin, "finance", ["email"])

    # Erin drops her phone after subscribing to sms would be refused; instead subscribe a
    # channel this broker does not run by writing the row directly.
    def add_fax() -> None:
        with sqlite3.connect(broker.db_path, timeout=10) as db:
            db.execute("UPDATE subscriptions SET channels = 'email,fax' WHERE user_id = ?", (erin,))

    # Off the event loop: the broker's writer needs the loop to finish what it holds.
    await asyncio.to_thread(add_fax)
    response = await broker.publish(category="finance", body="Status please", priority="urgent")
    message_id = (await response.get_json())["id"]
    status = await broker.delivered(message_id)
    assert status["priority"] == "urgent"
    assert status["deliveries"] == {"total": 2, "sent": 1, "skipped": 1, "queued": 0, "failed": 0}
    rows = (await (await broker.client.get(f"/messages/{message_id}/deliveries")).get_json())[
        "deliveries"
    ]
    by_channel = {r["channel"]: r for r in rows}
    assert by_channel["email"]["status"] == "sent"
    assert by_channel["email"]["provider"] == "recording"
    assert by_channel["email"]["provider_message_id"] == f"rec-{by_channel['email']['id']}"
    assert by_channel["email"]["sent_at"] is not None
    assert by_channel["fax"]["status"] == "skipped"
    assert "not enabled" in by_channel["fax"]["error"]


async def test_categories_can_be_listed_and_added(broker: Broker):
    listed = await (await broker.client.get("/categories")).get_json()
    assert {c["id"] for c in listed["categories"]} == {"finance", "movies", "sports"}
    created = await broker.client.post("/categories", json={"name": "Weather Alerts"})
    assert created.status_code == 201
    assert (await created.get_json())["id"] == "weather-alerts"
    again = await broker.client.post("/categories", json={"name": "Weather Alerts"})
    assert again.status_code == 409
    assert (await again.get_json())["error"]["code"] == "category_exists"
    published = await broker.publish(category="weather-alerts", body="Storm")
    assert published.status_code == 202


BAD_REQUESTS: list[tuple[str, Any, int, str]] = [
    ("malformed json", b"{not json", 400, "malformed_json"),
    ("empty body", b"", 400, "empty_body"),
    ("a list, not an object", [1, 2], 422, "validation_failed"),
    ("missing body", {"category": "finance"}, 422, "validation_failed"),
    ("body of the wrong type", {"category": "finance", "body": 42}, 422, "validation_failed"),
    (
        "unknown field",
        {"category": "finance", "body": "x", "colour": "red"},
        422,
        "validation_failed",
    ),
    (
        "unknown priority",
        {"category": "finance", "body": "x", "priority": "asap"},
        422,
        "validation_failed",
    ),
    (
        "data not an object",
        {"category": "finance", "body": "x", "data": [1]},
        422,
        "validation_failed",
    ),
    ("blank body", {"category": "finance", "body": "   "}, 422, "validation_failed"),
    (
        "title too long",
        {"category": "finance", "body": "x", "title": "t" * 201},
        422,
        "validation_failed",
    ),
    ("unknown category", {"category": "knitting", "body": "x"}, 404, "category_not_found"),
    ("huge body", {"category": "finance", "body": "x" * 20_000}, 413, "request_entity_too_large"),
]


@pytest.mark.parametrize(
    ("case", "payload", "status", "code"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
async def test_bad_input_gets_a_clear_4xx(broker: Broker, case, payload, status, code):
    if isinstance(payload, bytes):
        response = await broker.client.post(
            "/pub", data=payload, headers={"Content-Type": "application/json"}
        )
    else:
        response = await broker.client.post("/pub", json=payload)
    assert response.status_code == status, await response.get_data()
    error = (await response.get_json())["error"]
    assert error["code"] == code
    assert error["message"]
    assert "details" in error
    # Nothing was accepted.
    with sqlite3.connect(broker.db_path) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def test_other_errors_keep_the_error_shape(broker: Broker):
    cases = [
        (await broker.client.get("/messages/msg_nope"), 404, "message_not_found"),
        (await broker.client.get("/messages/msg_nope/deliveries"), 404, "message_not_found"),
        (await broker.client.get("/no-such-page"), 404, "not_found"),
        (await broker.client.delete("/pub"), 405, "method_not_allowed"),
        (
            await broker.client.post("/pub", data="hi", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        (
            await broker.client.post("/categories", json={"name": "x", "id": "Bad Id"}),
            422,
            "validation_failed",
        ),
    ]
    for response, status, code in cases:
        assert response.status_code == status
        assert (await response.get_json())["error"]["code"] == code


async def test_the_html_form_publishes_and_shows_errors(broker: Broker):
    page = await broker.client.get("/pub")
    html = await page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<option value="movies"' in html
    posted = await broker.client.post(
        "/pub", form={"category": "movies", "body": "From a form", "title": "", "priority": "low"}
    )
    html = await posted.get_data(as_text=True)
    assert posted.status_code == 202
    assert 'id="message-id"' in html
    with sqlite3.connect(broker.db_path) as db:
        assert db.execute("SELECT priority, title FROM messages").fetchall() == [("low", None)]
    refused = await broker.client.post("/pub", form={"category": "movies", "body": " "})
    assert refused.status_code == 422
    assert 'id="error"' in await refused.get_data(as_text=True)
    escaped = await broker.client.post("/pub", form={"category": "nope<script>", "body": "x"})
    text = await escaped.get_data(as_text=True)
    assert escaped.status_code == 404
    assert "<script>" not in text


async def test_openapi_describes_publish(broker: Broker):
    spec = await (await broker.client.get("/openapi.json")).get_json()
    publish = spec["paths"]["/pub"]["post"]
    assert "202" in publish["responses"]
    assert "422" in publish["responses"]
    schema = publish["requestBody"]["content"]["application/json"]["schema"]
    assert schema  # a $ref or an inline schema of PublishRequest
    assert "/messages/{message_id}" in spec["paths"]
