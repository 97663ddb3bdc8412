"""Access control of both services, route by route, with keys configured.

The matrix walks every route of both apps (their URL maps), so a route added without
an entry in the policy table fails here; and it asks each as nobody, as another user,
as a publisher and as an admin.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, Response
from structlog.testing import capture_logs

from broker import auth as broker_auth
from client import auth as client_auth
from client.app import create_app as create_client_app
from notefly.auth import Access, RouteTable, issue_api_key
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.ports import Store
from tests.integration.conftest import RecordingChannel
from tests.integration.running import broker_app

ADMIN_KEY = "matrix-admin-key-0123456789-abcdefghij"
ENV = {"NOTEFLY_ADMIN_KEY": ADMIN_KEY, "NOTEFLY_AUTH_CACHE_SECONDS": "0.000001"}
STREAMS = {"/users/<user_id>/stream", "/dashboard/events"}
# Building the OpenAPI document takes many seconds on a busy machine; these routes are
# checked against the table instead of called (the guard answers before the handler).
SPECS = {"/openapi.json", "/docs/openapi.json"}
DENIED = (401, 403)


@dataclass
class Person:
    id: str
    token: str


@dataclass
class World:
    broker: Any
    client: Any
    broker_app: Quart
    client_app: Quart
    store: Store
    users: dict[str, Person]
    publisher_key: str  # may publish to finance only
    publisher_key_id: str
    finance_message: str
    sports_message: str


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def w(tmp_path: Path) -> AsyncIterator[World]:
    settings = Settings(data_dir=tmp_path, env=ENV)
    channels = {name: RecordingChannel(name) for name in settings.channels}
    async with broker_app(settings, channels) as (broker, _):
        container = Container(settings=settings)
        await start(container.store)
        try:
            app = create_client_app(container)
            async with app.test_app() as test_app:
                client = test_app.test_client()
                store: Store = await resolve(container.store)
                users = {}
                for name in ("a", "b", "c"):
                    response = await client.post(
                        "/users", json={"name": name, "email": f"{name}@example.org"}
                    )
                    assert response.status_code == 201
                    body = await response.get_json()
                    users[name] = Person(body["id"], body["token"])
                key, secret_value = issue_api_key("feed", admin=False, categories=["finance"])
                await store.add_api_key(key)
                messages = {}
                for category in ("finance", "sports"):
                    published = await broker.post(
                        "/pub", json={"category": category, "body": "hi"}, headers=bearer(ADMIN_KEY)
                    )
                    assert published.status_code == 202
                    messages[category] = (await published.get_json())["id"]
                broker_flask = broker.app  # the test client's app
                yield World(
                    broker,
                    client,
                    broker_flask,
                    app,
                    store,
                    users,
                    secret_value,
                    key.id,
                    messages["finance"],
                    messages["sports"],
                )
        finally:
            await stop(container.store)


# -- walking the routes ----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    service: str
    method: str
    rule: str
    access: Access


def routes(app: Quart, table: RouteTable, service: str) -> Iterator[Route]:
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            access = table.lookup(method, rule.rule)
            assert access is not None, f"{service}: {method} {rule.rule} has no access policy"
            yield Route(service, method, rule.rule, access)


def all_routes(w: World) -> list[Route]:
    found = [
        *routes(w.broker_app, broker_auth.ROUTES, "broker"),
        *routes(w.client_app, client_auth.ROUTES, "client"),
    ]
    for spec in (r for r in found if r.rule in SPECS):
        assert spec.access is Access.OPEN
    found = [r for r in found if r.rule not in SPECS]
    # Erasing a user last: the other requests still find the users they name.
    return sorted(found, key=lambda r: r.method == "DELETE" and r.rule == "/users/<user_id>")


def url(w: World, route: Route, subject: str) -> str:
    values = {
        "user_id": w.users[subject].id,
        "message_id": w.finance_message,
        "name": "dashboard.js",
        "filename": "missing.css",
    }
    return re.sub(
        r"<(?:[^:>]+:)?([^>]+)>", lambda m: values.get(m.group(1), "x_missing"), route.rule
    )


def body(w: World, route: Route, subject: str) -> dict[str, Any] | None:
    if route.method in ("GET", "HEAD"):
        return None
    if route.access is Access.USER_IN_BODY:
        return {"user": w.users[subject].id, "category": "finance", "channels": ["email"]}
    if route.rule == "/pub":
        return {"category": "finance", "body": "from the matrix"}
    return {}


async def call(w: World, route: Route, subject: str, headers: dict[str, str]) -> tuple[int, Any]:
    http = w.broker if route.service == "broker" else w.client
    path = url(w, route, subject)
    if route.rule in STREAMS:  # read the status, not the endless body
        async with http.request(path, method=route.method, headers=headers) as connection:
            await connection.send_complete()
            first = await connection.receive()
            status = connection.status_code
            await connection.disconnect()
        assert status is not None
        return status, Response(first, status, connection.headers)
    response = await http.open(
        path, method=route.method, json=body(w, route, subject), headers=headers
    )
    return response.status_code, response


async def guarded(status: int, response: Response | None) -> bool:
    """Whether the access guard turned the request away (a sign-in form may answer
    401 itself, as a page, for a wrong key)."""
    if status not in DENIED or response is None or response.mimetype != "application/json":
        return False
    return bool((await response.get_json())["error"]["code"] in ("unauthenticated", "forbidden"))


async def test_every_route_has_a_policy_and_nobody_gets_only_the_open_ones(w: World) -> None:
    for route in all_routes(w):
        status, response = await call(w, route, "b", {})
        where = f"{route.service} {route.method} {route.rule}"
        if route.access in (Access.OPEN, Access.REGISTER):
            assert not await guarded(status, response), where
        elif route.rule == "/dashboard":  # a person's browser is sent to the sign-in
            assert (status, response.headers["Location"]) == (303, "/dashboard/sign-in")
        else:
            assert status == 401, where
            assert response.headers["WWW-Authenticate"] == "Bearer"
            error = (await response.get_json())["error"]
            assert error["code"] == "unauthenticated" and error["message"], where


async def test_a_user_is_refused_every_other_users_route_and_every_admin_route(
    w: World,
) -> None:
    intruder = bearer(w.users["a"].token)
    for route in all_routes(w):
        status, response = await call(w, route, "b", intruder)
        where = f"{route.service} {route.method} {route.rule}"
        if route.access in (Access.OPEN, Access.REGISTER):
            assert not await guarded(status, response), where
            continue
        assert status == 403, where
        assert (await response.get_json())["error"]["code"] == "forbidden", where
    # Nothing of b's changed: still no subscriptions, the same token works.
    listed = await w.client.get(
        f"/users/{w.users['b'].id}/subscriptions", headers=bearer(w.users["b"].token)
    )
    assert (listed.status_code, (await listed.get_json())["subscriptions"]) == (200, [])


async def test_a_publisher_key_is_refused_user_and_admin_routes(w: World) -> None:
    publisher = bearer(w.publisher_key)
    for route in all_routes(w):
        if route.access not in (Access.USER, Access.USER_IN_BODY, Access.ADMIN):
            continue
        status, _ = await call(w, route, "b", publisher)
        assert status == 403, f"{route.service} {route.method} {route.rule}"


async def test_a_user_reaches_their_own_routes(w: World) -> None:
    own = bearer(w.users["b"].token)
    for route in all_routes(w):
        if route.access is not Access.USER or route.method != "GET":
            continue
        status, response = await call(w, route, "b", own)
        assert not await guarded(status, response), f"{route.method} {route.rule}"
    subscribed = await w.client.post(
        "/sub",
        json={"user": w.users["b"].id, "category": "finance", "channels": ["email"]},
        headers=own,
    )
    assert subscribed.status_code == 200


async def test_an_admin_reaches_every_route(w: World) -> None:
    admin = bearer(ADMIN_KEY)
    for route in all_routes(w):
        status, response = await call(w, route, "c", admin)
        assert not await guarded(status, response), f"{route.service} {route.method} {route.rule}"


# -- publishers ----------------------------------------------------------------------


async def test_a_publisher_publishes_and_reads_only_its_categories(w: World) -> None:
    key = bearer(w.publisher_key)
    mine = await w.broker.post("/pub", json={"category": "Finance", "body": "up"}, headers=key)
    assert mine.status_code == 202
    other = await w.broker.post("/pub", json={"category": "sports", "body": "goal"}, headers=key)
    assert other.status_code == 403
    assert (await other.get_json())["error"]["code"] == "category_forbidden"

    assert (await w.broker.get(f"/messages/{w.finance_message}", headers=key)).status_code == 200
    for path in (f"/messages/{w.sports_message}", f"/messages/{w.sports_message}/deliveries"):
        assert (await w.broker.get(path, headers=key)).status_code == 403
    missing = await w.broker.post("/pub", json={"category": "finance", "body": "x"})
    assert missing.status_code == 401


async def test_the_publish_form_takes_the_key_in_a_field(w: World) -> None:
    form = {"category": "sports", "body": "goal", "api_key": w.publisher_key}
    refused = await w.broker.post("/pub", form=form)
    assert refused.status_code == 403
    form["category"] = "finance"
    accepted = await w.broker.post("/pub", form=form)
    assert accepted.status_code == 202
    html = await accepted.get_data(as_text=True)
    assert 'id="message-id"' in html and 'name="api_key"' in html
    assert (await w.broker.post("/pub", form={**form, "api_key": ""})).status_code == 401


async def test_a_revoked_key_is_refused(w: World) -> None:
    key = bearer(w.publisher_key)
    body_ = {"category": "finance", "body": "before"}
    assert (await w.broker.post("/pub", json=body_, headers=key)).status_code == 202
    await w.store.revoke_api_key(w.publisher_key_id)
    after = await w.broker.post("/pub", json=body_, headers=key)
    assert after.status_code == 401
    assert (await after.get_json())["error"]["code"] == "unauthenticated"


async def test_a_wrong_key_and_a_wrong_scheme_are_refused(w: World) -> None:
    wrong = await w.broker.post("/categories", json={"name": "Weather"}, headers=bearer("nfk_x"))
    assert wrong.status_code == 401
    basic = await w.broker.post(
        "/categories", json={"name": "Weather"}, headers={"Authorization": f"Basic {ADMIN_KEY}"}
    )
    assert basic.status_code == 401
    added = await w.broker.post("/categories", json={"name": "Weather"}, headers=bearer(ADMIN_KEY))
    assert added.status_code == 201


# -- user tokens ---------------------------------------------------------------------


async def test_a_rotated_token_replaces_the_old_one(w: World) -> None:
    b = w.users["b"]
    path = f"/users/{b.id}"
    rotated = await w.client.post(f"{path}/token", headers=bearer(b.token))
    assert rotated.status_code == 200
    fresh = (await rotated.get_json())["token"]
    assert fresh.startswith("nfu_") and fresh != b.token
    assert (await w.client.get(path, headers=bearer(b.token))).status_code == 401
    assert (await w.client.get(path, headers=bearer(fresh))).status_code == 200

    # An admin may rotate anyone's; another user may not.
    assert (
        await w.client.post(f"{path}/token", headers=bearer(w.users["a"].token))
    ).status_code == 403
    by_admin = await w.client.post(f"{path}/token", headers=bearer(ADMIN_KEY))
    assert by_admin.status_code == 200
    assert (await w.client.get(path, headers=bearer(fresh))).status_code == 401


async def test_registration_can_be_reserved_to_admins(tmp_path: Path) -> None:
    env = {**ENV, "NOTEFLY_OPEN_REGISTRATION": "false"}
    container = Container(settings=Settings.from_env({**env, "NOTEFLY_DATA_DIR": str(tmp_path)}))
    await start(container.store)
    try:
        app = create_client_app(container)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            refused = await client.post("/users", json={"name": "Ed"})
            assert refused.status_code == 401
            assert (await client.get("/users", headers=bearer(ADMIN_KEY))).status_code == 200
            made = await client.post("/users", json={"name": "Ed"}, headers=bearer(ADMIN_KEY))
            assert made.status_code == 201
            assert (await made.get_json())["token"].startswith("nfu_")
    finally:
        await stop(container.store)


# -- secrets stay out of the logs ---------------------------------------------------------


async def test_no_key_or_token_reaches_the_logs(w: World) -> None:
    secrets_ = [ADMIN_KEY, w.publisher_key, *(p.token for p in w.users.values())]
    with capture_logs() as events:
        await w.broker.post(
            "/pub", json={"category": "finance", "body": "x"}, headers=bearer(ADMIN_KEY)
        )
        await w.broker.post(
            "/pub", json={"category": "sports", "body": "x"}, headers=bearer(w.publisher_key)
        )
        await w.broker.get("/status", headers=bearer(w.users["a"].token))
        await w.broker.get("/dashboard", headers={"Cookie": f"notefly_admin={ADMIN_KEY}"})
        await w.client.get(f"/users/{w.users['b'].id}", headers=bearer(w.users["a"].token))
        await w.client.post("/users", json={"name": "Logged"})
        await w.client.get("/sub", headers={"Cookie": f"notefly_user={w.users['a'].token}"})
        await w.client.post(
            "/sub",
            form={"user": w.users["a"].id},
            headers={"Cookie": f"notefly_user={w.users['a'].token}"},
        )
        await w.client.get("/users/usr_x", headers=bearer("nfu_not-a-real-token"))
    assert events, "the requests logged nothing at all: the capture is not working"
    logged = repr(events)
    for value in secrets_:
        assert value not in logged


# -- the dashboard's sign-in ---------------------------------------------------------


async def test_the_dashboard_signs_an_admin_in_with_a_strict_http_only_cookie(w: World) -> None:
    refused = await w.broker.post("/dashboard/sign-in", form={"api_key": w.publisher_key})
    assert refused.status_code == 401
    assert "Set-Cookie" not in refused.headers

    signed_in = await w.broker.post("/dashboard/sign-in", form={"api_key": ADMIN_KEY})
    assert (signed_in.status_code, signed_in.headers["Location"]) == (303, "/dashboard")
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert (await w.broker.get("/dashboard")).status_code == 200
    assert (await w.broker.get("/status")).status_code == 200

    # A state change carried by the cookie must say it comes from the dashboard itself.
    retry = "/deliveries/d_missing/retry"
    blind = await w.broker.post(retry)
    assert blind.status_code == 403
    assert (await blind.get_json())["error"]["code"] == "cross_site"
    foreign = await w.broker.post(retry, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    own = await w.broker.post(retry, headers={"Origin": "http://localhost"})
    assert own.status_code == 404  # past the guard: there is no such delivery

    out = await w.broker.post("/dashboard/sign-out", headers={"Origin": "http://localhost"})
    assert out.status_code == 303
    after = await w.broker.get("/dashboard")
    assert (after.status_code, after.headers["Location"]) == (303, "/dashboard/sign-in")


async def test_a_revoked_admin_cookie_falls_back_to_the_sign_in(w: World) -> None:
    key, value = issue_api_key("ops", admin=True)
    await w.store.add_api_key(key)
    signed_in = await w.broker.post("/dashboard/sign-in", form={"api_key": value})
    assert signed_in.status_code == 303
    await w.store.revoke_api_key(key.id)
    assert (await w.broker.get("/dashboard")).status_code == 303
    assert (await w.broker.get("/dashboard/sign-in")).status_code == 200
    assert (await w.broker.get("/status")).status_code == 401
