"""``POST /pub`` answered without Quart's request machinery.

Publishing is the broker's hot path. Under load, Quart's share of a publish (request
and app contexts, URL matching, the hooks, a task per response) cost the event loop
more CPU than Notefly's own work (README, Performance). ``FastPublish`` wraps the app's
ASGI callable and answers the common publish itself: a JSON body within the size
limit, with a bearer key or no credential at all, that passes the route's checks in
the route's order (credential, access, body, category).

It answers only what it can answer exactly as the route would. Everything else goes
to the route, with whatever body was already read: other requests, an HTML form,
another media type, a cookie, a body over the limit, and any refusal before the
publisher is called (an unknown key, invalid input, a category the key may not use).
The route then answers and counts the request, so each refusal has one source. Once
the publisher is called its answer is final, an error included (``error_response``):
the message may be committed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from quart import Quart, Response

from broker.api import PublishRequest, PublishResponse
from broker.auth import EXTENSION as AUTH_EXTENSION
from broker.auth import ROUTES
from broker.ops import SERVICE
from broker.web import error_response
from notefly.auth import Authenticator, authorize, require_category
from notefly.domain import Message
from notefly.payloads import decode_json, validate

if TYPE_CHECKING:
    from hypercorn.typing import (
        ASGIReceiveCallable,
        ASGIReceiveEvent,
        ASGISendCallable,
        HTTPScope,
        Scope,
    )

    from broker.app import BrokerServices
    from broker.ops import OpsServices

    ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]

PATH = "/pub"
ACCESS = ROUTES.access("POST", PATH)
JSON_TYPES = (b"application/json", b"")
JSON_HEADERS = (("Content-Type", "application/json"),)


def accepted(message: Message, created: bool) -> tuple[str, dict[str, str]]:
    """The 202's JSON body and its headers besides the content's type and length: the
    message's id, where to follow it, and whether it was an idempotent replay."""
    headers = {"Location": f"/messages/{message.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return PublishResponse.of(message).model_dump_json(), headers


def install(app: Quart) -> None:
    """Answer the common ``POST /pub`` before Quart sees it (once the app serves)."""
    app.asgi_app = FastPublish(app, app.asgi_app)  # type: ignore[method-assign]


class FastPublish:
    def __init__(self, app: Quart, inner: ASGIApp) -> None:
        self._app = app
        self.route = inner  # the app itself: it answers what this does not

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == PATH
            and not scope.get("root_path")
        ):
            await self._publish(scope, receive, send)
        else:
            await self.route(scope, receive, send)

    async def _publish(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        started = time.perf_counter()
        extensions = self._app.extensions
        services: BrokerServices | None = extensions.get("notefly")
        authenticator: Authenticator | None = extensions.get(AUTH_EXTENSION)
        ops: OpsServices | None = extensions.get("notefly_ops")
        limit: int = self._app.config["MAX_CONTENT_LENGTH"]
        ours, credential = _credential(scope, limit)
        if not ours or services is None or authenticator is None or ops is None:
            await self.route(scope, receive, send)
            return
        raw = bytearray()
        more = True
        while more:
            event = await receive()
            if event["type"] != "http.request":
                return  # the client went away before its request was complete
            raw += event.get("body", b"")
            more = event.get("more_body", False)
            if len(raw) > limit:
                await self.route(scope, _replay(bytes(raw), more, receive), send)
                return
        try:
            principal = await authenticator.principal(credential)
            authorize(principal, ACCESS)
            body = validate(PublishRequest, decode_json(bytes(raw)))
            require_category(principal, body.category)
        except Exception:  # nothing is written yet: the route answers it from scratch
            await self.route(scope, _replay(bytes(raw), False, receive), send)
            return
        try:
            message, created = await services.publisher.publish(body.command())
            # Not a Quart Response: making one cost a twelfth of the event loop's time.
            payload, headers = accepted(message, created)
            content = payload.encode()
            status, fields = 202, [*JSON_HEADERS, ("Content-Length", str(len(content)))]
            fields += headers.items()
        except Exception as exc:  # the message may be committed: this answer is final
            status, fields, content = await self._error(exc)
        await _send(send, status, fields, content)
        ops.metrics.http_request(SERVICE, "POST", PATH, status, time.perf_counter() - started)

    async def _error(self, exc: Exception) -> tuple[int, list[tuple[str, str]], bytes]:
        """What the route's error handlers answer to ``exc``."""
        async with self._app.app_context():
            made = await self._app.make_response(error_response(exc, PATH))
        response = cast(Response, made)  # a JSON body: a Quart response
        return (
            response.status_code,
            list(response.headers.items()),
            await response.get_data(as_text=False),
        )


def _credential(scope: HTTPScope, limit: int) -> tuple[bool, str | None]:
    """Whether this request is ours to answer, and its bearer key (None: no credential).

    Not ours: a form or another media type, a length over the limit, or a request
    without a bearer key that carries cookies (the route reads the admin's cookie)."""
    authorization = content_type = length = None
    cookies = False
    for name, value in scope["headers"]:  # the first of each, as the route reads them
        if name == b"authorization" and authorization is None:
            authorization = value
        elif name == b"content-type" and content_type is None:
            content_type = value
        elif name == b"content-length" and length is None:
            length = value
        elif name == b"cookie":
            cookies = True
    if (content_type or b"").partition(b";")[0].strip().lower() not in JSON_TYPES:
        return False, None
    if length is not None and (not length.strip().isdigit() or int(length) > limit):
        return False, None
    scheme, _, key = (authorization or b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return True, key.strip()
    return not cookies, None


def _replay(body: bytes, more: bool, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """``receive`` as if nothing had been read: first what was read, then the rest."""
    pending = True

    async def replayed() -> ASGIReceiveEvent:
        nonlocal pending
        if pending:
            pending = False
            event: dict[str, Any] = {"type": "http.request", "body": body, "more_body": more}
            return cast("ASGIReceiveEvent", event)
        return await receive()

    return replayed


async def _send(
    send: ASGISendCallable, status: int, headers: Iterable[tuple[str, str]], body: bytes
) -> None:
    """Send a response, its headers encoded as Quart encodes them."""
    encoded = [(k.lower().encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    await send({"type": "http.response.body", "body": body, "more_body": False})
