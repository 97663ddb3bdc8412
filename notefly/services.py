"""Use cases: what the HTTP services and the CLI ask of the core.

Each receives its dependencies in the constructor and does one thing; none knows
about HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from notefly import validation
from notefly.addresses import AddressBook, EndpointKind, channel_address, needs_address
from notefly.domain import (
    ADDRESS_NAMES,
    Category,
    Message,
    MessageStatus,
    Notification,
    Priority,
    Subscription,
    User,
)
from notefly.errors import InvalidInput, Overloaded
from notefly.ports import (
    Accepted,
    Clock,
    DeliveryCounts,
    FanoutPage,
    IdFactory,
    NullObserver,
    Observer,
    PageRequest,
    Store,
)
from notefly.schedule import QuietHours, Schedule, next_due


class Dispatcher(Protocol):
    node_id: str  # the node that fans out what it accepts

    def first_page(self, category_id: str) -> PageRequest | None:
        """The page of a new message's audience to plan with its commit; None when the
        fan-out should plan all of it (the node has no room for more deliveries, or the
        message must wait its turn behind another of its category)."""
        ...

    def publish(self, message: Message, first: FanoutPage | None = None) -> None:
        """Start delivering a committed message, whose ``first`` page may be planned.
        Thread-safe: it may be called on the thread that committed the message."""
        ...

    def overloaded(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class PublishCommand:
    category: str
    body: str
    title: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    idempotency_key: str | None = None
    deliver_at: datetime | None = None  # hold the message until then


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
        if self._dispatcher.overloaded():
            # Refuse before writing anything: a flood must not grow the backlog forever.
            raise Overloaded(
                "too many messages are waiting to be fanned out; retry later", retry_after=2
            )
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
            deliver_at=cmd.deliver_at,
        )
        later = cmd.deliver_at is not None and cmd.deliver_at > message.accepted_at
        request = None if later else self._dispatcher.first_page(cmd.category)
        if request is not None:
            # The first page commits with the message: a small audience is on its way
            # without another write, and an empty one is done at once. Its deliveries
            # go to the shards as soon as it commits (on the store's writer thread,
            # for SQLite), not once this coroutine has its turn on the event loop.
            accepted = await self._store.accept_with_page(message, request, on_commit=self._start)
            return accepted.message, accepted.created
        # A scheduled message has no owner: whichever node is up when it is due
        # claims it.
        stored, created = await self._store.accept_message(
            message, owner=None if later else self._dispatcher.node_id
        )
        if created and later:
            self._observer.message_accepted(stored.category_id)
        elif created:
            self._start(Accepted(stored, True, None))
        return stored, created

    def _start(self, accepted: Accepted) -> None:
        """Start delivering a message committed now (for this node to fan out)."""
        if accepted.created:
            self._observer.message_accepted(accepted.message.category_id)
            self._dispatcher.publish(accepted.message, accepted.page)


def message_status(counts: DeliveryCounts) -> MessageStatus:
    if not counts.fanout_done:
        return MessageStatus.ACCEPTED
    if counts.by_status.get("queued"):
        return MessageStatus.DELIVERING
    return MessageStatus.DELIVERED


# What a user may change about themselves; ids and timestamps are the store's.
EDITABLE_FIELDS = ("name", "email", "phone", "push_token", "timezone", "quiet_hours")
_CHECKS: dict[str, Callable[[str], str]] = {
    "name": validation.printable,
    "email": validation.email,
    "phone": validation.phone,
    "timezone": validation.timezone,
    "quiet_hours": lambda value: QuietHours.decode(value).encode(),
}


class Directory:
    """Users and their subscriptions."""

    def __init__(
        self,
        store: Store,
        ids: IdFactory,
        clock: Clock,
        channels: Sequence[str],
        addresses: AddressBook | None = None,  # registrations count as addresses too
    ):
        self._store = store
        self._ids = ids
        self._clock = clock
        self.channels = tuple(channels)
        self._addresses = addresses

    async def registered(self, user_id: str) -> Mapping[EndpointKind, int]:
        """How many endpoints of each kind the user registered (push, webhook, ...)."""
        return await self._registered(user_id)

    async def _registered(self, user_id: str) -> Mapping[EndpointKind, int]:
        return await self._addresses.endpoint_counts(user_id) if self._addresses else {}

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
        registered = await self._registered(user_id)
        subscriptions = await self._store.list_subscriptions(user_id)
        for sub in subscriptions:
            self._check_addresses(updated, sub.category_id, sub.channels, registered)
        stored = await self._store.update_user(updated)
        if updated.timezone != current.timezone:  # digests are due at local times
            for sub in subscriptions:
                await self._reschedule(stored, sub.category_id, Schedule.decode(sub.schedule))
        return stored

    async def subscriptions(self, user_id: str) -> list[Subscription]:
        await self._store.get_user(user_id)  # an unknown user is NotFound, not []
        return await self._store.list_subscriptions(user_id)

    async def subscribe(
        self,
        user_id: str,
        category_id: str,
        channels: Sequence[str],
        schedule: Schedule | None = None,
    ) -> Subscription:
        """Subscribe (or change a subscription); ``schedule`` None keeps the current one
        (immediate for a new subscription)."""
        user = await self._store.get_user(user_id)
        await self._store.get_category(category_id)
        registered = await self._registered(user_id)
        ordered = self._checked_channels(user, category_id, channels, registered)
        current = {s.category_id: s for s in await self._store.list_subscriptions(user_id)}
        before = current.get(category_id)
        if schedule is None:
            schedule = Schedule.decode(before.schedule) if before else Schedule()
        sub = await self._store.upsert_subscription(
            Subscription(user_id, category_id, ordered, schedule=schedule.encode())
        )
        if before is not None and before.schedule != sub.schedule:
            await self._reschedule(user, category_id, schedule)
        return sub

    async def _reschedule(self, user: User, category_id: str, schedule: Schedule) -> None:
        """What is already collected goes out in the digest of the new schedule; a switch
        to immediate sends it now, as one digest."""
        now = self._clock.now()
        due = now if schedule.immediate else next_due(schedule, user.timezone, now)
        await self._store.reschedule_collected(user.id, category_id, due)

    async def set_subscriptions(
        self,
        user_id: str,
        wanted: Mapping[str, Sequence[str]],
        schedules: Mapping[str, Schedule] | None = None,
    ) -> list[Subscription]:
        """Make the user's subscriptions exactly ``wanted`` (category -> channels), all
        or nothing: a category with no channels is unsubscribed."""
        user = await self._store.get_user(user_id)
        registered = await self._registered(user_id)
        current = {s.category_id: s.schedule for s in await self._store.list_subscriptions(user_id)}
        chosen = schedules or {}
        subs = []
        for category_id, channels in wanted.items():
            if not channels:
                continue
            await self._store.get_category(category_id)
            ordered = self._checked_channels(user, category_id, channels, registered)
            schedule = chosen.get(category_id) or Schedule.decode(
                current.get(category_id, "immediate")
            )
            subs.append(Subscription(user_id, category_id, ordered, schedule=schedule.encode()))
        saved = await self._store.replace_subscriptions(user_id, subs)
        for sub in saved:
            if current.get(sub.category_id, sub.schedule) != sub.schedule:
                await self._reschedule(user, sub.category_id, Schedule.decode(sub.schedule))
        return saved

    async def unsubscribe(self, user_id: str, category_id: str) -> None:
        await self._store.get_user(user_id)
        await self._store.delete_subscription(user_id, category_id)

    def _checked_channels(
        self,
        user: User,
        category_id: str,
        channels: Sequence[str],
        registered: Mapping[EndpointKind, int],
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
        self._check_addresses(user, category_id, ordered, registered)
        return ordered

    @staticmethod
    def _check_addresses(
        user: User,
        category_id: str,
        channels: Sequence[str],
        registered: Mapping[EndpointKind, int],
    ) -> None:
        missing = [
            ch for ch in channels if needs_address(ch) and not channel_address(user, ch, registered)
        ]
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
