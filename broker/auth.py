"""Access control of the broker: one guard before every request, and the admin's
sign-in for the dashboard.

Credentials: ``Authorization: Bearer <key>``; the ``api_key`` field of the HTML
publish form; or, for the dashboard (whose event stream cannot send headers), the
``notefly_admin`` cookie set by ``POST /dashboard/sign-in``. The cookie is HttpOnly and
SameSite=Strict, and a state-changing request carried by it must also come from this
origin (``Origin``), which the dashboard's own ``fetch`` always sends.

Every route has an entry in ``ROUTES``; a route without one is for admins only.
"""

from __future__ import annotations

from typing import Any

import structlog
from quart import Blueprint, Quart, current_app, g, redirect, render_template, request
from quart.typing import ResponseReturnValue
from quart_schema import hide

from broker.web import FORM_TYPES, error_body, services
from notefly.auth import (
    ANONYMOUS,
    OPEN,
    SERVICE_OPEN,
    SERVICE_OPEN_PREFIXES,
    Access,
    Authenticator,
    Forbidden,
    KeyKind,
    Principal,
    Role,
    RouteTable,
    Unauthenticated,
    authenticators,
    authorize,
    require_category,
    same_origin,
)
from notefly.containers import Container, resolve
from notefly.errors import NotFound

EXTENSION = "notefly_auth"
ADMIN_COOKIE = "notefly_admin"
FORM_KEY_FIELD = "api_key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

ROUTES = RouteTable(
    exact={
        **SERVICE_OPEN,
        ("POST", "/categories"): Access.ADMIN,
        ("GET", "/pub"): Access.OPEN,
        ("POST", "/pub"): Access.PUBLISH,
        ("GET", "/messages/<message_id>"): Access.MESSAGE,
        ("GET", "/messages/<message_id>/deliveries"): Access.MESSAGE,
        ("GET", "/status"): Access.ADMIN,
        ("GET", "/dashboard/sign-in"): Access.OPEN,
        ("POST", "/dashboard/sign-in"): Access.OPEN,
        ("POST", "/dashboard/sign-out"): Access.OPEN,
    },
    prefixes=(
        *SERVICE_OPEN_PREFIXES,
        ("/dashboard", Access.ADMIN),
        ("/deliveries", Access.ADMIN),
    ),
)

blueprint = Blueprint("auth", __name__, template_folder="templates")
log = structlog.get_logger("notefly.broker")


def authenticator() -> Authenticator:
    found: Authenticator = current_app.extensions[EXTENSION]
    return found


def principal() -> Principal:
    found: Principal = g.get("principal", OPEN)
    return found


def check_category(category: str) -> None:
    """Raise ``Forbidden`` unless the caller may publish to and read ``category``."""
    require_category(principal(), category)


def install(app: Quart, container: Container) -> None:
    make_authenticator = authenticators(container.settings())  # a malformed key stops start-up here

    @app.before_serving
    async def start_authenticator() -> None:
        app.extensions[EXTENSION] = make_authenticator(await resolve(container.store))

    @app.before_request
    async def guard() -> ResponseReturnValue | None:
        rule = request.url_rule
        if rule is None:
            return None  # 404 or 405 follows
        access = ROUTES.access(request.method, rule.rule)
        try:
            credential, via_cookie = await _credential()
            found = await authenticator().principal_of_cookie(credential, via_cookie)
            g.principal = found
            if request.method not in SAFE_METHODS and not _from_this_origin(via_cookie):
                raise Forbidden("cross-site requests are refused", code="cross_site")
            authorize(found, access)
            if access is Access.MESSAGE and found.role is Role.PUBLISHER:
                await _check_message_category(str((request.view_args or {})["message_id"]))
        except Unauthenticated as exc:
            if request.endpoint == "dashboard.dashboard":
                return redirect("/dashboard/sign-in", 303)
            return error_body(exc.code, exc.message), 401, {"WWW-Authenticate": "Bearer"}
        except Forbidden as exc:
            return error_body(exc.code, exc.message), 403
        return None

    app.register_blueprint(blueprint)


async def _credential() -> tuple[str | None, bool]:
    """The credential and whether it came in the admin cookie."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    if request.method == "POST" and request.mimetype in FORM_TYPES and request.path == "/pub":
        typed = (await request.form).get(FORM_KEY_FIELD, "").strip()
        if typed:
            return typed, False
    cookie = request.cookies.get(ADMIN_COOKIE, "").strip()
    return (cookie, True) if cookie else (None, False)


def _from_this_origin(via_cookie: bool) -> bool:
    """Forms must come from this origin when the browser says where they come from;
    requests carried by the cookie must say so."""
    if not via_cookie and request.mimetype not in FORM_TYPES:
        return True
    return same_origin(
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        host=request.host,
        scheme=request.scheme,
        required=via_cookie,
    )


async def _check_message_category(message_id: str) -> None:
    try:
        message = await services().store.get_message(message_id)
    except NotFound:
        return  # the route answers 404
    check_category(message.category_id)


# -- the dashboard's sign-in ----------------------------------------------------------


async def _sign_in_page(status: int = 200, **context: Any) -> tuple[str, int]:
    return await render_template("sign_in.html", **context), status


@blueprint.get("/dashboard/sign-in")
@hide
async def sign_in_page() -> tuple[str, int]:
    return await _sign_in_page()


@blueprint.post("/dashboard/sign-in")
@hide
async def sign_in() -> ResponseReturnValue:
    """Check an admin key and keep it in an HttpOnly cookie for the dashboard."""
    typed = (await request.form).get(FORM_KEY_FIELD, "").strip()
    try:
        found = await authenticator().principal(typed or None)
    except Unauthenticated:
        found = ANONYMOUS
    if found.role is not Role.ADMIN:
        refused = f"that is not a valid {KeyKind.ADMIN.value} key"
        return await _sign_in_page(401, error=refused)
    response = redirect("/dashboard", 303)
    response.set_cookie(
        ADMIN_COOKIE,
        typed,
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
        path="/",
    )
    return response


@blueprint.post("/dashboard/sign-out")
@hide
async def sign_out() -> ResponseReturnValue:
    response = redirect("/dashboard/sign-in", 303)
    response.delete_cookie(ADMIN_COOKIE, path="/")
    return response
