"""GET /users/<id>/export on the client (real SQLite), and the erasure that follows."""

from __future__ import annotations

import json
from typing import Any

from quart.typing import TestClientProtocol as HttpClient

from notefly.addresses import Endpoint, EndpointKind
from notefly.domain import DeliveryStatus, Outcome, delivery_id
from notefly.store.sqlite import SqliteStore
from tests.integration.conftest import ClientPublish

APPRISE_URL = "tgram://bot-secret-token-41/chat-7"


async def register(http: HttpClient, name: str, **fields: Any) -> str:
    response = await http.post("/users", json={"name": name, **fields})
    assert response.status_code == 201, await response.get_data(as_text=True)
    user_id: str = (await response.get_json())["id"]
    return user_id


async def subscribe(http: HttpClient, user: str, category: str, **fields: Any) -> None:
    response = await http.post("/sub", json={"user": user, "category": category, **fields})
    assert response.status_code == 200, await response.get_data(as_text=True)


async def dana(http: HttpClient, store: SqliteStore, publish: ClientPublish) -> dict[str, str]:
    """Dana: a profile with quiet hours, an immediate and a weekly subscription, an
    Apprise URL, two messages in her inbox (one read) and a delivery sent by email."""
    user = await register(
        http,
        "Dana",
        email="dana@example.org",
        phone="+14155550123",
        timezone="Europe/Paris",
        quiet_hours={"start": "22:00", "end": "07:00"},
    )
    await subscribe(http, user, "finance", channels=["email", "sms"])
    await subscribe(http, user, "movies", channels=["email"], frequency="weekly", at="10:00")
    await store.add_endpoint(
        Endpoint("e_dana", user, EndpointKind.APPRISE, APPRISE_URL, {}, "tgram://****/chat-7")
    )
    rates = await publish("finance", "Rates rose", title="Rates")
    premiere = await publish("movies", "Premiere tonight")
    sent = delivery_id(rates.id, user, "email")
    await store.record_outcomes(
        [
            Outcome(
                sent,
                DeliveryStatus.SENT,
                1,
                "smtp",
                "smtp-42",
                recipient="dana@example.org",
                subject="Rates",
                text="Rates rose",
            )
        ]
    )
    inbox = await (await http.get(f"/users/{user}/notifications")).get_json()
    read = inbox["notifications"][-1]["id"]
    assert (await http.post(f"/users/{user}/notifications/{read}/read")).status_code == 200
    return {"user": user, "rates": rates.id, "premiere": premiere.id, "sent": sent, "read": read}


async def test_the_export_holds_everything_about_the_user(
    client_http: HttpClient, client_store: SqliteStore, client_publish: ClientPublish
) -> None:
    other = await register(client_http, "Eli", email="eli@example.org")
    await subscribe(client_http, other, "finance", channels=["email"])
    ids = await dana(client_http, client_store, client_publish)

    response = await client_http.get(f"/users/{ids['user']}/export")

    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert set(body) == {
        "exported_at",
        "user",
        "subscriptions",
        "endpoints",
        "notifications",
        "deliveries",
        "digests",
    }
    user = body["user"]
    assert (user["id"], user["email"], user["phone"], user["timezone"]) == (
        ids["user"],
        "dana@example.org",
        "+14155550123",
        "Europe/Paris",
    )
    assert user["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert [
        (s["category"], s["channels"], s["frequency"], s["at"]) for s in body["subscriptions"]
    ] == [
        ("finance", ["sms", "email"], "immediate", None),  # in the configured order
        ("movies", ["email"], "weekly", "10:00"),
    ]
    assert body["endpoints"] == [
        {
            "id": "e_dana",
            "kind": "apprise",
            "label": "tgram://****/chat-7",
            "created_at": body["endpoints"][0]["created_at"],
        }
    ]
    assert [n["message_id"] for n in body["notifications"]] == [ids["premiere"], ids["rates"]]
    assert [n["id"] for n in body["notifications"] if n["read"]] == [ids["read"]]
    deliveries = {(d["message_id"], d["channel"]): d for d in body["deliveries"]}
    assert set(deliveries) == {
        (ids["rates"], "email"),
        (ids["rates"], "sms"),
        (ids["premiere"], "email"),
    }
    sent = deliveries[(ids["rates"], "email")]
    assert (sent["id"], sent["status"], sent["subject"], sent["recipient"]) == (
        ids["sent"],
        "sent",
        "Rates",
        "dana@example.org",
    )
    assert deliveries[(ids["premiere"], "email")]["mode"] == "digest"  # the weekly digest
    assert body["digests"] == []
    text = json.dumps(body)
    assert "bot-secret-token-41" not in text  # credentials stay out
    assert other not in text and "eli@example.org" not in text


async def test_an_unknown_user_has_no_export(client_http: HttpClient) -> None:
    response = await client_http.get("/users/usr_nobody/export")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "user_not_found"


async def test_after_the_erasure_nothing_is_left_to_export(
    client_http: HttpClient, client_store: SqliteStore, client_publish: ClientPublish
) -> None:
    other = await register(client_http, "Eli", email="eli@example.org")
    await subscribe(client_http, other, "finance", channels=["email"])
    ids = await dana(client_http, client_store, client_publish)
    before = await (await client_http.get(f"/users/{other}/export")).get_json()

    assert (await client_http.delete(f"/users/{ids['user']}")).status_code == 204

    gone = await client_http.get(f"/users/{ids['user']}/export")
    assert gone.status_code == 404
    assert {d.user_id for d in await client_store.list_deliveries(ids["rates"])} == {other}
    after = await (await client_http.get(f"/users/{other}/export")).get_json()
    assert {k: v for k, v in after.items() if k != "exported_at"} == {
        k: v for k, v in before.items() if k != "exported_at"
    }


async def test_the_export_is_described_in_openapi(client_http: HttpClient) -> None:
    spec = await (await client_http.get("/openapi.json")).get_json()
    operation = spec["paths"]["/users/{user_id}/export"]["get"]
    assert {"200", "404"} <= set(operation["responses"])
