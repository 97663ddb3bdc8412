"""Web Push (RFC 8030), payload encrypted per RFC 8291, VAPID-signed per RFC 8292.

A user's push address is their browsers' subscriptions (``POST /users/{id}/
push-subscriptions`` on the client). Each send encrypts the notification for every
subscription with pywebpush and posts it to the push service with an ``httpx`` client.
A 404 or 410 means the browser dropped the subscription: it is forgotten. 429 and 5xx
are retried, after ``Retry-After`` when the service gives one.

Settings: ``NOTEFLY_VAPID_SUBJECT`` (required: ``mailto:`` or ``https:``, who push
services contact), the VAPID key (``notefly keys``, or ``NOTEFLY_VAPID_PRIVATE_KEY``),
``NOTEFLY_WEBPUSH_TTL`` (seconds a push service keeps an undelivered message, 86400),
``NOTEFLY_WEBPUSH_TIMEOUT`` (seconds, 10).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, VapidException  # type: ignore[import-untyped]
from pywebpush import WebPusher, WebPushException  # type: ignore[import-untyped]

from channels._http import make_client, post, raise_for_status
from channels._targets import TargetFanout, TargetGone, guarded_transport
from notefly.addresses import AddressBook, Endpoint, EndpointKind
from notefly.config import Settings
from notefly.domain import Priority, Rendered
from notefly.errors import ConfigurationError, NotFound, PermanentChannelError
from notefly.netguard import TargetRules, allows_private
from notefly.ports import SendResult
from notefly.provider_settings import ProviderSettings
from notefly.vapid import load_private_key

PROVIDER = "webpush"
CLAIMS_SECONDS = 12 * 3600
URGENCY = {
    Priority.LOW: "low",
    Priority.NORMAL: "normal",
    Priority.HIGH: "high",
    Priority.URGENT: "high",
}


def origin(url: str) -> str:
    parts = httpx.URL(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{parts.host}{port}"


class WebPushProvider:
    name = "push"
    provider = PROVIDER

    def __init__(
        self,
        addresses: AddressBook,
        vapid_key: ec.EllipticCurvePrivateKey,
        subject: str,
        client: httpx.AsyncClient,
        *,
        ttl: int = 86400,
        client_url: str | None = None,
    ) -> None:
        self._addresses = addresses
        self._vapid = Vapid(private_key=vapid_key)
        self._subject = subject
        self._client = client
        self._ttl = ttl
        self._client_url = client_url
        self._fanout = TargetFanout(PROVIDER)
        try:  # a bad subject fails now, not at the first send
            self._vapid.sign({"sub": subject, "aud": "https://push.example"})
        except VapidException as exc:
            raise ConfigurationError(f"NOTEFLY_VAPID_SUBJECT is not usable: {exc}") from None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, rendered: Rendered, *, delivery_id: str) -> SendResult:
        try:
            context = await self._addresses.delivery_context(delivery_id)
        except NotFound:
            raise PermanentChannelError("webpush: the delivery or its user is gone") from None
        targets = await self._addresses.list_endpoints(context.user_id, EndpointKind.WEBPUSH)
        payload = json.dumps(
            {
                "title": rendered.subject,
                "body": rendered.text,
                "category": context.message.category_id,
                "message_id": context.message.id,
                "delivery_id": delivery_id,
                "url": f"{self._client_url}/sub?user={context.user_id}"
                if self._client_url
                else None,
            }
        ).encode()
        urgency = URGENCY[context.message.priority]

        async def push(target: Endpoint) -> str | None:
            return await self._push(target, payload, urgency)

        return await self._fanout.send(
            delivery_id,
            targets,
            push,
            lambda target: self._addresses.forget_endpoint(target.id),
            "the user has no web push subscription (a push token is not one)",
        )

    async def _push(self, target: Endpoint, payload: bytes, urgency: str) -> str | None:
        info: dict[str, Any] = {"endpoint": target.url, "keys": dict(target.keys)}
        try:
            body = WebPusher(info).encode(payload, content_encoding="aes128gcm")["body"]
        except (WebPushException, ValueError) as exc:
            raise PermanentChannelError(f"webpush: unusable subscription keys ({exc})") from None
        # pywebpush and py_vapid may change the claims they are given: a fresh dict each time.
        claims = {
            "sub": self._subject,
            "aud": origin(target.url),
            "exp": int(time.time()) + CLAIMS_SECONDS,
        }
        headers = {
            "TTL": str(self._ttl),
            "Urgency": urgency,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            **self._vapid.sign(claims),
        }
        response = await post(
            self._client, target.url, provider=PROVIDER, content=body, headers=headers
        )
        if response.status_code in (404, 410):
            raise TargetGone(f"webpush: the subscription is gone ({response.status_code})")
        raise_for_status(response, PROVIDER)
        location: str | None = response.headers.get("Location")
        return location


def WebPushChannel(settings: Settings, addresses: AddressBook) -> WebPushProvider:
    """The ``push.webpush`` provider, from settings."""
    vapid = ProviderSettings(settings, "VAPID", "the webpush provider")
    own = ProviderSettings(settings, "WEBPUSH", "the webpush provider")
    # Push endpoints are user-supplied URLs: the address connected to is checked at send
    # time too, as for webhooks (a name may resolve elsewhere than at registration).
    rules = TargetRules(
        allow_loopback=own.flag("ALLOW_HTTP"), allow_private=allows_private(settings)
    )
    return WebPushProvider(
        addresses,
        load_private_key(settings),
        vapid.required("SUBJECT"),
        make_client(own.seconds("TIMEOUT", 10.0), guarded_transport(rules)),
        ttl=own.integer("TTL", 86400, minimum=0),
        client_url=settings.client_url,
    )
