"""Row shapes both stores share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from notefly.domain import Delivery, DeliveryStatus, Notification, Priority, User

USER_COLUMNS = "id, name, email, phone, push_token, timezone, created_at, quiet_hours"
NOTIFICATION_COLUMNS = (
    "id, user_id, message_id, category_id, title, body, priority, created_at, read_at, via"
)
DELIVERY_COLUMNS = (
    "id, message_id, user_id, channel, status, attempts, provider, provider_message_id,"
    " recipient, subject, text, error, created_at, updated_at, sent_at, mode, note, digest_id"
)


def delivery(row: Sequence[Any], stamp: Callable[[Any], datetime | None]) -> Delivery:
    """A row of ``DELIVERY_COLUMNS``; ``stamp`` reads the store's timestamps."""
    created, updated = stamp(row[12]), stamp(row[13])
    assert created is not None  # NOT NULL columns
    assert updated is not None
    return Delivery(
        id=row[0],
        message_id=row[1],
        user_id=row[2],
        channel=row[3],
        status=DeliveryStatus(row[4]),
        attempts=row[5],
        provider=row[6],
        provider_message_id=row[7],
        recipient=row[8],
        subject=row[9],
        text=row[10],
        error=row[11],
        created_at=created,
        updated_at=updated,
        sent_at=stamp(row[14]),
        mode=row[15],
        note=row[16],
        digest_id=row[17],
    )


def user_row(row: Sequence[Any], stamp: Callable[[Any], datetime | None]) -> User:
    """A row of ``USER_COLUMNS``."""
    return User(
        id=row[0],
        name=row[1],
        email=row[2],
        phone=row[3],
        push_token=row[4],
        timezone=row[5],
        created_at=stamp(row[6]),
        quiet_hours=row[7],
    )


def notification_row(row: Sequence[Any], stamp: Callable[[Any], datetime | None]) -> Notification:
    """A row of ``NOTIFICATION_COLUMNS``."""
    created = stamp(row[7])
    assert created is not None  # NOT NULL column
    return Notification(
        id=row[0],
        user_id=row[1],
        message_id=row[2],
        category_id=row[3],
        title=row[4],
        body=row[5],
        priority=Priority(row[6]),
        created_at=created,
        read_at=stamp(row[8]),
        via=row[9],
    )
