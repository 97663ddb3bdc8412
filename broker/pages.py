"""The broker's HTML page: GET /pub, a form a person can publish with."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, render_template, request

from broker.api import PublishRequest
from broker.auth import FORM_KEY_FIELD, check_category
from broker.web import services
from notefly.domain import Priority
from notefly.errors import NoteflyError
from notefly.payloads import validate

blueprint = Blueprint("pages", __name__, template_folder="templates")


async def _page(status: int = 200, **context: Any) -> tuple[str, int]:
    categories = await services().catalogue.list()
    html = await render_template(
        "pub.html", categories=categories, priorities=[p.value for p in Priority], **context
    )
    return html, status


@blueprint.get("/pub")
async def publish_page() -> tuple[str, int]:
    return await _page()


async def publish_form() -> tuple[str, int]:
    """POST /pub from the HTML form: the same use case, answered with the page."""
    form = await request.form
    fields = {k: v for k, v in form.items() if k in PublishRequest.model_fields and v.strip()}
    try:
        body = validate(PublishRequest, fields)
        check_category(body.category)
        message, _created = await services().publisher.publish(body.command())
    except NoteflyError as exc:
        return await _page(exc.status, error=exc, form=fields, api_key=form.get(FORM_KEY_FIELD))
    accepted = {"category": message.category_id}
    return await _page(202, accepted=message, form=accepted, api_key=form.get(FORM_KEY_FIELD))
