"""The client's inbox API: a user's notifications, newest first, and marking them read.

The two POST routes also take the forms of the ``GET /sub`` page: a form post is
answered with a redirect back to the page instead of JSON.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_querystring, document_response

from client import pages
from client.api import ErrorOut, MarkedOut, NotificationOut, NotificationsOut, NotificationsQuery
from client.web import is_form, read_query, services
from notefly.errors import NoteflyError

blueprint = Blueprint("inbox", __name__)


@blueprint.get("/users/<user_id>/notifications")
@document_querystring(NotificationsQuery)
@document_response(NotificationsOut)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def list_notifications(user_id: str) -> dict[str, Any]:
    """Newest first; a full page names the ``next_before`` to ask for the next one."""
    query = read_query(NotificationsQuery)
    found = await services().inbox.list(
        user_id, unread_only=query.unread, limit=query.limit, before=query.before
    )
    next_before = found[-1].id if len(found) == query.limit else None
    return NotificationsOut(
        notifications=[NotificationOut.of(n) for n in found], next_before=next_before
    ).model_dump(mode="json")


@blueprint.post("/users/<user_id>/notifications/<notification_id>/read")
@document_response(NotificationOut)
@document_response(ErrorOut, 404)
async def mark_read(user_id: str, notification_id: str) -> Any:
    try:
        notification = await services().inbox.mark_read(user_id, notification_id)
    except NoteflyError as exc:
        if is_form():
            return await pages.user_page_with_error(user_id, exc)
        raise
    if is_form():
        return pages.back_to_user(user_id)
    return NotificationOut.of(notification).model_dump(mode="json")


@blueprint.post("/users/<user_id>/notifications/read-all")
@document_response(MarkedOut)
@document_response(ErrorOut, 404)
async def mark_all_read(user_id: str) -> Any:
    try:
        marked = await services().inbox.mark_all_read(user_id)
    except NoteflyError as exc:
        if is_form():
            return await pages.user_page_with_error(user_id, exc)
        raise
    if is_form():
        return pages.back_to_user(user_id)
    return MarkedOut(marked=marked).model_dump()
