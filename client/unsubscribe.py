"""One-click unsubscribe (RFC 8058) from an email's ``List-Unsubscribe`` link.

``POST /unsubscribe/{token}`` (what a mail client sends, body
``List-Unsubscribe=One-Click``) removes the one subscription the signed token names,
with no login. ``GET`` shows a page with a button that posts the same: a link opened
by a person, or fetched by a mail scanner, removes nothing by itself. Unsubscribing
twice, or after the user was erased, is not an error.
"""

from __future__ import annotations

import contextlib

from quart import Blueprint, render_template

from client.channel_services import channel_services
from client.web import services
from notefly.domain import Category, User
from notefly.errors import NotFound

blueprint = Blueprint("unsubscribe", __name__, template_folder="templates")


async def _named(token: str) -> tuple[str, str, User | None, Category | None]:
    user_id, category_id = channel_services().links.read(token)
    svc = services()
    try:
        user: User | None = await svc.directory.get(user_id)
    except NotFound:
        user = None
    categories = {c.id: c for c in await svc.catalogue.list()}
    return user_id, category_id, user, categories.get(category_id)


async def _page(token: str, *, done: bool) -> tuple[str, int]:
    try:
        user_id, category_id, user, category = await _named(token)
    except NotFound as exc:
        return await render_template("unsubscribe.html", error=exc), exc.status
    subscribed = False
    if user is not None:
        subs = await services().directory.subscriptions(user_id)
        subscribed = any(s.category_id == category_id for s in subs)
    html = await render_template(
        "unsubscribe.html",
        token=token,
        user=user,
        category=category,
        category_id=category_id,
        subscribed=subscribed,
        done=done,
    )
    return html, 200


@blueprint.get("/unsubscribe/<token>")
async def confirm(token: str) -> tuple[str, int]:
    return await _page(token, done=False)


@blueprint.post("/unsubscribe/<token>")
async def one_click(token: str) -> tuple[str, int]:
    try:
        user_id, category_id = channel_services().links.read(token)
    except NotFound as exc:
        return await render_template("unsubscribe.html", error=exc), exc.status
    # Already unsubscribed, or the user is gone: the wish is fulfilled all the same.
    with contextlib.suppress(NotFound):
        await services().directory.unsubscribe(user_id, category_id)
    return await _page(token, done=True)
