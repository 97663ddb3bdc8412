"""JSON schemas of the client's channel routes: push subscriptions, webhooks, Apprise
URLs, the VAPID key. What is shown of an endpoint is its label, never a credential:
a webhook's signing secret appears once, in the answer that creates it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from client.api import Strict
from notefly.addresses import Endpoint

Url = Annotated[str, Field(min_length=1, max_length=2048)]
Key = Annotated[str, Field(min_length=1, max_length=200)]


class PushKeysIn(Strict):
    p256dh: Key
    auth: Key


class PushSubscriptionIn(BaseModel):
    """``PushSubscription.toJSON()`` as a browser gives it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    endpoint: Url
    keys: PushKeysIn
    expirationTime: int | None = None  # the browser's name for it


class PushSubscriptionRemove(Strict):
    endpoint: Url


class PushSubscriptionOut(BaseModel):
    id: str
    service: str = Field(description="The push service (origin of the endpoint)")
    created_at: datetime | None

    @classmethod
    def of(cls, e: Endpoint) -> PushSubscriptionOut:
        return cls(id=e.id, service=e.label, created_at=e.created_at)


class PushSubscriptionsOut(BaseModel):
    push_subscriptions: list[PushSubscriptionOut]


class VapidKeyOut(BaseModel):
    public_key: str = Field(description="applicationServerKey for PushManager.subscribe()")


class UrlIn(Strict):
    url: Url


class EndpointOut(BaseModel):
    id: str
    url: str = Field(description="The URL, credentials masked")
    created_at: datetime | None

    @classmethod
    def of(cls, e: Endpoint) -> EndpointOut:
        return cls(id=e.id, url=e.label, created_at=e.created_at)


class WebhookCreatedOut(EndpointOut):
    secret: str = Field(description="whsec_...: verifies the webhook-signature header")

    @classmethod
    def created(cls, e: Endpoint) -> WebhookCreatedOut:
        return cls(id=e.id, url=e.label, created_at=e.created_at, secret=e.keys["secret"])


class EndpointsOut(BaseModel):
    endpoints: list[EndpointOut]
