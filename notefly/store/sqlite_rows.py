"""Row shapes shared by the SQLite store and its read models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from notefly.addresses import CHANNEL_KINDS
from notefly.domain import DeliveryTask, Message, Priority, Recipient, User

_MESSAGE_COLUMNS = (
    "m.id, m.category_id, m.title, m.body, m.data, m.priority, m.idempotency_key, m.accepted_at"
)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _message(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        category_id=row[1],
        title=row[2],
        body=row[3],
        data=json.loads(row[4]),
        priority=Priority(row[5]),
        idempotency_key=row[6],
        accepted_at=datetime.fromisoformat(row[7]),
    )


# The user's current address wins; the recorded one serves channels whose addresses
# are registrations (web push subscriptions, webhooks, Apprise URLs), not user fields.
_TASK_QUERY = (
    "SELECT d.id, d.channel, d.attempts, d.user_id, u.name, u.email, u.phone, u.push_token,"
    f" u.timezone, {_MESSAGE_COLUMNS}, d.recipient FROM deliveries d"
    " JOIN messages m ON m.id = d.message_id LEFT JOIN users u ON u.id = d.user_id"
)


def _tasks(rows: Sequence[Sequence[Any]]) -> list[DeliveryTask]:
    """Delivery tasks from rows of ``_TASK_QUERY``."""
    messages: dict[str, Message] = {}
    tasks = []
    for row in rows:
        message = messages.get(row[9]) or messages.setdefault(row[9], _message(row[9:17]))
        user = User(row[3], row[4] or "", row[5], row[6], row[7], row[8] or "UTC")
        address = task_address(user, row[1], row[17])
        recipient = Recipient(row[3], user.name, address, user.timezone)
        tasks.append(DeliveryTask(row[0], message, row[1], recipient, attempts=row[2]))
    return tasks


def task_address(user: User, channel: str, recorded: str | None) -> str | None:
    """The address to send to now: the user's current one, else the one recorded at
    fan-out for channels addressed by registrations."""
    return user.address_for(channel) or (recorded if channel in CHANNEL_KINDS else None)
