"""What the channel tests share: a real SQLite store with a user subscribed to a category,
messages published into it (deliveries and inbox rows written by the real fan-out),
and browser-like web push subscriptions."""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notefly.clock import SortableIds, SystemClock
from notefly.domain import DeliveryTask, Message, Priority, Rendered, User
from notefly.registrations import RegistrationPolicy, Registrations
from notefly.rendering import TemplateRenderer, build_environment
from notefly.services import Directory
from notefly.store.sqlite import SqliteStore

CHANNELS = ("sms", "email", "push", "webhook", "apprise")
_ids = itertools.count(1)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Browser:
    """A browser's side of a push subscription: the keys that decrypt what it receives."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def new(cls) -> Browser:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)

    def subscription(self, endpoint: str) -> dict[str, object]:
        return {"endpoint": endpoint, "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth)}}


@dataclass
class World:
    store: SqliteStore
    directory: Directory
    registrations: Registrations
    renderer: TemplateRenderer

    async def user(self, name: str = "Ada", **fields: str) -> User:
        return await self.directory.register(User(id="", name=name, **fields))  # type: ignore[arg-type]

    async def publish(
        self,
        category: str = "finance",
        body: str = "Rates up 0.25",
        title: str | None = "Rates",
        priority: Priority = Priority.NORMAL,
    ) -> tuple[Message, list[DeliveryTask]]:
        """Commit a message and run its fan-out: the deliveries it queued."""
        message = Message(
            id=f"msg_{next(_ids):06d}",
            category_id=category,
            body=body,
            title=title,
            priority=priority,
            accepted_at=datetime.now(UTC),
        )
        stored, _ = await self.store.accept_message(message)
        page = await self.store.fanout_page(stored, None, 1000, CHANNELS)
        return stored, page.tasks

    def render(self, task: DeliveryTask) -> Rendered:
        return self.renderer.render(task.channel, task.message, task.recipient)

    async def task(self, user: User, channel: str, **message: Any) -> DeliveryTask:
        _stored, tasks = await self.publish(**message)
        [found] = [t for t in tasks if t.recipient.user_id == user.id and t.channel == channel]
        return found


def policy(**changes: object) -> RegistrationPolicy:
    """Plain HTTP to loopback allowed: the peers of these tests have no certificate."""
    return replace(RegistrationPolicy(allow_http_webhooks=True, allow_http_push=True), **changes)


async def make_world(
    tmp_path: Path, channels: Sequence[str] = CHANNELS, rules: RegistrationPolicy | None = None
) -> AsyncIterator[World]:
    clock = SystemClock()
    store = await SqliteStore.open(tmp_path / "notefly.db", clock)
    ids = SortableIds(clock)
    try:
        yield World(
            store,
            Directory(store, ids, clock, channels, addresses=store),
            Registrations(store, store, ids, clock, rules or policy()),
            TemplateRenderer(build_environment()),
        )
    finally:
        await store.close()
