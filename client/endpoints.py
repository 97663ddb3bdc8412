"""A user's webhook endpoints and Apprise URLs: register, list, remove."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_request, document_response

from client.api import ErrorOut
from client.channel_api import EndpointOut, EndpointsOut, UrlIn, WebhookCreatedOut
from client.channel_services import channel_services
from client.web import read_payload
from notefly.addresses import EndpointKind

blueprint = Blueprint("endpoints", __name__)


async def _listed(user_id: str, kind: EndpointKind) -> dict[str, Any]:
    found = await channel_services().registrations.endpoints(user_id, kind)
    return EndpointsOut(endpoints=[EndpointOut.of(e) for e in found]).model_dump(mode="json")


async def _removed(user_id: str, kind: EndpointKind, endpoint_id: str) -> tuple[str, int]:
    await channel_services().registrations.remove(user_id, kind, endpoint_id)
    return "", 204


@blueprint.post("/users/<user_id>/webhooks")
@document_request(UrlIn)
@document_response(WebhookCreatedOut, 201)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def add_webhook(user_id: str) -> Any:
    """Register an HTTPS endpoint; the answer holds its signing secret (``whsec_...``)."""
    body = await read_payload(UrlIn)
    found, created = await channel_services().registrations.add_webhook(user_id, body.url)
    return WebhookCreatedOut.created(found).model_dump(mode="json"), 201 if created else 200


@blueprint.get("/users/<user_id>/webhooks")
@document_response(EndpointsOut)
@document_response(ErrorOut, 404)
async def list_webhooks(user_id: str) -> dict[str, Any]:
    return await _listed(user_id, EndpointKind.WEBHOOK)


@blueprint.delete("/users/<user_id>/webhooks/<webhook_id>")
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def remove_webhook(user_id: str, webhook_id: str) -> tuple[str, int]:
    return await _removed(user_id, EndpointKind.WEBHOOK, webhook_id)


@blueprint.post("/users/<user_id>/apprise-urls")
@document_request(UrlIn)
@document_response(EndpointOut, 201)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def add_apprise_url(user_id: str) -> Any:
    """Register an Apprise URL (``tgram://…``, ``ntfys://…``); 422 when Apprise cannot use it."""
    body = await read_payload(UrlIn)
    found, created = await channel_services().registrations.add_apprise_url(user_id, body.url)
    return EndpointOut.of(found).model_dump(mode="json"), 201 if created else 200


@blueprint.get("/users/<user_id>/apprise-urls")
@document_response(EndpointsOut)
@document_response(ErrorOut, 404)
async def list_apprise_urls(user_id: str) -> dict[str, Any]:
    return await _listed(user_id, EndpointKind.APPRISE)


@blueprint.delete("/users/<user_id>/apprise-urls/<url_id>")
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def remove_apprise_url(user_id: str, url_id: str) -> tuple[str, int]:
    return await _removed(user_id, EndpointKind.APPRISE, url_id)
