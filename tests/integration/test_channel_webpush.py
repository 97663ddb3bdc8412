"""Web Push against a local HTTP server playing the push service: it checks the VAPID
signature and decrypts the payload with the subscription's private key, as a browser
would (RFC 8030, 8291, 8292)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import http_ece
import pytest
from py_vapid import Vapid02
from py_vapid.jwt import decode as decode_jwt

from channels.webpush import WebPushChannel, WebPushProvider
from notefly.addresses import EndpointKind
from notefly.config import Settings
from notefly.domain import Priority, User
from notefly.errors import ConfigurationError, PermanentChannelError, TransientChannelError
from notefly.vapid import create_keys
from tests.integration.channel_helpers import Browser, World, make_world
from tests.peers import HttpPeer, Reply, Request

SUBJECT = "mailto:ops@notefly.example.org"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for found in make_world(tmp_path):
        yield found


def provider(tmp_path: Path, world: World, allow_http: str = "1") -> WebPushProvider:
    create_keys(tmp_path)
    settings = Settings(
        data_dir=tmp_path,
        client_public_url="https://notefly.example.org",
        env={
            "NOTEFLY_VAPID_SUBJECT": SUBJECT,
            "NOTEFLY_WEBPUSH_TTL": "3600",
            "NOTEFLY_WEBPUSH_ALLOW_HTTP": allow_http,  # the peers listen on loopback
        },
    )
    return WebPushChannel(settings, world.store)


def decrypt(request: Request, browser: Browser) -> dict[str, Any]:
    plain = http_ece.decrypt(
        request.body,
        private_key=browser.private_key,
        auth_secret=browser.auth,
        version="aes128gcm",
    )
    payload: dict[str, Any] = json.loads(plain)
    return payload


def vapid_claims(request: Request, public_key: str) -> dict[str, Any]:
    """The VAPID JWT's claims, after checking its signature and the key it names."""
    authorization = request.headers["authorization"]
    assert authorization.startswith("vapid t=")
    assert Vapid02.verify(authorization)
    token, _, key = authorization.removeprefix("vapid t=").partition(",k=")
    assert key == public_key
    claims: dict[str, Any] = decode_jwt(token, key)
    return claims


async def subscribed(world: World, peer: HttpPeer, *browsers: Browser, path: str = "/push") -> User:
    user = await world.user()
    for i, browser in enumerate(browsers):
        sub = browser.subscription(f"{peer.url}{path}/{i}")
        keys: Any = sub["keys"]
        await world.registrations.add_push_subscription(
            user.id, str(sub["endpoint"]), keys["p256dh"], keys["auth"]
        )
    await world.directory.subscribe(user.id, "finance", ["push"])
    return user


async def test_the_push_service_gets_an_encrypted_signed_message_the_browser_can_read(
    tmp_path: Path, world: World
) -> None:
    browser = Browser.new()
    async with HttpPeer(default=Reply(201, headers={"Location": "/m/abc123"})) as peer:
        user = await subscribed(world, peer, browser)
        task = await world.task(user, "push", title="Rates up", body="The key rate rose.")
        assert task.recipient.address == "web-push:1"  # recorded on the delivery row
        push = provider(tmp_path, world)
        result = await push.send(world.render(task), delivery_id=task.id)
        await push.aclose()

    [request] = peer.requests
    assert (request.method, request.path) == ("POST", "/push/0")
    assert request.headers["content-encoding"] == "aes128gcm"
    assert request.headers["ttl"] == "3600"
    assert request.headers["urgency"] == "normal"
    payload = decrypt(request, browser)
    assert payload["title"] == "Rates up"
    assert payload["body"] == world.render(task).text
    assert "The key rate rose." in payload["body"]
    assert payload["category"] == "finance" and payload["delivery_id"] == task.id
    assert payload["url"] == f"https://notefly.example.org/sub?user={user.id}"
    claims = vapid_claims(request, create_keys(tmp_path))
    assert claims["aud"] == peer.url and claims["sub"] == SUBJECT
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    assert (result.provider, result.provider_message_id) == ("webpush", "/m/abc123")


async def test_an_endpoint_on_loopback_is_refused_at_send_time_and_never_reached(
    tmp_path: Path, world: World
) -> None:
    """A subscription stored with a loopback endpoint (as a name resolving there later
    would be) fails permanently when loopback is not allowed; nothing is sent to it."""
    async with HttpPeer(default=Reply(201)) as peer:
        user = await subscribed(world, peer, Browser.new())
        task = await world.task(user, "push", title="Rates up", body="The key rate rose.")
        push = provider(tmp_path, world, allow_http="0")
        with pytest.raises(PermanentChannelError, match="refused"):
            await push.send(world.render(task), delivery_id=task.id)
        await push.aclose()
    assert peer.requests == []


async def test_every_browser_of_the_user_gets_it_with_fresh_claims(
    tmp_path: Path, world: World
) -> None:
    browsers = [Browser.new(), Browser.new()]
    async with HttpPeer(default=Reply(201)) as peer:
        user = await subscribed(world, peer, *browsers)
        push = provider(tmp_path, world)
        for _ in range(2):  # a second message must not reuse what the first one signed
            task = await world.task(user, "push")
            await push.send(world.render(task), delivery_id=task.id)
        await push.aclose()

    assert sorted(r.path for r in peer.requests) == ["/push/0", "/push/0", "/push/1", "/push/1"]
    for request in peer.requests:
        browser = browsers[int(request.path.rsplit("/", 1)[1])]
        assert decrypt(request, browser)["title"] == "Rates"
        vapid_claims(request, create_keys(tmp_path))


async def test_a_gone_subscription_is_forgotten_and_the_others_still_served(
    tmp_path: Path, world: World
) -> None:
    def service(request: Request) -> Reply:
        return Reply(410) if request.path.endswith("/0") else Reply(201)

    async with HttpPeer(service) as peer:
        user = await subscribed(world, peer, Browser.new(), Browser.new())
        task = await world.task(user, "push")
        push = provider(tmp_path, world)
        result = await push.send(world.render(task), delivery_id=task.id)
        await push.aclose()

    assert result.provider == "webpush"
    left = await world.store.list_endpoints(user.id, EndpointKind.WEBPUSH)
    assert [e.url for e in left] == [f"{peer.url}/push/1"]


async def test_when_the_only_subscription_is_gone_the_delivery_fails_for_good(
    tmp_path: Path, world: World
) -> None:
    async with HttpPeer(default=Reply(404)) as peer:
        user = await subscribed(world, peer, Browser.new())
        task = await world.task(user, "push")
        push = provider(tmp_path, world)
        with pytest.raises(PermanentChannelError, match="gone"):
            await push.send(world.render(task), delivery_id=task.id)
        await push.aclose()
    assert await world.store.list_endpoints(user.id, EndpointKind.WEBPUSH) == []
    # The next message finds no address for push: skipped at fan-out, not sent.
    _message, tasks = await world.publish()
    assert [t for t in tasks if t.recipient.user_id == user.id] == []


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [(Reply(429, headers={"Retry-After": "7"}), 7.0), (Reply(503), None), (Reply(500), None)],
)
async def test_throttling_and_server_errors_are_transient(
    tmp_path: Path, world: World, reply: Reply, retry_after: float | None
) -> None:
    async with HttpPeer(default=reply) as peer:
        user = await subscribed(world, peer, Browser.new())
        task = await world.task(user, "push")
        push = provider(tmp_path, world)
        with pytest.raises(TransientChannelError) as caught:
            await push.send(world.render(task), delivery_id=task.id)
        await push.aclose()
    assert caught.value.retry_after == retry_after
    assert len(await world.store.list_endpoints(user.id, EndpointKind.WEBPUSH)) == 1


async def test_a_retry_goes_only_to_the_browsers_that_did_not_take_it(
    tmp_path: Path, world: World
) -> None:
    async with HttpPeer(default=Reply(201)) as peer:
        user = await subscribed(world, peer, Browser.new(), Browser.new())
        task = await world.task(user, "push")
        push = provider(tmp_path, world)
        peer.then(Reply(201), Reply(503))  # the first request succeeds, the second fails
        with pytest.raises(TransientChannelError, match="1 of 2"):
            await push.send(world.render(task), delivery_id=task.id)
        first_round = [r.path for r in peer.requests]
        await push.send(world.render(task), delivery_id=task.id)
        await push.aclose()

    # Replies go in arrival order: the first request got 201, the second 503.
    assert len(first_round) == 2
    assert [r.path for r in peer.requests[2:]] == [first_round[1]]


@pytest.mark.parametrize(
    ("priority", "urgency"),
    [(Priority.LOW, "low"), (Priority.HIGH, "high"), (Priority.URGENT, "high")],
)
async def test_urgency_follows_the_message_priority(
    tmp_path: Path, world: World, priority: Priority, urgency: str
) -> None:
    async with HttpPeer(default=Reply(201)) as peer:
        user = await subscribed(world, peer, Browser.new())
        task = await world.task(user, "push", priority=priority)
        push = provider(tmp_path, world)
        await push.send(world.render(task), delivery_id=task.id)
        await push.aclose()
    assert peer.requests[0].headers["urgency"] == urgency


async def test_a_push_token_alone_is_not_a_web_push_subscription(
    tmp_path: Path, world: World
) -> None:
    user = await world.user(push_token="native-token")
    await world.directory.subscribe(user.id, "finance", ["push"])
    task = await world.task(user, "push")
    assert task.recipient.address == "native-token"
    push = provider(tmp_path, world)
    with pytest.raises(PermanentChannelError, match="no web push subscription"):
        await push.send(world.render(task), delivery_id=task.id)
    await push.aclose()


def test_settings_are_checked_at_start_up(tmp_path: Path, world: World) -> None:
    with pytest.raises(ConfigurationError, match="notefly keys"):
        WebPushChannel(
            Settings(data_dir=tmp_path, env={"NOTEFLY_VAPID_SUBJECT": SUBJECT}), world.store
        )
    create_keys(tmp_path)
    with pytest.raises(ConfigurationError, match="NOTEFLY_VAPID_SUBJECT"):
        WebPushChannel(Settings(data_dir=tmp_path), world.store)
    with pytest.raises(ConfigurationError, match="NOTEFLY_VAPID_SUBJECT"):
        WebPushChannel(
            Settings(data_dir=tmp_path, env={"NOTEFLY_VAPID_SUBJECT": "ops at example"}),
            world.store,
        )
