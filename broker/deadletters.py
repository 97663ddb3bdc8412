"""The broker's dead-letter endpoints: ``GET /deliveries`` (filtered, paged) and
``POST /deliveries/redrive`` (bulk redrive of failed deliveries).

``install(app, container)`` registers them; the redriven deliveries are handed to this
node's actors and counted in ``notefly_redrives_total`` like a single redrive.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator
from quart import Blueprint, Quart, current_app, request
from quart_schema import document_querystring, document_request, document_response

from broker.api import DeliveryOut, ErrorOut, Strict
from broker.ops import ops
from broker.web import read_payload
from notefly.containers import Container, resolve
from notefly.deadletters import (
    DEFAULT_PAGE,
    DEFAULT_REDRIVE,
    MAX_PAGE,
    MAX_REDRIVE,
    DeadLetters,
    DeadLetterStore,
    DeliveryFilter,
    ListedDelivery,
)
from notefly.domain import DeliveryStatus
from notefly.payloads import validate

blueprint = Blueprint("deadletters", __name__)

# "dead" is the dead-letter view of failed deliveries: the same rows.
StatusName = Literal["dead", "failed", "queued", "sent", "skipped"]


class DeliveryFilterIn(Strict):
    channel: str | None = Field(default=None, min_length=1, max_length=64)
    category: str | None = Field(default=None, min_length=1, max_length=64)
    since: AwareDatetime | None = Field(
        default=None, description="Changed at or after (ISO 8601 with a zone)"
    )
    until: AwareDatetime | None = Field(
        default=None, description="Changed before (ISO 8601 with a zone)"
    )

    @field_validator("since", "until")
    @classmethod
    def in_utc(cls, value: datetime | None) -> datetime | None:
        try:
            return value.astimezone(UTC) if value is not None else None
        except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise ValueError("out of the range of dates") from exc

    def where(self, status: str | None) -> DeliveryFilter:
        return DeliveryFilter(
            status=None if status is None else DeliveryStatus(_stored(status)),
            channel=self.channel,
            category=self.category.lower() if self.category else None,
            since=self.since,
            until=self.until,
        )


class DeliveriesQuery(DeliveryFilterIn):
    status: StatusName | None = Field(default=None, description="'dead' is the same as 'failed'")
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(
        default=None, max_length=500, description="next_cursor of the previous page"
    )


class RedriveIn(DeliveryFilterIn):
    status: Literal["dead", "failed"] = "failed"
    limit: int = Field(
        default=DEFAULT_REDRIVE, ge=1, le=MAX_REDRIVE, description="At most this many per call"
    )


class ListedDeliveryOut(DeliveryOut):
    message_id: str
    category: str

    @classmethod
    def of_listed(cls, entry: ListedDelivery) -> ListedDeliveryOut:
        base = DeliveryOut.of(entry.delivery).model_dump()
        return cls(**base, message_id=entry.delivery.message_id, category=entry.category_id)


class DeliveryListOut(BaseModel):
    deliveries: list[ListedDeliveryOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class RedrivenOut(BaseModel):
    status: Literal["queued"] = "queued"
    redriven: int
    ids: list[str] = Field(description="The deliveries queued again, under their own ids")
    more: bool = Field(description="Failed deliveries matching the filter remain: call again")


def _stored(status: str) -> str:
    return DeliveryStatus.FAILED.value if status == "dead" else status


def install(app: Quart, container: Container) -> None:
    @app.before_serving
    async def resolve_dead_letters() -> None:
        store: DeadLetterStore = await resolve(container.store)
        app.extensions["notefly_dead_letters"] = DeadLetters(
            store,
            await resolve(container.actors),
            # Looked up when called: the operations services start beside this one.
            redriven=lambda channel: ops().metrics.redrives.labels(channel).inc(),
            changed=lambda: ops().operations.forget_snapshot(),
        )

    app.register_blueprint(blueprint)


def dead_letters() -> DeadLetters:
    found: DeadLetters = current_app.extensions["notefly_dead_letters"]
    return found


def _query() -> DeliveriesQuery:
    args = {k: v for k, v in request.args.items() if v.strip()}
    for key in ("since", "until"):  # an unescaped '+' of a zone arrives as a space
        if key in args:
            args[key] = args[key].strip().replace(" ", "+")
    return validate(DeliveriesQuery, args)


@blueprint.get("/deliveries")
@document_querystring(DeliveriesQuery)
@document_response(DeliveryListOut)
@document_response(ErrorOut, 422)
async def list_deliveries() -> dict[str, Any]:
    """Deliveries by status (``dead``: failed for good), channel, category and the time
    they last changed, newest change first; ``next_cursor`` names the next page."""
    query = _query()
    page = await dead_letters().deliveries(query.where(query.status), query.limit, query.cursor)
    return DeliveryListOut(
        deliveries=[ListedDeliveryOut.of_listed(e) for e in page.entries],
        next_cursor=page.next_cursor,
    ).model_dump(mode="json")


@blueprint.post("/deliveries/redrive")
@document_request(RedriveIn)
@document_response(RedrivenOut, 202)
@document_response(ErrorOut, 422)
async def redrive_matching() -> tuple[dict[str, Any], int]:
    """Queue again the failed deliveries matching the filter (at most ``limit``), each
    under its own id with its attempts reset, and send them from this node. A delivery
    that is no longer failed is not taken again, so a repeated call queues nothing twice."""
    body = await read_payload(RedriveIn)
    redriven = await dead_letters().redrive(body.where(body.status), body.limit)
    out = RedrivenOut(redriven=len(redriven.ids), ids=redriven.ids, more=redriven.more)
    return out.model_dump(), 202
