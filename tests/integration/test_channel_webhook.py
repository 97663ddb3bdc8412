"""Webhooks against a local HTTP receiver that verifies the Standard Webhooks signature:
with the ``standardwebhooks`` library, and with the plain-stdlib snippet of the README."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from channels.webhook import WebhookChannel, WebhookProvider
from notefly.addresses import EndpointKind
from notefly.config import Settings
from notefly.domain import User
from notefly.errors import InvalidInput, PermanentChannelError, TransientChannelError
from tests.integration.channel_helpers import World, make_world, policy
from tests.peers import HttpPeer, Reply, Request


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for found in make_world(tmp_path):
        yield found


def provider(tmp_path: Path, world: World, **env: str) -> WebhookProvider:
    settings = Settings(data_dir=tmp_path, env={"NOTEFLY_WEBHOOK_ALLOW_HTTP": "1", **env})
    return WebhookChannel(settings, world.store)


def _readme_snippet() -> Callable[[str, dict[str, str], bytes], bool]:
    """The verification snippet of the README, run as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```python\nimport base64, hashlib, hmac, time")
    code = readme[start:].split("\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # our own README
    verify: Callable[[str, dict[str, str], bytes], bool] = namespace["verify"]
    return verify


readme_verify = _readme_snippet()


async def registered(world: World, *urls: str) -> tuple[User, list[str]]:
    user = await world.user()
    secrets = []
    for url in urls:
        endpoint, created = await world.registrations.add_webhook(user.id, url)
        assert created
        secrets.append(endpoint.keys["secret"])
    await world.directory.subscribe(user.id, "finance", ["webhook"])
    return user, secrets


async def test_the_receiver_gets_signed_json_it_can_verify(tmp_path: Path, world: World) -> None:
    async with HttpPeer(default=Reply(204)) as peer:
        user, [secret] = await registered(world, f"{peer.url}/hooks/notefly")
        task = await world.task(user, "webhook", title="Rates up", body="The key rate rose.")
        assert task.recipient.address == "webhook:1"
        hook = provider(tmp_path, world)
        with capture_logs() as logs:
            result = await hook.send(world.render(task), delivery_id=task.id)
        await hook.aclose()

    [request] = peer.requests
    assert (request.method, request.path) == ("POST", "/hooks/notefly")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == task.id
    assert Webhook(secret).verify(request.body, request.headers) == request.json()
    assert readme_verify(secret, request.headers, request.body)
    assert not readme_verify(secret, request.headers, request.body + b" ")
    event = request.json()
    assert event["type"] == "notification.created"
    assert event["data"] == {
        "delivery_id": task.id,
        "message_id": task.message.id,
        "user_id": user.id,
        "category": "finance",
        "priority": "normal",
        "title": "Rates up",
        "body": "The key rate rose.",
        "text": world.render(task).text,
        "data": {},
        "accepted_at": task.message.accepted_at.isoformat(),
    }
    assert result.provider == "http"
    assert secret not in repr(logs)


async def test_a_retry_carries_the_same_webhook_id(tmp_path: Path, world: World) -> None:
    async with HttpPeer(default=Reply(200)) as peer:
        user, _ = await registered(world, f"{peer.url}/h")
        task = await world.task(user, "webhook")
        hook = provider(tmp_path, world)
        peer.then(Reply(503, headers={"Retry-After": "3"}))
        with pytest.raises(TransientChannelError) as caught:
            await hook.send(world.render(task), delivery_id=task.id)
        await hook.send(world.render(task), delivery_id=task.id)
        await hook.aclose()
    assert caught.value.retry_after == 3.0
    assert [r.headers["webhook-id"] for r in peer.requests] == [task.id, task.id]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(400, "bad"), PermanentChannelError),
        (Reply(301, headers={"Location": "https://elsewhere.example.org/"}), PermanentChannelError),
        (Reply(429), TransientChannelError),
        (Reply(500), TransientChannelError),
        (Reply(408), TransientChannelError),
    ],
)
async def test_answers_are_classified(
    tmp_path: Path, world: World, reply: Reply, error: type[Exception]
) -> None:
    async with HttpPeer(default=reply) as peer:
        user, _ = await registered(world, f"{peer.url}/h")
        task = await world.task(user, "webhook")
        hook = provider(tmp_path, world)
        with pytest.raises(error):
            await hook.send(world.render(task), delivery_id=task.id)
        await hook.aclose()
    assert len(peer.requests) == 1  # a redirect is not followed


async def test_410_removes_the_endpoint(tmp_path: Path, world: World) -> None:
    async with HttpPeer(default=Reply(410)) as peer:
        user, _ = await registered(world, f"{peer.url}/h")
        task = await world.task(user, "webhook")
        hook = provider(tmp_path, world)
        with pytest.raises(PermanentChannelError):
            await hook.send(world.render(task), delivery_id=task.id)
        await hook.aclose()
    assert await world.store.list_endpoints(user.id, EndpointKind.WEBHOOK) == []


async def test_an_unreachable_endpoint_is_transient(tmp_path: Path, world: World) -> None:
    async with HttpPeer() as peer:
        url = f"{peer.url}/h"
    user, _ = await registered(world, url)  # the receiver is gone now
    task = await world.task(user, "webhook")
    hook = provider(tmp_path, world)
    with pytest.raises(TransientChannelError, match=r"cannot reach 127\.0\.0\.1"):
        await hook.send(world.render(task), delivery_id=task.id)
    await hook.aclose()


async def test_plain_http_is_refused_at_send_time_when_not_allowed(
    tmp_path: Path, world: World
) -> None:
    async with HttpPeer() as peer:
        user, _ = await registered(world, f"{peer.url}/h")
        task = await world.task(user, "webhook")
        hook = provider(tmp_path, world, NOTEFLY_WEBHOOK_ALLOW_HTTP="0")
        with pytest.raises(PermanentChannelError, match="https"):
            await hook.send(world.render(task), delivery_id=task.id)
        await hook.aclose()
    assert peer.requests == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.org/notefly", True),
        ("http://127.0.0.1:8080/h", True),
        ("http://localhost/h", True),
        ("http://[::1]:9/h", True),
        ("http://hooks.example.org/h", False),
        ("http://10.0.0.5/h", False),
        ("ftp://hooks.example.org/h", False),
        ("https:///nohost", False),
        ("https://hooks.example.org/a b", False),
    ],
)
async def test_registration_wants_https_or_loopback_http_when_allowed(
    world: World, url: str, allowed: bool
) -> None:
    user = await world.user()
    if allowed:
        endpoint, _ = await world.registrations.add_webhook(user.id, url)
        assert endpoint.keys["secret"].startswith("whsec_")
    else:
        with pytest.raises(InvalidInput):
            await world.registrations.add_webhook(user.id, url)


async def test_without_the_setting_plain_http_is_refused_even_on_loopback(
    tmp_path: Path,
) -> None:
    async for strict in make_world(tmp_path, rules=policy(allow_http_webhooks=False)):
        user = await strict.user()
        with pytest.raises(InvalidInput, match="https"):
            await strict.registrations.add_webhook(user.id, "http://127.0.0.1:8080/h")


def signature_of(request: Request) -> str:
    return request.headers["webhook-signature"]


async def test_each_endpoint_signs_with_its_own_secret(tmp_path: Path, world: World) -> None:
    async with HttpPeer(default=Reply(200)) as peer:
        user, secrets = await registered(world, f"{peer.url}/a", f"{peer.url}/b")
        task = await world.task(user, "webhook")
        hook = provider(tmp_path, world)
        await hook.send(world.render(task), delivery_id=task.id)
        await hook.aclose()
    assert secrets[0] != secrets[1]
    by_path = {r.path: r for r in peer.requests}
    for path, secret in zip(("/a", "/b"), secrets, strict=True):
        assert readme_verify(secret, by_path[path].headers, by_path[path].body)
    assert signature_of(by_path["/a"]) != signature_of(by_path["/b"])
    assert json.loads(by_path["/a"].body) == json.loads(by_path["/b"].body)
