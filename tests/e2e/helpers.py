"""HTTP steps shared by the end-to-end tests."""

from __future__ import annotations

import time
from typing import Any

import httpx


def register(client: httpx.Client, name: str, **fields: Any) -> str:
    response = client.post("/users", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    user_id: str = response.json()["id"]
    return user_id


def subscribe(client: httpx.Client, user: str, category: str, channels: list[str]) -> None:
    response = client.post("/sub", json={"user": user, "category": category, "channels": channels})
    assert response.status_code == 200, response.text


def publish(broker: httpx.Client, category: str, body: str, **fields: Any) -> str:
    response = broker.post("/pub", json={"category": category, "body": body, **fields})
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


def wait_delivered(broker: httpx.Client, message_id: str, within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        status: dict[str, Any] = broker.get(f"/messages/{message_id}").json()
        if status["status"] == "delivered":
            return status
        assert time.monotonic() < deadline, f"{message_id} not delivered in {within}s: {status}"
        time.sleep(0.1)


def deliveries(broker: httpx.Client, message_id: str) -> list[dict[str, Any]]:
    response = broker.get(f"/messages/{message_id}/deliveries")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["deliveries"]
    return rows
