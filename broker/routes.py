"""The broker's JSON API."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response
from quart_schema import document_request, document_response

import notefly
from broker import pages
from broker.api import (
    CategoriesOut,
    CategoryIn,
    CategoryOut,
    DeliveriesOut,
    DeliveryCountsOut,
    DeliveryOut,
    ErrorOut,
    HealthOut,
    MessageOut,
    PublishRequest,
    PublishResponse,
)
from broker.auth import check_category
from broker.ingest import accepted
from broker.web import is_form, read_payload, services
from notefly.services import message_status

blueprint = Blueprint("api", __name__)


@blueprint.post("/pub")
@document_request(PublishRequest)
@document_response(PublishResponse, 202)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def publish() -> Any:
    """Accept a message; 202 once it is committed, before it is delivered."""
    # broker.ingest answers most publishes before they get here, in the same way.
    if is_form():  # the HTML form of GET /pub posts here too
        return await pages.publish_form()
    body = await read_payload(PublishRequest)
    check_category(body.category)
    message, created = await services().publisher.publish(body.command())
    payload, headers = accepted(message, created)
    return Response(payload, status=202, headers=headers, mimetype="application/json")


@blueprint.get("/messages/<message_id>")
@document_response(MessageOut)
@document_response(ErrorOut, 404)
async def get_message(message_id: str) -> dict[str, Any]:
    store = services().store
    message = await store.get_message(message_id)
    counts = await store.delivery_counts(message_id)
    return MessageOut(
        id=message.id,
        category=message.category_id,
        title=message.title,
        body=message.body,
        priority=message.priority,
        accepted_at=message.accepted_at,
        status=message_status(counts).value,
        deliveries=DeliveryCountsOut(total=sum(counts.by_status.values()), **counts.by_status),
    ).model_dump(mode="json")


@blueprint.get("/messages/<message_id>/deliveries")
@document_response(DeliveriesOut)
@document_response(ErrorOut, 404)
async def get_deliveries(message_id: str) -> dict[str, Any]:
    rows = await services().store.list_deliveries(message_id)
    return DeliveriesOut(
        message_id=message_id, deliveries=[DeliveryOut.of(d) for d in rows]
    ).model_dump(mode="json")


@blueprint.get("/categories")
@document_response(CategoriesOut)
async def list_categories() -> dict[str, Any]:
    categories = await services().catalogue.list()
    return CategoriesOut(categories=[CategoryOut.of(c) for c in categories]).model_dump()


@blueprint.post("/categories")
@document_request(CategoryIn)
@document_response(CategoryOut, 201)
@document_response(ErrorOut, 409)
async def add_category() -> tuple[dict[str, Any], int]:
    body = await read_payload(CategoryIn)
    category = await services().catalogue.add(body.category())
    return CategoryOut.of(category).model_dump(), 201


@blueprint.get("/healthz")
@document_response(HealthOut)
async def healthz() -> dict[str, Any]:
    await services().store.ping()
    return {"status": "ok", "service": "broker", "version": notefly.__version__}


@blueprint.get("/")
async def index() -> tuple[str, int, dict[str, str]]:
    return "", 302, {"Location": "/pub"}
