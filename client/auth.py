"""Access control of the client: one guard before every request, user tokens, CSRF.

Credentials: ``Authorization: Bearer <token or key>``, or the ``notefly_user`` cookie
the ``/sub`` page sets when someone registers or signs in with their token. The cookie
is HttpOnly and SameSite=Strict; a state-changing request carried by it must also
bear the anti-forgery token of the page's forms (``csrf_token``) and, when the
browser says where it comes from, come from this origin.

Every route has an entry in ``ROUTES``; a route without one is for admins only.
"""

from __future__ import annotations

from typing import Any, TypeVar

from quart import Blueprint, Quart, Response, current_app, g, request
from quart.typing import ResponseReturnValue
from quart_schema import document_response
from werkzeug.sansio.response import Response as AnyResponse

from client.api import ErrorOut, TokenOut
from client.web import FORM_TYPES, error_body, services, settings
from notefly.auth import (
    OPEN,
    SERVICE_OPEN,
    SERVICE_OPEN_PREFIXES,
    Access,
    Authenticator,
    Forbidden,
    Principal,
    RouteTable,
    Unauthenticated,
    authenticators,
    authorize,
    csrf_token,
    csrf_valid,
    hash_secret,
    new_user_token,
    same_origin,
)
from notefly.containers import Container, resolve
from notefly.errors import NoteflyError
from notefly.payloads import decode_json
from notefly.secrets import secret_key

R = TypeVar("R", bound=AnyResponse)

EXTENSION = "notefly_auth"
SIGNING_KEY = "notefly_csrf_key"
USER_COOKIE = "notefly_user"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Requests that bring their own credential in the body, or need none: a cookie that
# comes along adds nothing a forger could abuse, so they need no anti-forgery token.
OWN_CREDENTIAL = frozenset({"/users", "/sub/sign-in", "/unsubscribe/<token>"})

ROUTES = RouteTable(
    exact={
        **SERVICE_OPEN,
        ("GET", "/channels"): Access.OPEN,
        ("GET", "/push/vapid-public-key"): Access.OPEN,
        ("GET", "/sub"): Access.OPEN,  # shows the sign-in form to strangers
        ("POST", "/sub"): Access.USER_IN_BODY,
        ("DELETE", "/sub"): Access.USER_IN_BODY,
        ("POST", "/sub/sign-in"): Access.OPEN,  # the token in the form is the credential
        ("POST", "/sub/sign-out"): Access.OPEN,
        ("POST", "/users"): Access.REGISTER,
        ("GET", "/users"): Access.ADMIN,
    },
    prefixes=(
        *SERVICE_OPEN_PREFIXES,
        ("/unsubscribe", Access.OPEN),  # the signed link is the capability
        ("/users/<user_id>", Access.USER),
    ),
)

blueprint = Blueprint("auth", __name__)


def authenticator() -> Authenticator:
    found: Authenticator = current_app.extensions[EXTENSION]
    return found


def principal() -> Principal:
    found: Principal = g.get("principal", OPEN)
    return found


def page_user() -> str | None:
    """The user the cookie (or header) identifies, if any."""
    return principal().user_id


def form_csrf_token() -> str | None:
    """The anti-forgery token the page's forms carry; None without a cookie."""
    cookie = request.cookies.get(USER_COOKIE, "").strip()
    if not cookie:
        return None
    return csrf_token(current_app.extensions[SIGNING_KEY], cookie)


async def issue_user_token(user_id: str) -> str:
    """A new token for ``user_id``; the one they had stops working."""
    token = new_user_token()
    await services().store.set_user_token(user_id, hash_secret(token))
    authenticator().forget_user(user_id)
    return token


def set_user_cookie(response: R, token: str) -> R:
    response.set_cookie(
        USER_COOKIE,
        token,
        httponly=True,
        # Strict: nothing of this site is reached by a cross-site navigation that needs
        # the cookie (the unsubscribe links carry their own signed capability).
        samesite="Strict",
        secure=request.scheme == "https",
        path="/",
    )
    return response


def clear_user_cookie(response: R) -> R:
    response.delete_cookie(USER_COOKIE, path="/")
    return response


def install(app: Quart, container: Container) -> None:
    settings_ = container.settings()
    make_authenticator = authenticators(settings_)  # a malformed key stops start-up here

    @app.before_serving
    async def start_authenticator() -> None:
        app.extensions[EXTENSION] = make_authenticator(await resolve(container.store))
        app.extensions[SIGNING_KEY] = secret_key(settings_)

    @app.context_processor
    async def csrf_in_templates() -> dict[str, Any]:
        return {"csrf_token": form_csrf_token(), "csrf_field": CSRF_FIELD}

    @app.before_request
    async def guard() -> ResponseReturnValue | None:
        rule = request.url_rule
        if rule is None:
            return None  # 404 or 405 follows
        access = ROUTES.access(request.method, rule.rule)
        try:
            credential, via_cookie = _credential()
            found = await authenticator().principal_of_cookie(credential, via_cookie)
            g.principal = found
            if request.method not in SAFE_METHODS:
                await _refuse_forgery(via_cookie, credential or "", rule.rule)
            user_id = await _subject(access)
            authorize(
                found, access, user_id=user_id, open_registration=settings().open_registration
            )
        except Unauthenticated as exc:
            return error_body(exc.code, exc.message), 401, {"WWW-Authenticate": "Bearer"}
        except Forbidden as exc:
            return error_body(exc.code, exc.message), 403
        return None

    app.register_blueprint(blueprint)


def _credential() -> tuple[str | None, bool]:
    """The credential and whether it came in the cookie."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(USER_COOKIE, "").strip()
    return (cookie, True) if cookie else (None, False)


async def _refuse_forgery(via_cookie: bool, credential: str, rule: str) -> None:
    is_form = request.mimetype in FORM_TYPES
    # A mail provider posts one-click unsubscribes from its own servers.
    browser_post = (is_form or via_cookie) and rule != "/unsubscribe/<token>"
    if browser_post and not same_origin(
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        host=request.host,
        scheme=request.scheme,
    ):
        raise Forbidden("cross-site requests are refused", code="cross_site")
    if not via_cookie or rule in OWN_CREDENTIAL:
        return  # a header or no credential at all: nothing a browser adds by itself
    offered = request.headers.get(CSRF_HEADER)
    if offered is None and is_form:
        offered = (await request.form).get(CSRF_FIELD)
    if not csrf_valid(current_app.extensions[SIGNING_KEY], credential, offered):
        raise Forbidden(
            "the form's anti-forgery token is missing or wrong: reload the page",
            code="csrf_failed",
        )


async def _subject(access: Access) -> str | None:
    """The user a request acts on: from the path, or from the body of POST/DELETE /sub."""
    if access is Access.USER:
        found = (request.view_args or {}).get("user_id")
        return str(found) if found is not None else None
    if access is not Access.USER_IN_BODY:
        return None
    if request.mimetype in FORM_TYPES:
        named = (await request.form).get("user", "").strip()
        return named or None
    raw = await request.get_data(as_text=False)
    try:
        body = decode_json(raw if isinstance(raw, bytes) else raw.encode())
    except NoteflyError:  # the route answers the malformed body with its own 400
        return None
    named = body.get("user") if isinstance(body, dict) else None
    return named if isinstance(named, str) else None


@blueprint.post("/users/<user_id>/token")
@document_response(TokenOut)
@document_response(ErrorOut, 404)
async def rotate_token(user_id: str) -> Response:
    """A new token for the user; the old one stops working (within seconds everywhere)."""
    await services().directory.get(user_id)
    token = await issue_user_token(user_id)
    response = Response(
        TokenOut(user_id=user_id, token=token).model_dump_json(), mimetype="application/json"
    )
    if _credential()[1] and page_user() == user_id:  # the page's own cookie: renew it
        set_user_cookie(response, token)
    return response
