"""The schedule fields of the HTTP APIs: digest frequency, quiet hours, deliver_at."""

from __future__ import annotations

from typing import Any

from quart.typing import TestClientProtocol as HttpClient

from tests.integration.conftest import Broker


async def _user(http: HttpClient, **fields: Any) -> str:
    response = await http.post("/users", json={"name": "Ada", **fields})
    assert response.status_code == 201, await response.get_data()
    user_id: str = (await response.get_json())["id"]
    return user_id


async def test_a_subscription_takes_a_digest_schedule(client_http: HttpClient):
    ada = await _user(client_http, email="ada@example.org", timezone="Europe/Berlin")
    response = await client_http.post(
        "/sub",
        json={
            "user": ada,
            "category": "finance",
            "channels": ["email"],
            "frequency": "weekly",
            "at": "10:00",
            "weekday": "Fri",
        },
    )
    assert response.status_code == 200, await response.get_data()
    body = await response.get_json()
    assert (body["frequency"], body["at"], body["weekday"]) == ("weekly", "10:00", "friday")
    # Changing only the channels keeps the schedule.
    again = await client_http.post(
        "/sub",
        json={
            "user": ada,
            "category": "finance",
            "channels": ["email"],
        },
    )
    assert (await again.get_json())["frequency"] == "weekly"
    listed = await (await client_http.get(f"/users/{ada}/subscriptions")).get_json()
    assert listed["subscriptions"][0]["weekday"] == "friday"


async def test_bad_schedules_are_refused(client_http: HttpClient):
    ada = await _user(client_http, email="ada@example.org")
    bad = [
        {"frequency": "fortnightly"},
        {"frequency": "daily", "at": "25:00"},
        {"frequency": "daily", "weekday": "friday"},
        {"at": "10:00"},
        {"frequency": "weekly", "weekday": "someday"},
    ]
    for fields in bad:
        response = await client_http.post(
            "/sub",
            json={
                "user": ada,
                "category": "finance",
                "channels": ["email"],
                **fields,
            },
        )
        assert response.status_code == 422, fields
        assert (await response.get_json())["error"]["code"] == "validation_failed"


async def test_quiet_hours_are_set_and_cleared(client_http: HttpClient):
    ada = await _user(client_http, quiet_hours={"start": "22:00", "end": "7:00"})
    user = await (await client_http.get(f"/users/{ada}")).get_json()
    assert user["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    refused = await client_http.patch(f"/users/{ada}", json={"quiet_hours": {"start": "x"}})
    assert refused.status_code == 422
    cleared = await client_http.patch(f"/users/{ada}", json={"quiet_hours": None})
    assert (await cleared.get_json())["quiet_hours"] is None


async def test_deliver_at_must_carry_a_time_zone(broker: Broker):
    naive = await broker.publish(category="finance", body="x", deliver_at="2030-01-01T10:00:00")
    assert naive.status_code == 422
    later = await broker.publish(
        category="finance", body="x", deliver_at="2030-01-01T10:00:00+01:00"
    )
    assert later.status_code == 202
    status = await (
        await broker.client.get(f"/messages/{(await later.get_json())['id']}")
    ).get_json()
    assert status["status"] == "accepted"  # held: not fanned out before its time
