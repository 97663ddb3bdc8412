"""The client's HTML page: GET /sub, where a person registers, picks their channels
per category and reads their notifications. Server-rendered forms, no JavaScript.

The forms post to the JSON API's routes (``POST /users``, ``POST /sub``, the inbox's
read routes), which hand form posts to the handlers here: success redirects back to
the page (post/redirect/get), failure renders the page with the error.

Who is looking: registering through the page, or signing in with one's token, sets
the ``notefly_user`` cookie (``client.auth``), and the page then shows that user. With
access control on, strangers see only the sign-in and register forms; in open mode
the page still lists everyone, as on a developer's machine.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, redirect, render_template, request, url_for
from quart.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from client.api import UserIn
from client.auth import (
    USER_COOKIE,
    authenticator,
    clear_user_cookie,
    issue_user_token,
    page_user,
    principal,
    set_user_cookie,
)
from client.web import services, settings
from notefly.addresses import EndpointKind, channel_address, needs_address
from notefly.auth import Forbidden, Unauthenticated
from notefly.domain import ADDRESS_NAMES, User
from notefly.errors import InvalidInput, NoteflyError, NotFound
from notefly.payloads import validate
from notefly.schedule import WEEKDAYS, Frequency, Schedule, parse_clock, parse_weekday

blueprint = Blueprint("pages", __name__, template_folder="templates")

RECENT_NOTIFICATIONS = 20
USERS_TO_PICK = 100
FIELD_PREFIX = "sub:"


@dataclass(frozen=True, slots=True)
class ChannelColumn:
    """One column of the subscription matrix."""

    name: str
    address_name: str | None  # what the channel needs, e.g. "phone number"; None: nothing
    available: bool  # False: the user has no address for it, so it cannot be ticked


@functools.cache
def timezone_names() -> list[str]:
    # Read once, on the first page that needs it; the tzdata listing walks the disk.
    return sorted(zoneinfo.available_timezones() - {"localtime", "posixrules", "Factory"})


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        # A zone stored by another writer (the CLI) may not exist on this machine.
        return zoneinfo.ZoneInfo("UTC")


def _columns(user: User, registered: Mapping[EndpointKind, int]) -> list[ChannelColumn]:
    # Registrations (web push, webhooks, Apprise URLs) count as addresses too.
    return [
        ChannelColumn(
            name=channel,
            address_name=ADDRESS_NAMES.get(channel),
            available=not needs_address(channel)
            or bool(channel_address(user, channel, registered)),
        )
        for channel in settings().channels
    ]


def back_to_user(user_id: str, **args: Any) -> Response:
    return redirect(url_for("pages.sub_page", user=user_id, **args), 303)


async def _index_page(status: int = 200, **context: Any) -> tuple[str, int]:
    open_mode = await authenticator().open_mode()
    # With access control on, the list of users is for nobody's eyes on this page.
    users = await services().directory.users(limit=USERS_TO_PICK) if open_mode else []
    html = await render_template(
        "index.html",
        users=users,
        open_mode=open_mode,
        open_registration=settings().open_registration,
        timezones=timezone_names(),
        **context,
    )
    return html, status


async def _user_page(user_id: str, status: int = 200, **context: Any) -> tuple[str, int]:
    svc = services()
    user = await svc.directory.get(user_id)
    subscriptions = await svc.directory.subscriptions(user_id)
    html = await render_template(
        "user.html",
        user=user,
        zone=_zone(user.timezone),
        categories=await svc.catalogue.list(),
        channels=_columns(user, await svc.directory.registered(user_id)),
        subscribed={s.category_id: set(s.channels) for s in subscriptions},
        schedules={s.category_id: Schedule.decode(s.schedule) for s in subscriptions},
        frequencies=[f.value for f in Frequency],
        weekdays=WEEKDAYS,
        notifications=await svc.inbox.list(user_id, limit=RECENT_NOTIFICATIONS),
        signed_in=page_user() == user_id,
        **context,
    )
    return html, status


async def user_page_with_error(user_id: str, error: NoteflyError) -> tuple[str, int]:
    """The user's page showing ``error``; the register page when the user is unknown."""
    try:
        return await _user_page(user_id, error.status, error=error)
    except NotFound as missing:
        return await _index_page(missing.status, error=missing)


@blueprint.get("/sub")
async def sub_page() -> tuple[str, int]:
    user_id = request.args.get("user", "").strip() or page_user()
    if not user_id:
        return await _index_page()
    if not principal().can_access_user(user_id):
        refused = Forbidden("sign in as this user to see their page")
        return await _index_page(refused.status, error=refused)
    try:
        return await _user_page(
            user_id,
            saved=request.args.get("saved") == "1",
            new_token=request.cookies.get(USER_COOKIE)
            if request.args.get("welcome") and page_user() == user_id
            else None,
        )
    except NotFound as exc:
        return await _index_page(exc.status, error=exc)


@blueprint.post("/sub/sign-in")
async def sign_in() -> ResponseReturnValue:
    """Sign in with the token shown at registration: it goes into the cookie."""
    token = (await request.form).get("token", "").strip()
    try:
        user_id = (await authenticator().principal(token or None)).user_id
    except Unauthenticated:
        user_id = None
    if user_id is None:
        refused = Unauthenticated("that token is not valid (unknown or replaced)")
        return await _index_page(refused.status, error=refused)
    return set_user_cookie(back_to_user(user_id), token)


@blueprint.post("/sub/sign-out")
async def sign_out() -> ResponseReturnValue:
    return clear_user_cookie(redirect(url_for("pages.sub_page"), 303))


async def register_form() -> ResponseReturnValue:
    """POST /users from the register form: the same use case, answered with a page."""
    form = await request.form
    fields = {k: v for k, v in form.items() if k in UserIn.model_fields and v.strip()}
    try:
        body = validate(UserIn, fields)
        user = await services().directory.register(body.user())
    except NoteflyError as exc:
        return await _index_page(exc.status, error=exc, form=fields)
    token = await issue_user_token(user.id)
    return set_user_cookie(back_to_user(user.id, welcome=1), token)


def _ticked(form: Any) -> dict[str, list[str]]:
    """The matrix's ticked boxes, ``sub:<category>:<channel>``, as channels per category."""
    ticked: dict[str, list[str]] = {}
    for key in form:
        if not key.startswith(FIELD_PREFIX):
            continue
        category, _, channel = key.removeprefix(FIELD_PREFIX).rpartition(":")
        if not category or not channel:
            raise InvalidInput(f"malformed field {key!r}", code="validation_failed")
        ticked.setdefault(category, []).append(channel)
    return ticked


def _schedule(form: Any, category: str) -> Schedule:
    """The 'how often' controls of one category's row: freq:, at: and day: fields."""
    try:
        frequency = Frequency(form.get(f"freq:{category}", "immediate"))
        at = form.get(f"at:{category}", "").strip()
        day = form.get(f"day:{category}", "").strip()
        return Schedule(
            frequency,
            parse_clock(at) if at and frequency in (Frequency.DAILY, Frequency.WEEKLY) else None,
            parse_weekday(day) if day and frequency is Frequency.WEEKLY else None,
        )
    except ValueError as exc:
        raise InvalidInput(f"{category}: {exc}", code="validation_failed") from exc


async def subscriptions_form() -> ResponseReturnValue:
    """POST /sub from the matrix: ticked categories are upserted, the others dropped."""
    form = await request.form
    user_id = form.get("user", "").strip()
    if not user_id:
        error = InvalidInput("the form names no user", code="validation_failed")
        return await _index_page(error.status, error=error)
    try:
        # All or nothing: the matrix is the user's whole set of subscriptions.
        ticked = _ticked(form)
        await services().directory.set_subscriptions(
            user_id, ticked, {c: _schedule(form, c) for c in ticked}
        )
    except NoteflyError as exc:
        return await user_page_with_error(user_id, exc)
    return back_to_user(user_id, saved=1)
