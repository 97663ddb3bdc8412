"""``POST /pub`` before Quart (``broker.ingest``): it answers the common publish
itself, exactly as the route would, and hands everything else to the route."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from structlog.testing import capture_logs

from broker.ingest import FastPublish
from notefly.auth import issue_api_key
from notefly.config import Settings
from notefly.containers import Container, resolve
from notefly.ports import Store
from tests.integration.conftest import RecordingChannel
from tests.integration.opsbroker import parse_metrics, sample
from tests.integration.running import broker_app
from tests.integration.test_auth_matrix import bearer
from tests.integration.test_sqlite_store import query

ADMIN_KEY = "fast-publish-admin-key-0123456789-abcdef"
LIMIT = 4096
Asgi = Callable[..., Awaitable[None]]


@dataclass
class Routed:
    """The app's route, counting the requests that reach it."""

    inner: Asgi
    calls: list[str] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls.append(f"{scope['method']} {scope['path']}")
        await self.inner(scope, receive, send)


@dataclass
class Keyed:
    client: Any
    app: Quart
    fast: FastPublish
    routed: Routed
    container: Container
    store: Store
    publisher: str  # a key that may publish to finance only

    async def publish(self, **kwargs: Any) -> Any:
        return await self.client.post("/pub", **kwargs)

    async def by_route(self, **kwargs: Any) -> Any:
        """The same request answered by the route alone."""
        self.app.asgi_app = self.routed  # type: ignore[method-assign]
        try:
            return await self.client.post("/pub", **kwargs)
        finally:
            self.app.asgi_app = self.fast  # type: ignore[method-assign]

    async def messages(self) -> int:
        path = self.container.settings().sqlite_path
        return int(query(path, "SELECT count(*) FROM messages")[0][0])


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[Keyed]:
    env = {"NOTEFLY_ADMIN_KEY": ADMIN_KEY}
    settings = Settings(data_dir=tmp_path, env=env, max_body_bytes=LIMIT)
    channels = {name: RecordingChannel(name) for name in settings.channels}
    async with broker_app(settings, channels) as (client, container):
        app: Quart = client.app
        fast = app.asgi_app
        assert isinstance(fast, FastPublish)
        routed = Routed(fast.route)
        fast.route = routed
        store: Store = await resolve(container.store)
        key, secret = issue_api_key("feed", admin=False, categories=["finance"])
        await store.add_api_key(key)
        yield Keyed(client, app, fast, routed, container, store, secret)


async def test_a_publish_is_answered_before_quart_and_committed(keyed: Keyed):
    response = await keyed.publish(
        json={"category": "Finance", "body": "Rates up", "title": "Rates"},
        headers=bearer(keyed.publisher),
    )

    assert response.status_code == 202
    body = await response.get_json()
    assert body["category"] == "finance"
    assert body["status"] == "accepted"
    assert response.headers["Location"] == f"/messages/{body['id']}"
    assert response.headers["Content-Type"] == "application/json"
    assert "Idempotent-Replayed" not in response.headers
    assert keyed.routed.calls == []
    stored = await keyed.store.get_message(body["id"])
    assert (stored.category_id, stored.title, stored.body) == ("finance", "Rates", "Rates up")


async def test_its_answers_match_the_routes(keyed: Keyed):
    """A success and an idempotent replay, from each path: the same shape and headers."""
    payload = {"category": "finance", "body": "Once", "idempotency_key": "k-1"}
    first = await keyed.publish(json=payload, headers=bearer(ADMIN_KEY))
    replay_fast = await keyed.publish(json=payload, headers=bearer(ADMIN_KEY))
    replay_route = await keyed.by_route(json=payload, headers=bearer(ADMIN_KEY))

    assert first.status_code == replay_fast.status_code == replay_route.status_code == 202
    assert await replay_fast.get_json() == await replay_route.get_json() == await first.get_json()
    # Every header: a hook that adds one to the route's answers must add it here too.
    assert sorted(replay_fast.headers.items()) == sorted(replay_route.headers.items())
    assert replay_fast.headers["Idempotent-Replayed"] == "true"
    assert keyed.routed.calls == ["POST /pub"]  # only the request sent to it
    assert await keyed.messages() == 1


REFUSALS = [
    pytest.param(
        {"json": {"category": "finance", "body": "x"}}, 401, "unauthenticated", id="no-key"
    ),
    pytest.param(
        {"json": {"category": "finance", "body": "x"}, "headers": bearer("nope-" + "x" * 30)},
        401,
        "unauthenticated",
        id="unknown-key",
    ),
    pytest.param(
        {"json": {"category": "sports", "body": "x"}, "headers": "publisher"},
        403,
        "category_forbidden",
        id="other-category",
    ),
    pytest.param(
        {"data": b'{"category": "finance",', "headers": "admin+json"},
        400,
        "malformed_json",
        id="malformed",
    ),
    pytest.param(
        {"json": {"category": "finance", "body": ""}, "headers": "admin"},
        422,
        "validation_failed",
        id="invalid",
    ),
    pytest.param(
        {"json": {"category": "finance", "body": "x", "extra": 1}, "headers": "admin"},
        422,
        "validation_failed",
        id="unknown-field",
    ),
    pytest.param(
        {"data": b"hello", "headers": "admin+text"},
        415,
        "unsupported_media_type",
        id="plain-text",
    ),
    pytest.param(
        {"json": {"category": "finance", "body": "x" * (LIMIT + 10)}, "headers": "admin"},
        413,
        "request_entity_too_large",
        id="too-large",
    ),
]


def _request(keyed: Keyed, kwargs: dict[str, Any]) -> dict[str, Any]:
    headers = {
        "publisher": bearer(keyed.publisher),
        "admin": bearer(ADMIN_KEY),
        "admin+json": {**bearer(ADMIN_KEY), "Content-Type": "application/json"},
        "admin+text": {**bearer(ADMIN_KEY), "Content-Type": "text/plain"},
    }
    found = kwargs.get("headers")
    return {**kwargs, "headers": headers[found]} if isinstance(found, str) else kwargs


@pytest.mark.parametrize(("kwargs", "status", "code"), REFUSALS)
async def test_refusals_are_the_routes_own(keyed: Keyed, kwargs, status, code):
    """Every refusal before publishing is handed to the route, which answers it (and
    counts it) once; nothing is written."""
    request = _request(keyed, kwargs)
    fast = await keyed.publish(**request)
    route = await keyed.by_route(**request)

    assert fast.status_code == route.status_code == status
    body = await fast.get_json()
    assert body == await route.get_json()
    assert body["error"]["code"] == code
    assert fast.headers.get("WWW-Authenticate") == route.headers.get("WWW-Authenticate")
    assert keyed.routed.calls == ["POST /pub", "POST /pub"]
    assert await keyed.messages() == 0
    metrics = parse_metrics((await (await keyed.client.get("/metrics")).get_data()).decode())
    labels = {"service": "broker", "method": "POST", "route": "/pub", "status": str(status)}
    assert sample(metrics, "notefly_http_request_duration_seconds_count", **labels) == 2


async def test_an_error_of_the_publisher_is_answered_as_the_route_would(keyed: Keyed):
    """Once publishing began the answer is final: an unknown category, an overload."""
    unknown = {"json": {"category": "nosuch", "body": "x"}, "headers": bearer(ADMIN_KEY)}
    fast, route = await keyed.publish(**unknown), await keyed.by_route(**unknown)
    assert fast.status_code == route.status_code == 404
    assert await fast.get_json() == await route.get_json()
    assert (await fast.get_json())["error"]["code"] == "category_not_found"
    assert keyed.routed.calls == ["POST /pub"]  # only the request sent to it


@pytest.mark.parametrize(
    ("error", "status", "code", "event"),
    [
        (RuntimeError("boom"), 500, "internal_error", "http.unexpected_error"),
        (sqlite3.OperationalError("disk I/O error"), 503, "store_unavailable", None),
    ],
)
async def test_a_crash_while_publishing_keeps_the_error_shape(
    keyed: Keyed, monkeypatch: pytest.MonkeyPatch, error, status, code, event
):
    publisher = keyed.app.extensions["notefly"].publisher

    async def broken(_command: Any) -> Any:
        raise error

    monkeypatch.setattr(publisher, "publish", broken)
    with capture_logs() as logs:
        response = await keyed.publish(
            json={"category": "finance", "body": "x"}, headers=bearer(ADMIN_KEY)
        )
    assert response.status_code == status
    assert (await response.get_json())["error"]["code"] == code
    assert keyed.routed.calls == []
    events = {entry["event"] for entry in logs}
    assert (event or "http.store_unavailable") in events


async def test_forms_and_cookies_go_to_the_route(keyed: Keyed):
    form = await keyed.publish(
        form={"category": "finance", "body": "From the form", "api_key": ADMIN_KEY},
        headers={"Origin": "http://localhost"},
    )
    assert form.status_code == 202  # the form's page, saying it was published
    assert await keyed.messages() == 1
    cookie = await keyed.publish(
        json={"category": "finance", "body": "x"}, headers={"Cookie": "notefly_admin=nope"}
    )
    assert cookie.status_code == 403  # a cookie needs this origin's word
    assert (await cookie.get_json())["error"]["code"] == "cross_site"
    assert keyed.routed.calls == ["POST /pub", "POST /pub"]


# -- at the ASGI level: bodies in pieces, without a length, and clients that leave ----


async def _call(app: Asgi, events: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]):
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/pub",
        "raw_path": b"/pub",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    pending = list(events)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    await app(scope, receive, send)
    status = next((e["status"] for e in sent if e["type"] == "http.response.start"), None)
    body = b"".join(e.get("body", b"") for e in sent if e["type"] == "http.response.body")
    return status, body


def _pieces(raw: bytes, size: int) -> list[dict[str, Any]]:
    chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
    return [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]


JSON = (b"content-type", b"application/json")
ADMIN = (b"authorization", f"Bearer {ADMIN_KEY}".encode())


async def test_a_body_in_pieces_without_a_length_is_published(keyed: Keyed):
    raw = json.dumps({"category": "finance", "body": "In pieces " * 40}).encode()
    status, body = await _call(keyed.fast, _pieces(raw, 100), [JSON, ADMIN])
    assert status == 202
    assert json.loads(body)["status"] == "accepted"
    assert keyed.routed.calls == []
    assert await keyed.messages() == 1


async def test_a_body_over_the_limit_without_a_length_is_refused_by_the_route(keyed: Keyed):
    raw = json.dumps({"category": "finance", "body": "x" * (2 * LIMIT)}).encode()
    status, body = await _call(keyed.fast, _pieces(raw, 1000), [JSON, ADMIN])
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_entity_too_large"
    assert keyed.routed.calls == ["POST /pub"]
    assert await keyed.messages() == 0


async def test_a_client_that_leaves_mid_body_publishes_nothing(keyed: Keyed):
    raw = json.dumps({"category": "finance", "body": "Half"}).encode()
    status, _ = await _call(keyed.fast, _pieces(raw, 10)[:2], [JSON, ADMIN])  # then gone
    assert status is None
    assert keyed.routed.calls == []
    assert await keyed.messages() == 0
