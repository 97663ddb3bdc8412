"""The domain model: plain values, no I/O.

Values are never changed once made (``dataclasses.replace`` makes a new one). The few
built for every delivery (``Recipient``, ``DeliveryTask``, ``Rendered``, ``Outcome``,
and ``ports.SendResult``) are nonetheless not declared frozen: a frozen dataclass sets
each field through ``object.__setattr__``, which made an ``Outcome`` cost 1.3 µs to
build against 0.3 µs, on every delivery. Nothing hashes them.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


# Hot paths read these rather than the enum: in CPython 3.11 a member read off its class
# took about 0.15 us more than a module global, and ``.value`` about 0.4 us, several
# times a delivery.
QUEUED, SENT = DeliveryStatus.QUEUED, DeliveryStatus.SENT
STATUS_VALUE = {status: status.value for status in DeliveryStatus}


class MessageStatus(StrEnum):
    ACCEPTED = "accepted"  # committed; the audience is still being resolved
    DELIVERING = "delivering"  # every delivery is recorded, some are still queued
    DELIVERED = "delivered"  # every delivery reached a final state


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    email: str | None = None
    phone: str | None = None
    push_token: str | None = None
    timezone: str = "UTC"
    created_at: datetime | None = None
    quiet_hours: str | None = None  # 'HH:MM-HH:MM' local (notefly.schedule.QuietHours)

    def address_for(self, channel: str) -> str | None:
        """The address this user has for a channel, or None when they have none."""
        attribute = ADDRESS_FIELDS.get(channel)
        address: str | None = getattr(self, attribute) if attribute else None
        return address


# Ids from ``SortableIds`` begin, after their prefix, with 11 hex digits of
# milliseconds and 4 of a counter: the part of them that sorts by time.
SORTABLE_TIME_CHARS = 15

# Which user field addresses which channel; a channel missing here needs no address.
ADDRESS_FIELDS = {"sms": "phone", "email": "email", "push": "push_token"}
# What a person calls each channel's address; push, webhook and apprise addresses may
# also be registrations (see notefly.addresses).
ADDRESS_NAMES = {
    "sms": "phone number",
    "email": "email address",
    "push": "push token or web push subscription",
    "webhook": "webhook endpoint",
    "apprise": "Apprise URL",
}


@dataclass(frozen=True, slots=True)
class Subscription:
    user_id: str
    category_id: str
    channels: tuple[str, ...]
    updated_at: datetime | None = None
    schedule: str = "immediate"  # notefly.schedule.Schedule.encode()


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    category_id: str
    body: str
    accepted_at: datetime
    title: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    idempotency_key: str | None = None
    deliver_at: datetime | None = None  # scheduled: fanned out from then on


@dataclass(slots=True)
class Recipient:
    """What a delivery needs to know of its user, read together with the subscription."""

    user_id: str
    name: str
    address: str | None
    timezone: str = "UTC"


@dataclass(slots=True)
class DeliveryTask:
    """One (message, user, channel) delivery handed to a channel shard."""

    id: str
    message: Message
    channel: str
    recipient: Recipient
    attempts: int = 0
    # A digest: ``id`` is the digest's, ``message`` the newest item, ``items`` all of
    # them (newest first).
    items: tuple[Message, ...] = ()

    @property
    def is_digest(self) -> bool:
        return bool(self.items)


@dataclass(slots=True)
class Rendered:
    """A notification rendered for one channel, ready for a provider."""

    channel: str
    to: str
    text: str
    subject: str | None = None
    html: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """What became of one delivery attempt; the store records it."""

    delivery_id: str
    status: DeliveryStatus
    attempts: int
    provider: str | None = None
    provider_message_id: str | None = None
    recipient: str | None = None
    subject: str | None = None
    text: str | None = None
    error: str | None = None
    at: datetime | None = None
    retry_after: float | None = None  # seconds, when the provider asked for it


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    message_id: str
    user_id: str
    channel: str
    status: DeliveryStatus
    attempts: int
    provider: str | None
    provider_message_id: str | None
    recipient: str | None
    subject: str | None
    text: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    mode: str = "immediate"  # or "digest": collected for the user's next digest
    note: str | None = None  # why it waits or was folded (quiet hours, throttled)
    digest_id: str | None = None  # the digest that carried it


@dataclass(frozen=True, slots=True)
class Notification:
    """An inbox entry: one per (user, message)."""

    id: str
    user_id: str
    message_id: str
    category_id: str
    title: str | None
    body: str
    priority: Priority
    created_at: datetime
    read_at: datetime | None
    via: str | None = None  # "digest": it reaches the user's channels in a digest


def delivery_id(message_id: str, user_id: str, channel: str) -> str:
    """A stable delivery id: the same triple always yields the same id, so a fan-out
    that is run again after a crash inserts nothing twice, and providers can use it as
    an idempotency key.

    The id sorts as the fan-out writes: by its message's time, then by its user (see
    ``ordered_key``), then a hash. A fan-out walks its audience in user order, so its
    rows are appended to every index keyed by id. With a bare hash, each row landed on
    a random page of indexes that grow to millions of rows: a commit of 500 users of a
    broadcast rewrote about 1,800 pages, against 120 in this order.
    """
    key = ordered_key(message_id)
    return _delivery_id("d_" + key, message_id, user_id, ordered_key(user_id), channel)


def partition_of(user_id: str, partitions: int) -> int:
    """Which of ``partitions`` a user falls in: the shard of each channel that hosts the
    user's entity. A fan-out page writes its rows grouped the same way (``plan_page``),
    so the deliveries a shard sends together lie together on disk."""
    return zlib.crc32(user_id.encode()) % partitions


def ordered_key(entity_id: str) -> str:
    """The leading, sortable part of an id: for ``SortableIds`` (``usr_…``, ``msg_…``)
    the creation time and its counter, without the random tail; for another id its
    first characters. Empty when those are not all letters and digits, so that the
    ids made from it stay plain tokens (they are then merely unordered)."""
    _, sep, rest = entity_id.partition("_")
    key = (rest if sep else entity_id)[:SORTABLE_TIME_CHARS]
    return key if key.isascii() and key.isalnum() else ""


def digest_id(user_id: str, channel: str, first_item: str) -> str:
    """Stable for the same collected items, so a digest claimed twice is one digest."""
    digest = hashlib.blake2b(f"{user_id}:{channel}:{first_item}".encode(), digest_size=12)
    return "g_" + digest.hexdigest()


def notification_id(message_id: str, user_id: str) -> str:
    """Stable like ``delivery_id`` and, like it, in the order a fan-out writes."""
    return _notification_id("n_" + ordered_key(message_id), message_id, user_id)


def _delivery_id(head: str, message_id: str, user_id: str, user_key: str, channel: str) -> str:
    digest = hashlib.blake2b(f"{message_id}:{user_id}:{channel}".encode(), digest_size=12)
    return head + user_key + digest.hexdigest()


def _notification_id(head: str, message_id: str, user_id: str) -> str:
    digest = hashlib.blake2b(f"{message_id}:{user_id}".encode(), digest_size=12)
    return head + ordered_key(user_id) + digest.hexdigest()


class AudienceIds:
    """``delivery_id`` and ``notification_id`` for the audience of one message, with
    the message's key taken once: a fan-out page makes thousands of them, and the keys
    were a third of each id's cost (1.06 µs). ``user_key`` is ``ordered_key(user_id)``,
    for a caller that makes several ids of one user."""

    __slots__ = ("_delivery", "_message_id", "_notification")

    def __init__(self, message_id: str) -> None:
        key = ordered_key(message_id)
        self._message_id = message_id
        self._delivery = "d_" + key
        self._notification = "n_" + key

    def delivery(self, user_id: str, channel: str, user_key: str | None = None) -> str:
        key = ordered_key(user_id) if user_key is None else user_key
        return _delivery_id(self._delivery, self._message_id, user_id, key, channel)

    def notification(self, user_id: str) -> str:
        return _notification_id(self._notification, self._message_id, user_id)
