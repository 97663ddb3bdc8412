"""What the contract tests share: a clock, messages, and the "sports" audience."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from notefly.addresses import Endpoint, EndpointKind
from notefly.domain import (
    DeliveryStatus,
    DeliveryTask,
    Message,
    Outcome,
    Priority,
    Subscription,
    User,
)
from notefly.ports import Segment, Store

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when the test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        self._now = now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now


def message(message_id: str = "m1", **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": message_id,
        "category_id": "sports",
        "body": f"body of {message_id}",
        "accepted_at": T0,
        "title": f"title of {message_id}",
        "data": {"score": "2-1", "tags": ["derby"], "minute": 90, "extra": None},
        "priority": Priority.HIGH,
    }
    fields.update(overrides)
    return Message(**fields)


# The "sports" audience used by the fan-out tests, in user id order.
ENABLED = ("email", "sms", "webhook")
AUDIENCE = [
    (User("u1", "Ada", email="ada@example.org"), ("email",)),
    (User("u2", "Bob"), ("sms",)),  # no phone: skipped
    # Cyd has a push token: push is skipped only because this broker has no push channel.
    (
        User("u3", "Cyd", phone="+15550103", push_token="tok3", timezone="Europe/Paris"),
        ("sms", "push"),
    ),
    (User("u4", "Dee", email="dee@example.org", phone="+15550104"), ("email", "sms")),
    (User("u5", "Eve"), ("webhook",)),  # reached at the webhook she registered
]
EVE_HOOK = Endpoint(
    "e5", "u5", EndpointKind.WEBHOOK, "https://hooks.example.org/eve", {"secret": "whsec_e"}
)
EXPECTED_QUEUED = {
    ("u1", "email"): "ada@example.org",
    ("u3", "sms"): "+15550103",
    ("u4", "email"): "dee@example.org",
    ("u4", "sms"): "+15550104",
    ("u5", "webhook"): "webhook:1",  # a summary: webhook URLs may carry credentials
}
EXPECTED_SKIPPED = {("u2", "sms"), ("u3", "push")}


async def seed_audience(store: Store) -> None:
    # u0 sorts first but follows another category: it must never be part of a page.
    await store.add_user(User("u0", "Zed", email="zed@example.org"))
    await store.upsert_subscription(Subscription("u0", "finance", ("email",)))
    for user, channels in AUDIENCE:
        await store.add_user(user)
        await store.upsert_subscription(Subscription(user.id, "sports", channels))
    await store.add_endpoint(EVE_HOOK)  # type: ignore[attr-defined]  # the AddressBook port


async def accepted(store: Store, owner: str) -> Message:
    """The "sports" audience seeded, and m1 accepted for ``owner`` to fan out."""
    await seed_audience(store)
    msg = message()
    await store.accept_message(msg, owner=owner)
    return msg


async def fan_out_completely(
    store: Store,
    msg: Message,
    after: str | None = None,
    limit: int = 2,
    *,
    owner: str | None = None,
) -> list[DeliveryTask]:
    tasks: list[DeliveryTask] = []
    while True:
        page = await store.fanout_page(msg, after, limit, ENABLED, owner=owner)
        tasks += page.tasks
        after = page.cursor
        if page.done:
            return tasks


async def replayed(
    store: Store,
    node: str,
    claimed: list[tuple[Message, Segment, str | None]],
    channels: Sequence[str] = ENABLED,
) -> tuple[list[DeliveryTask], list[tuple[Message, Segment, str | None]]]:
    """Plan the pages in flight among ``claimed`` segments, as ``node`` would: a store
    may write a page's deliveries that go out at once only with their outcomes, and a
    node that lets go of such a page leaves its range to plan again (``Segment.replay``).
    Returns their tasks, and the other segments."""
    tasks: list[DeliveryTask] = []
    rest = []
    for msg, segment, cursor in claimed:
        if segment.replay is None:
            rest.append((msg, segment, cursor))
            continue
        while True:
            page = await store.fanout_page(msg, cursor, 2, channels, owner=node, segment=segment)
            tasks += page.tasks
            cursor = page.cursor
            if page.done:
                break
    return tasks, rest


async def take_over(
    store: Store, node: str, channels: Sequence[str] = ENABLED, limit: int = 100
) -> list[DeliveryTask]:
    """The deliveries ``node`` takes over from the nodes that let go of theirs: queued
    ones it claims, and those of pages in flight it plans again (see ``replayed``).
    There must be no other segment to claim."""
    tasks = await store.claim_deliveries(node, limit)
    replays, rest = await replayed(store, node, await store.claim_segments(node, limit), channels)
    assert rest == [], "a segment of a split fan-out was not expected here"
    return tasks + replays


async def hold_for_retry(store: Store, tasks: Sequence[DeliveryTask]) -> None:
    """Record a failure to retry later for each of ``tasks``: every store then keeps a
    row for each, owned by the node that holds it (whether or not the page wrote one)."""
    await store.record_outcomes(
        [
            Outcome(t.id, DeliveryStatus.QUEUED, 1, "smtp", error="busy", retry_after=600)
            for t in tasks
        ]
    )
