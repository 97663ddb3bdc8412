"""Personal data: everything the store keeps about one user, for their export.

The erasure is ``Store.delete_user``; the contract tests check that it leaves nothing
of the user in any table, and that the export names every kind of row it erases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from notefly.addresses import Endpoint
from notefly.domain import Delivery, Notification, Subscription, User


@dataclass(frozen=True, slots=True)
class DigestRecord:
    """One digest sent (or being sent) to the user: many messages in one notification."""

    id: str
    channel: str
    status: str
    attempts: int
    items: int
    provider: str | None
    recipient: str | None
    subject: str | None
    text: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserExport:
    user: User
    subscriptions: list[Subscription]  # with their schedules
    endpoints: list[Endpoint]  # web push subscriptions, webhooks, Apprise URLs
    notifications: list[Notification]  # the inbox, newest first
    deliveries: list[Delivery]  # addressed to the user, newest first
    digests: list[DigestRecord]  # newest first


class PersonalDataStore(Protocol):
    async def export_user(self, user_id: str) -> UserExport:
        """Everything about the user; ``NotFound`` for an unknown user."""
        ...


class PersonalData:
    """The export of a user's data (their erasure is ``Directory.delete``)."""

    def __init__(self, store: PersonalDataStore) -> None:
        self._store = store

    async def export(self, user_id: str) -> UserExport:
        return await self._store.export_user(user_id)
