"""Addresses that are registrations rather than fields of the user.

Email and SMS reach a user at one field of theirs. Other channels reach them at what
they registered: web push subscriptions (one per browser) for ``push``, HTTPS endpoints
for ``webhook``, Apprise URLs for ``apprise``. A user has an address for such a channel
when they registered at least one (for ``push``, a push token does too).

The providers of these channels look the targets up when they send, so a subscription
removed meanwhile is never used; what the delivery row records as its recipient is a
summary ("web-push:2"), never a URL, since URLs of such services carry credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from notefly.domain import ADDRESS_FIELDS, Message, User


class EndpointKind(StrEnum):
    WEBPUSH = "webpush"
    WEBHOOK = "webhook"
    APPRISE = "apprise"


# Which kind of registration addresses which channel.
CHANNEL_KINDS: Mapping[str, EndpointKind] = {
    "push": EndpointKind.WEBPUSH,
    "webhook": EndpointKind.WEBHOOK,
    "apprise": EndpointKind.APPRISE,
}
SUMMARY_PREFIX = {
    EndpointKind.WEBPUSH: "web-push",
    EndpointKind.WEBHOOK: "webhook",
    EndpointKind.APPRISE: "apprise",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One registered target of a user.

    Attributes:
        url: where to send: the push service URL, the webhook URL, the Apprise URL.
        keys: what sending needs besides the URL: ``p256dh`` and ``auth`` of a web push
            subscription, ``secret`` (``whsec_...``) that signs a webhook.
        label: what may be shown of it: the URL of a webhook or a push service, an
            Apprise URL with its credentials masked.
    """

    id: str
    user_id: str
    kind: EndpointKind
    url: str
    keys: Mapping[str, str] = field(default_factory=dict)
    label: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """Who and what a delivery is for, as a provider sending it needs to know."""

    delivery_id: str
    user_id: str
    message: Message


class AddressBook(Protocol):
    """Registered endpoints, kept by the store."""

    async def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        """Insert, or return the existing one for the same (kind, URL) of this user;
        a web push endpoint moves to the user who registers it last."""
        ...

    async def list_endpoints(self, user_id: str, kind: EndpointKind) -> list[Endpoint]: ...
    async def get_endpoint(self, user_id: str, kind: EndpointKind, endpoint_id: str) -> Endpoint:
        """Raises ``NotFound``."""
        ...

    async def delete_endpoint(self, user_id: str, kind: EndpointKind, endpoint_id: str) -> None:
        """Raises ``NotFound``."""
        ...

    async def forget_endpoint(self, endpoint_id: str) -> None:
        """Remove an endpoint the remote service said is gone; a no-op if it is."""
        ...

    async def endpoint_counts(self, user_id: str) -> dict[EndpointKind, int]: ...
    async def delivery_context(self, delivery_id: str) -> DeliveryContext:
        """Raises ``NotFound`` when the delivery (or its user) is gone."""
        ...


def needs_address(channel: str) -> bool:
    return channel in ADDRESS_FIELDS or channel in CHANNEL_KINDS


def channel_address(user: User, channel: str, registered: Mapping[EndpointKind, int]) -> str | None:
    """The address a user has for a channel, counting their registrations."""
    address = user.address_for(channel)
    kind = CHANNEL_KINDS.get(channel)
    if address or kind is None:
        return address
    return registered_address(kind, registered)


def registered_address(kind: EndpointKind, registered: Mapping[EndpointKind, int]) -> str | None:
    """What addresses a user through their registrations of ``kind`` (``registered``:
    their counts by kind), for a user with no address of their own for the channel."""
    count = registered.get(kind, 0)
    return f"{SUMMARY_PREFIX[kind]}:{count}" if count else None
