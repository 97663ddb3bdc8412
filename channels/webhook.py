"""Webhooks, signed per the Standard Webhooks specification.

A user registers HTTPS endpoints (``POST /users/{id}/webhooks`` on the client) and gets
one signing secret (``whsec_...``) per endpoint. Each notification is a JSON POST with
``webhook-id`` (the delivery id: the same on every retry, so receivers can drop
repeats), ``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 of
``id.timestamp.body``, made with the ``standardwebhooks`` library). 2xx is success;
410 removes the endpoint; 408, 429 and 5xx are retried; redirects are not followed.

Settings: ``NOTEFLY_WEBHOOK_TIMEOUT`` (seconds, 10), ``NOTEFLY_WEBHOOK_ALLOW_HTTP``
(1: plain http:// to a loopback host is accepted, for tests and local development).
Endpoints are reached only at public addresses, checked on the address connected to
(``channels._targets.guarded_transport``; ``NOTEFLY_ALLOW_PRIVATE_TARGETS=1`` lifts it).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from channels._http import make_client, post, raise_for_status
from channels._targets import TargetFanout, TargetGone, guarded_transport
from notefly.addresses import AddressBook, DeliveryContext, Endpoint, EndpointKind
from notefly.clock import SystemClock
from notefly.config import Settings
from notefly.domain import Rendered
from notefly.errors import InvalidInput, NotFound, PermanentChannelError
from notefly.netguard import TargetRules, allows_private
from notefly.ports import Clock, SendResult
from notefly.provider_settings import ProviderSettings
from notefly.registrations import check_url

PROVIDER = "http"
EVENT_TYPE = "notification.created"


def payload(context: DeliveryContext, rendered: Rendered, timestamp: str) -> dict[str, Any]:
    message = context.message
    return {
        "type": EVENT_TYPE,
        "timestamp": timestamp,
        "data": {
            "delivery_id": context.delivery_id,
            "message_id": message.id,
            "user_id": context.user_id,
            "category": message.category_id,
            "priority": message.priority.value,
            "title": message.title,
            "body": message.body,
            "text": rendered.text,
            "data": message.data,
            "accepted_at": message.accepted_at.isoformat(),
        },
    }


class WebhookProvider:
    name = "webhook"
    provider = PROVIDER

    def __init__(
        self,
        addresses: AddressBook,
        client: httpx.AsyncClient,
        *,
        allow_http: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self._addresses = addresses
        self._client = client
        self._allow_http = allow_http
        self._clock = clock or SystemClock()
        self._fanout = TargetFanout(PROVIDER)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        try:
            context = await self._addresses.delivery_context(delivery_id)
        except NotFound:
            raise PermanentChannelError("webhook: the delivery or its user is gone") from None
        targets = await self._addresses.list_endpoints(context.user_id, EndpointKind.WEBHOOK)
        now = self._clock.now()
        body = json.dumps(payload(context, rendered, now.isoformat()), separators=(",", ":"))

        async def deliver(target: Endpoint) -> str | None:
            try:
                check_url(target.url, allow_http=self._allow_http)
            except InvalidInput as exc:
                raise PermanentChannelError(f"webhook: endpoint refused: {exc.message}") from None
            headers = {
                "webhook-id": delivery_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(target.keys["secret"]).sign(delivery_id, now, body),
                "Content-Type": "application/json",
            }
            response = await post(
                self._client, target.url, provider="webhook", content=body, headers=headers
            )
            if response.status_code == 410:
                raise TargetGone("webhook: the endpoint answered 410 Gone")
            raise_for_status(response, "webhook")
            return None

        return await self._fanout.send(
            delivery_id,
            targets,
            deliver,
            lambda target: self._addresses.forget_endpoint(target.id),
            "the user has no webhook endpoint",
        )


def WebhookChannel(settings: Settings, addresses: AddressBook) -> WebhookProvider:
    """The ``webhook.http`` provider, from settings."""
    own = ProviderSettings(settings, "WEBHOOK", "the webhook provider")
    allow_http = own.flag("ALLOW_HTTP")
    rules = TargetRules(allow_loopback=allow_http, allow_private=allows_private(settings))
    return WebhookProvider(
        addresses,
        make_client(own.seconds("TIMEOUT", 10.0), guarded_transport(rules)),
        allow_http=allow_http,
    )
