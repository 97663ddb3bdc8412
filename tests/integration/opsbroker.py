"""A broker on a real container (SQLite, actors) with a provider the test controls,
for the operations tests: metrics, readiness, status, redrive, dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from notefly.config import Settings
from notefly.containers import Container, resolve
from notefly.domain import Rendered, User
from notefly.errors import PermanentChannelError, TransientChannelError
from notefly.ports import SendResult
from notefly.services import Directory
from tests.integration.running import broker_app


class SwitchChannel:
    """A provider whose failures the test switches on and off, per address."""

    provider = "switch"

    def __init__(self, name: str) -> None:
        self.name = name
        self.refusing: set[str] = set()  # permanent failures
        self.transient = 0  # the next n sends fail transiently
        self.sent: list[str] = []
        self._lock = threading.Lock()

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        with self._lock:
            if rendered.to in self.refusing:
                raise PermanentChannelError(f"550 mailbox {rendered.to} unavailable")
            if self.transient:
                self.transient -= 1
                raise TransientChannelError("421 try again later")
            self.sent.append(delivery_id)
        return SendResult(self.provider, provider_message_id=f"sw-{delivery_id}")


@dataclass
class OpsBroker:
    client: Any
    container: Container
    channels: dict[str, SwitchChannel]
    directory: Directory
    db_path: Path
    users: dict[str, str] = field(default_factory=dict)

    async def user(self, name: str, categories: dict[str, list[str]], **addresses: str) -> str:
        user = await self.directory.register(User(id="", name=name, **addresses))
        for category, channels in categories.items():
            await self.directory.subscribe(user.id, category, channels)
        return user.id

    async def publish(self, category: str, body: str) -> str:
        response = await self.client.post("/pub", json={"category": category, "body": body})
        assert response.status_code == 202, await response.get_data(as_text=True)
        message_id: str = (await response.get_json())["id"]
        return message_id

    async def message(self, message_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await (await self.client.get(f"/messages/{message_id}")).get_json()
        return found

    async def delivered(self, message_id: str, within: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while (status := await self.message(message_id))["status"] != "delivered":
                await asyncio.sleep(0.02)
        return status

    async def deliveries(self, message_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/messages/{message_id}/deliveries")
        rows: list[dict[str, Any]] = (await response.get_json())["deliveries"]
        return rows

    async def json(self, path: str) -> tuple[int, Any]:
        response = await self.client.get(path)
        return response.status_code, await response.get_json()

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = await self.client.get("/metrics")
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain")
        return parse_metrics(await response.get_data(as_text=True))


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextlib.asynccontextmanager
async def running_broker(tmp_path: Path, **overrides: Any) -> AsyncIterator[OpsBroker]:
    settings = Settings(data_dir=tmp_path, retry_base_seconds=0.01, **overrides)
    channels = {name: SwitchChannel(name) for name in settings.channels}
    async with broker_app(settings, channels) as (http, container):
        yield OpsBroker(
            http, container, channels, await resolve(container.directory), settings.sqlite_path
        )
