"""Use cases: what the HTTP services and the CLI ask of the core.

Each receives its dependencies in the constructor and does one thing; none knows
about HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from notefly import validation
from notefly.domain import (
    ADDRESS_FIELDS,
    ADDRESS_NAMES,
    Category,
    Message,
    MessageStatus,
    Notification,
    Priority,
    Subscription,
    User,
)
from notefly.errors import InvalidInput
from notefly.ports import Clock, DeliveryCounts, IdFactory, NullObserver, Observer, Store


class Dispatcher(Protocol):
    def publish(self, message: Message) -> None: ...


@dataclass(frozen=True, slots=True)
class PublishCommand:
    category: str
    body: str
    title: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    idempotency_key: str | None = None


class Publisher:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        ids: IdFactory,
        clock: Clock,
        observer: Observer | None = None,
    ):
        self._store = store
        self._dispatcher = dispatcher
        self._ids = ids
        self._clock = clock
        self._observer = observer or NullObserver()

    async def publish(self, cmd: PublishCommand) -> tuple[Message, bool]:
        """Commit a message and start its fan-out; returns (message, created now).

        A repeated idempotency key returns the original message and starts nothing.
        """
        await self._store.get_category(cmd.category)
        message = Message(
            id=self._ids("msg"),
            category_id=cmd.category,
            body=cmd.body,
            title=cmd.title,
            data=cmd.data,
            priority=cmd.priority,
            idempotency_key=cmd.idempotency_key,
            accepted_at=self._clock.now(),
        )
        stored, created = await self._store.accept_message(message)
        if created:
            self._observer.message_accepted(stored.category_id)
            self._dispatcher.publish(stored)
        return stored, created


def message_status(counts: DeliveryCounts) -> MessageStatus:
    if not counts.fanout_done:
        return MessageStatus.ACCEPTED
    if counts.by_status.get("queued"):
        return MessageStatus.DELIVERING
    return MessageStatus.DELIVERED


# What a user may change about themselves; ids and timestamps are the store's.
EDITABLE_FIELDS = ("name", "email", "phone", "push_token", "timezone")
_CHECKS: dict[str, Callable[[str], str]] = {
    "name": validation.printable,
    "email": validation.email,
    "phone": validation.phone,
    "timezone": validation.timezone,
}


class Directory:
    """Users and their subscriptions."""

    def __init__(self, store: Store, ids: IdFactory, clock: Clock, channels: Sequence[str]):
        self._store = store
        self._ids = ids
        self._clock = clock
        self.channels = tuple(channels)

    async def register(self, user: User) -> User:
        _check_fields({f: getattr(user, f) for f in EDITABLE_FIELDS})
        return await self._store.add_user(
            replace(user, id=user.id or self._ids("usr"), created_at=self._clock.now())
        )

    async def get(self, user_id: str) -> User:
        return await self._store.get_user(user_id)

    async def users(self, limit: int = 100) -> list[User]:
        return await self._store.list_users(limit)

    async def delete(self, user_id: str) -> None:
        await self._store.delete_user(user_id)

    async def update(self, user_id: str, changes: Mapping[str, Any]) -> User:
        unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
        if unknown:
            raise InvalidInput(
                f"cannot change {', '.join(unknown)}",
                code="validation_failed",
                details=[{"field": f, "problem": "not editable"} for f in unknown],
            )
        _check_fields(changes)
        if changes.get("name") is None and "name" in changes:
            raise InvalidInput("a user needs a name", code="validation_failed")
        current = await self._store.get_user(user_id)
        updated = replace(current, **changes)
        for sub in await self._store.list_subscriptions(user_id):
            self._check_addresses(updated, sub.category_id, sub.channels)
        return await self._store.update_user(updated)

    async def subscriptions(self, user_id: str) -> list[Subscription]:
        await self._store.get_user(user_id)  # an unknown user is NotFound, not []
        return await self._store.list_subscriptions(user_id)

    async def subscribe(
        self, user_id: str, category_id: str, channels: Sequence[str]
    ) -> Subscription:
        user = await self._store.get_user(user_id)
        await self._store.get_category(category_id)
        ordered = self._checked_channels(user, category_id, channels)
        return await self._store.upsert_subscription(Subscription(user_id, category_id, ordered))

    async def set_subscriptions(
        self, user_id: str, wanted: Mapping[str, Sequence[str]]
    ) -> list[Subscription]:
        """Make the user's subscriptions exactly ``wanted`` (category -> channels), all
        or nothing: a category with no channels is unsubscribed."""
        user = await self._store.get_user(user_id)
        subs = []
        for category_id, channels in wanted.items():
            if not channels:
                continue
            await self._store.get_category(category_id)
            ordered = self._checked_channels(user, category_id, channels)
            subs.append(Subscription(user_id, category_id, ordered))
        return await self._store.replace_subscriptions(user_id, subs)

    async def unsubscribe(self, user_id: str, category_id: str) -> None:
        await self._store.get_user(user_id)
        await self._store.delete_subscription(user_id, category_id)

    def _checked_channels(
        self, user: User, category_id: str, channels: Sequence[str]
    ) -> tuple[str, ...]:
        if not channels:
            raise InvalidInput(
                "choose at least one channel (or unsubscribe)",
                code="no_channels",
                details={"known": list(self.channels)},
            )
        unknown = sorted(set(channels) - set(self.channels))
        if unknown:
            raise InvalidInput(
                f"unknown channel(s): {', '.join(unknown)}",
                code="unknown_channel",
                details={"known": list(self.channels)},
            )
        ordered = tuple(ch for ch in self.channels if ch in channels)
        self._check_addresses(user, category_id, ordered)
        return ordered

    @staticmethod
    def _check_addresses(user: User, category_id: str, channels: Sequence[str]) -> None:
        missing = [ch for ch in channels if ch in ADDRESS_FIELDS and not user.address_for(ch)]
        if missing:
            raise InvalidInput(
                "the user has no "
                + " and no ".join(ADDRESS_NAMES[ch] for ch in missing)
                + f" for the {', '.join(missing)} subscription to {category_id!r}",
                code="missing_address",
                details={"category": category_id, "channels": missing},
            )


def _check_fields(values: Mapping[str, Any]) -> None:
    problems = []
    for field_name, check in _CHECKS.items():
        value = values.get(field_name)
        if value is None:
            continue
        try:
            check(value)
        except ValueError as exc:
            problems.append({"field": field_name, "problem": str(exc)})
    if problems:
        raise InvalidInput(
            "; ".join(f"{p['field']}: {p['problem']}" for p in problems),
            code="validation_failed",
            details=problems,
        )


class Inbox:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def list(
        self, user_id: str, *, unread_only: bool = False, limit: int = 50, before: str | None = None
    ) -> list[Notification]:
        return await self._store.list_notifications(
            user_id, unread_only=unread_only, limit=limit, before=before
        )

    async def mark_read(self, user_id: str, notification_id: str) -> Notification:
        return await self._store.mark_read(user_id, notification_id)

    async def mark_all_read(self, user_id: str) -> int:
        return await self._store.mark_all_read(user_id)


class Catalogue:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def list(self) -> list[Category]:
        return await self._store.list_categories()

    async def add(self, category: Category) -> Category:
        return await self._store.add_category(category)
