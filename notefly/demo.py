"""Demo data: the three users of the original specification, and one message per
category so that every page has something to show."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from notefly.domain import User
from notefly.errors import NotFound
from notefly.ports import Store
from notefly.services import Directory, PublishCommand, Publisher, message_status


@dataclass(frozen=True, slots=True)
class DemoUser:
    user: User
    subscriptions: dict[str, tuple[str, ...]]


DEMO_USERS = (
    DemoUser(
        User(
            "demo-alice",
            "Alice",
            email="alice@example.org",
            phone="+14155550101",
            timezone="America/Los_Angeles",
        ),
        {"finance": ("sms", "email")},
    ),
    DemoUser(
        User("demo-bob", "Bob", push_token="demo-push-token-bob", timezone="Europe/London"),
        {"movies": ("push",), "sports": ("push",)},
    ),
    DemoUser(
        User("demo-carol", "Carol", email="carol@example.org", timezone="Europe/Berlin"),
        {"finance": ("email",), "movies": ("email",), "sports": ("email",)},
    ),
)

DEMO_MESSAGES = (
    PublishCommand(
        "finance", "The central bank raised its key rate by 0.25 points.", title="Rates up"
    ),
    PublishCommand(
        "movies", "The festival's opening film premieres tonight at 8 pm.", title="Premiere tonight"
    ),
    PublishCommand("sports", "Home side wins the derby 2-1 after extra time.", title="Final score"),
)


async def seed_users(directory: Directory, store: Store) -> list[User]:
    """Register the demo users and their subscriptions unless they exist already."""
    users = []
    for demo in DEMO_USERS:
        try:
            user = await store.get_user(demo.user.id)
        except NotFound:
            user = await directory.register(demo.user)
        for category, channels in demo.subscriptions.items():
            await directory.subscribe(user.id, category, channels)
        users.append(user)
    return users


async def publish_messages(publisher: Publisher, *, key_prefix: str | None = None) -> list[str]:
    ids = []
    for command in DEMO_MESSAGES:
        if key_prefix is not None:  # a fixed key makes a restart publish nothing new
            command = PublishCommand(
                command.category,
                command.body,
                command.title,
                idempotency_key=f"{key_prefix}-{command.category}",
            )
        message, _created = await publisher.publish(command)
        ids.append(message.id)
    return ids


async def wait_delivered(
    store: Store,
    message_ids: list[str],
    within: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
) -> bool:
    """Poll until every message is delivered (or the time is up); ``progress`` hears
    (final deliveries, all deliveries so far) after each poll."""
    async with asyncio.timeout(within):
        while True:
            counts = [await store.delivery_counts(m) for m in message_ids]
            if progress is not None:
                total = sum(sum(c.by_status.values()) for c in counts)
                progress(total - sum(c.by_status.get("queued", 0) for c in counts), total)
            if all(message_status(c).value == "delivered" for c in counts):
                return True
            await asyncio.sleep(0.05)


def progress_bar(out: TextIO, width: int = 30) -> Callable[[int, int], None]:
    """A one-line progress bar, redrawn in place on a terminal, printed once elsewhere."""

    def show(done: int, total: int) -> None:
        if not out.isatty() and done < total:
            return
        filled = width * done // total if total else width
        out.write(f"\r  deliveries [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            out.write("\n")
        out.flush()

    return show
