"""GET /status, the redrive of a failed delivery, the dashboard stream and /docs."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as HttpClient

from tests.integration.opsbroker import OpsBroker, running_broker, sample


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[OpsBroker]:
    async with running_broker(tmp_path) as running:
        yield running


async def failed_delivery(broker: OpsBroker) -> tuple[str, str]:
    """A message whose email to a refusing mailbox failed for good: (message, delivery)."""
    await broker.user("bad", {"movies": ["email"]}, email="gone@example.org")
    broker.channels["email"].refusing.add("gone@example.org")
    message_id = await broker.publish("movies", "Premiere tonight")
    await broker.delivered(message_id)
    (row,) = await broker.deliveries(message_id)
    assert row["status"] == "failed"
    return message_id, row["id"]


async def wait_status(broker: OpsBroker, predicate: Any, within: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            code, body = await broker.json("/status")
            assert code == 200
            if predicate(body):
                return body  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)


async def test_status_reports_health_work_and_recent_messages(broker: OpsBroker):
    await broker.user(
        "alice", {"finance": ["sms", "email"]}, email="a@example.org", phone="+1415555"
    )
    message_id = await broker.publish("finance", "Rates up")
    await broker.delivered(message_id)

    # The counters and gauges are sampled: "sent" counts a delivery once the provider
    # took it, while the actors hold it until its outcome is recorded, so one sample
    # can show both. Wait for the sample where the work has drained.
    body = await wait_status(
        broker,
        lambda s: (
            s["recent_messages"] and s["counters"]["sent"] == 2 and s["work"]["in_actors"] == 0
        ),
    )
    assert body["service"] == "broker" and body["ready"] is True
    assert {c["name"] for c in body["checks"]} == {"store", "migrations", "actors"}
    assert body["work"] == {"queued": 0, "failed": 0, "in_actors": 0}
    assert body["actors"]["shard_actors"] == 3  # sms, email and push, one shard each
    recent = body["recent_messages"][0]
    assert (recent["id"], recent["status"], recent["deliveries"]) == (
        message_id,
        "delivered",
        {"sent": 2},
    )
    assert body["counters"] == {"messages_accepted": 1, "sent": 2, "failed": 0, "retried": 0}
    assert sum(body["throughput"]["channels"]["email"]) == 1
    providers = {(p["channel"], p["provider"]): p for p in body["providers"]}
    assert set(providers) == {("sms", "switch"), ("email", "switch"), ("push", "switch")}
    assert providers[("sms", "switch")]["state"] == "ok"
    assert providers[("push", "switch")]["state"] == "idle"
    assert all(p["circuit"] == "closed" for p in providers.values())


async def test_a_failed_delivery_shows_in_status_with_its_provider_error(broker: OpsBroker):
    message_id, delivery_id = await failed_delivery(broker)
    body = await wait_status(
        broker, lambda s: s["failures"] and {p["state"] for p in s["providers"]} >= {"failing"}
    )
    (failure,) = body["failures"]
    assert failure["id"] == delivery_id and failure["message_id"] == message_id
    assert failure["channel"] == "email" and failure["provider"] == "switch"
    assert "550 mailbox gone@example.org unavailable" in failure["error"]
    assert body["work"]["failed"] == 1
    email = next(p for p in body["providers"] if p["channel"] == "email")
    assert email["state"] == "failing" and email["failed"] == 1
    assert "550 mailbox" in email["last_error"]


async def test_redrive_sends_a_failed_delivery_again(broker: OpsBroker):
    message_id, delivery_id = await failed_delivery(broker)
    broker.channels["email"].refusing.clear()  # the mailbox is back

    response = await broker.client.post(f"/deliveries/{delivery_id}/retry")
    assert response.status_code == 202
    body = await response.get_json()
    assert body == {
        "id": delivery_id,
        "message_id": message_id,
        "user": body["user"],
        "channel": "email",
        "status": "queued",
        "attempts": 0,
    }
    await broker.delivered(message_id)
    (row,) = await broker.deliveries(message_id)
    assert (row["status"], row["attempts"], row["error"]) == ("sent", 1, None)
    assert broker.channels["email"].sent == [delivery_id]

    status = await wait_status(broker, lambda s: not s["failures"])
    assert status["work"]["failed"] == 0
    m = await broker.metrics()
    assert sample(m, "notefly_redrives_total", channel="email") == 1
    assert sample(m, "notefly_dead_letters_stored") == 0


async def test_a_redrive_that_fails_again_is_failed_again(broker: OpsBroker):
    message_id, delivery_id = await failed_delivery(broker)
    response = await broker.client.post(f"/deliveries/{delivery_id}/retry")
    assert response.status_code == 202
    await broker.delivered(message_id)
    (row,) = await broker.deliveries(message_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)


async def test_only_failed_deliveries_can_be_redriven(broker: OpsBroker):
    await broker.user("alice", {"finance": ["email"]}, email="a@example.org")
    message_id = await broker.publish("finance", "Rates up")
    await broker.delivered(message_id)
    (row,) = await broker.deliveries(message_id)

    response = await broker.client.post(f"/deliveries/{row['id']}/retry")
    assert response.status_code == 409
    error = (await response.get_json())["error"]
    assert error["code"] == "delivery_not_failed" and "is sent" in error["message"]
    response = await broker.client.post("/deliveries/d_nope/retry")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "delivery_not_found"
    assert broker.channels["email"].sent == [row["id"]]  # nothing sent twice


async def test_the_dashboard_streams_snapshots(broker: OpsBroker):
    page = await broker.client.get("/dashboard")
    html = await page.get_data(as_text=True)
    assert page.status_code == 200
    # Every script and stylesheet is served by the broker itself.
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets == ["/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js"]
    for asset in assets:
        assert (await broker.client.get(asset)).status_code == 200

    async with broker.client.request("/dashboard/events") as connection:
        await connection.send_complete()
        received = b""
        async with asyncio.timeout(10):
            while b"event: snapshot" not in received or not received.endswith(b"\n\n"):
                received += await connection.receive()
        await connection.disconnect()
    assert connection.headers is not None
    assert connection.headers["Content-Type"].startswith("text/event-stream")
    data = next(
        line.removeprefix(b"data: ") for line in received.split(b"\n") if line.startswith(b"data: ")
    )
    snapshot = json.loads(data)
    assert snapshot["ready"] is True and "throughput" in snapshot


async def test_docs_use_only_local_assets(broker: OpsBroker):
    response = await broker.client.get("/docs")
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith("/") for u in urls), urls
    assert '"url": "/docs/openapi.json"' in html
    _code, spec = await broker.json("/openapi.json")
    _code, spelled_30 = await broker.json("/docs/openapi.json")
    assert (spec["openapi"], spelled_30["openapi"]) == ("3.1.0", "3.0.3")
    assert spelled_30["paths"].keys() == spec["paths"].keys()
    assert '{"type": "null"}' not in json.dumps(spelled_30)
    error = spelled_30["components"]["schemas"]["DeliveryOut"]["properties"]["error"]
    assert error == {"type": "string", "nullable": True, "title": "Error"}
    bundle = await broker.client.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert len(await bundle.get_data()) > 500_000  # the real Swagger UI, not a stub
    assert (await broker.client.get("/docs/static/index.html")).status_code == 404


async def test_client_docs_describe_the_client_api(client_http: HttpClient):
    response = await client_http.get("/docs")
    assert response.status_code == 200
    assert "Notefly client" in await response.get_data(as_text=True)
    assert (await client_http.get("/docs/static/swagger-ui.css")).status_code == 200
