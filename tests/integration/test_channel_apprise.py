"""The Apprise bridge against a loopback peer: Apprise's ``json://`` service posting to a
local HTTP server, through Apprise's own (threaded) sending code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from channels.apprise import AppriseChannel, AppriseProvider
from notefly.config import Settings
from notefly.domain import User
from notefly.errors import InvalidInput, PermanentChannelError, TransientChannelError
from notefly.registrations import DEFAULT_APPRISE_SCHEMES, check_apprise_url
from tests.integration.channel_helpers import World, make_world, policy
from tests.peers import HttpPeer, Reply

PASSWORD = "apprise-pa55word"  # a test credential
WITH_JSON = frozenset({"json", *DEFAULT_APPRISE_SCHEMES})


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    # The peers are on loopback, which only this setting lets Apprise targets reach.
    rules = policy(apprise_schemes=WITH_JSON, allow_private_targets=True)
    async for found in make_world(tmp_path, rules=rules):
        yield found


def provider(tmp_path: Path, world: World) -> AppriseProvider:
    env = {"NOTEFLY_APPRISE_SCHEMES": "json,ntfy", "NOTEFLY_ALLOW_PRIVATE_TARGETS": "1"}
    settings = Settings(data_dir=tmp_path, env=env)
    return AppriseChannel(settings, world.store)


async def registered(world: World, *urls: str) -> User:
    user = await world.user()
    for url in urls:
        await world.registrations.add_apprise_url(user.id, url)
    await world.directory.subscribe(user.id, "finance", ["apprise"])
    return user


async def test_a_notification_reaches_the_service_behind_the_apprise_url(
    tmp_path: Path, world: World
) -> None:
    async with HttpPeer(default=Reply(200)) as peer:
        user = await registered(world, f"json://user:{PASSWORD}@127.0.0.1:{peer.port}/notify")
        task = await world.task(user, "apprise", title="Rates up", body="The key rate rose.")
        assert task.recipient.address == "apprise:1"
        bridge = provider(tmp_path, world)
        rendered = world.render(task)
        with capture_logs() as logs:
            result = await bridge.send(rendered, delivery_id=task.id)

    [request] = peer.requests
    assert (request.method, request.path) == ("POST", "/notify")
    sent = request.json()
    assert sent["title"] == rendered.subject == "Rates up"
    assert sent["message"] == rendered.text and "The key rate rose." in sent["message"]
    assert result.provider == "apprise"
    assert PASSWORD not in repr(logs)


async def test_a_refusal_is_retried_only_where_it_failed(tmp_path: Path, world: World) -> None:
    async with HttpPeer(default=Reply(200)) as good, HttpPeer(default=Reply(500)) as bad:
        user = await registered(
            world, f"json://127.0.0.1:{good.port}/a", f"json://127.0.0.1:{bad.port}/b"
        )
        task = await world.task(user, "apprise")
        bridge = provider(tmp_path, world)
        with pytest.raises(TransientChannelError, match="1 of 2"):
            await bridge.send(world.render(task), delivery_id=task.id)
        with pytest.raises(TransientChannelError):
            await bridge.send(world.render(task), delivery_id=task.id)
    assert len(good.requests) == 1 and len(bad.requests) == 2


async def test_sending_runs_off_the_event_loop(tmp_path: Path, world: World) -> None:
    """While Apprise waits on a slow service, the loop keeps serving other work."""
    release = asyncio.Event()

    async def slow(_request: object) -> Reply:
        await release.wait()
        return Reply(200)

    async with HttpPeer(slow) as peer:
        user = await registered(world, f"json://127.0.0.1:{peer.port}/slow")
        task = await world.task(user, "apprise")
        bridge = provider(tmp_path, world)
        sending = asyncio.create_task(bridge.send(world.render(task), delivery_id=task.id))
        await peer.wait_for(1)  # the request is in flight and the loop is free
        assert not sending.done()
        release.set()
        await sending


async def test_a_url_whose_service_is_no_longer_allowed_fails_for_good(
    tmp_path: Path, world: World
) -> None:
    user = await registered(world, "jsons://hooks.example.org/notify")
    task = await world.task(user, "apprise")
    bridge = AppriseChannel(
        Settings(data_dir=tmp_path, env={"NOTEFLY_APPRISE_SCHEMES": "ntfys"}), world.store
    )
    with pytest.raises(PermanentChannelError, match="not allowed"):
        await bridge.send(world.render(task), delivery_id=task.id)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "not an Apprise URL"),
        ("foo://bar", "not allowed"),
        ("syslog://", "not allowed"),
        ("json://127.0.0.1/x", "not allowed"),  # plain-HTTP posts need an explicit setting
        ("tgram://", "cannot use"),
        ("discord://only-one-part", "cannot use"),
    ],
)
def test_unusable_urls_are_refused_with_a_reason(url: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem) as caught:
        check_apprise_url(url, DEFAULT_APPRISE_SCHEMES)
    assert caught.value.status == 422


def test_what_is_shown_of_a_url_hides_its_credentials() -> None:
    label = check_apprise_url("tgram://123456789:AAHsecretBotToken/987654", DEFAULT_APPRISE_SCHEMES)
    assert label.startswith("tgram://") and "AAHsecretBotToken" not in label
    label = check_apprise_url(
        f"jsons://ops:{PASSWORD}@hooks.example.org/n", DEFAULT_APPRISE_SCHEMES
    )
    assert PASSWORD not in label and "hooks.example.org" in label
