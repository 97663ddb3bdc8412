"""Web push on the client: the VAPID public key browsers subscribe with, and a user's
push subscriptions (``PushSubscription.toJSON()`` as the browser gives it)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_request, document_response

from client.api import ErrorOut
from client.channel_api import (
    PushSubscriptionIn,
    PushSubscriptionOut,
    PushSubscriptionRemove,
    PushSubscriptionsOut,
    VapidKeyOut,
)
from client.channel_services import channel_services
from client.web import read_payload, settings
from notefly.addresses import EndpointKind
from notefly.errors import ConfigurationError, NotFound
from notefly.vapid import load_private_key, public_key_b64url

blueprint = Blueprint("push", __name__)


@blueprint.get("/push/vapid-public-key")
@document_response(VapidKeyOut)
@document_response(ErrorOut, 404)
async def vapid_public_key() -> dict[str, Any]:
    """The server's VAPID key; 404 until ``notefly keys`` has created it."""
    try:
        key = public_key_b64url(load_private_key(settings()))
    except ConfigurationError as exc:
        raise NotFound(exc.message, code="push_not_configured") from None
    return VapidKeyOut(public_key=key).model_dump()


@blueprint.post("/users/<user_id>/push-subscriptions")
@document_request(PushSubscriptionIn)
@document_response(PushSubscriptionOut, 201)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def add_push_subscription(user_id: str) -> Any:
    """Register a browser; registering it again is harmless (200)."""
    body = await read_payload(PushSubscriptionIn)
    found, created = await channel_services().registrations.add_push_subscription(
        user_id, body.endpoint, body.keys.p256dh, body.keys.auth
    )
    return PushSubscriptionOut.of(found).model_dump(mode="json"), 201 if created else 200


@blueprint.get("/users/<user_id>/push-subscriptions")
@document_response(PushSubscriptionsOut)
@document_response(ErrorOut, 404)
async def list_push_subscriptions(user_id: str) -> dict[str, Any]:
    found = await channel_services().registrations.endpoints(user_id, EndpointKind.WEBPUSH)
    return PushSubscriptionsOut(
        push_subscriptions=[PushSubscriptionOut.of(e) for e in found]
    ).model_dump(mode="json")


@blueprint.delete("/users/<user_id>/push-subscriptions")
@document_request(PushSubscriptionRemove)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def remove_push_subscription(user_id: str) -> tuple[str, int]:
    """Forget a browser, named by its endpoint (what the browser knows)."""
    body = await read_payload(PushSubscriptionRemove)
    await channel_services().registrations.remove_push_subscription(user_id, body.endpoint)
    return "", 204


@blueprint.delete("/users/<user_id>/push-subscriptions/<subscription_id>")
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def remove_push_subscription_by_id(user_id: str, subscription_id: str) -> tuple[str, int]:
    await channel_services().registrations.remove(user_id, EndpointKind.WEBPUSH, subscription_id)
    return "", 204
