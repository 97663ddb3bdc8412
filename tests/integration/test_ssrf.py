"""Server-side request forgery: a user's webhook, push or Apprise URL must not make
Notefly reach loopback or private networks, neither by naming such an address, nor by a
name that resolves to one, nor by a name that resolves to one only when it is used
(DNS rebinding). Everything here is real: the client app, the store, the actor system,
and a loopback server that must hear nothing."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers
from quart.typing import TestClientProtocol as HttpClient

from channels._http import make_client
from channels._targets import guarded_transport
from channels.apprise import AppriseProvider
from channels.webhook import WebhookProvider
from client.app import create_app
from notefly.addresses import EndpointKind
from notefly.clock import SortableIds, SystemClock
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.domain import DeliveryStatus, User
from notefly.errors import InvalidInput, PermanentChannelError
from notefly.netguard import IPAddress, TargetRules
from notefly.registrations import RegistrationPolicy, Registrations
from notefly.services import PublishCommand
from tests.integration.channel_helpers import Browser, make_world
from tests.integration.test_client_api import error_of
from tests.peers import HttpPeer, Reply

CHANNELS = ("sms", "email", "push", "webhook", "apprise")
PUBLIC = "93.184.215.14"


async def client_app(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[HttpClient]:
    settings = Settings(data_dir=tmp_path, channels=CHANNELS, env=env)
    container = Container(settings=settings)
    await start(container.store)
    try:
        async with create_app(container).test_app() as app:
            yield app.test_client()
    finally:
        await stop(container.store)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[HttpClient]:
    async for client in client_app(tmp_path, {"NOTEFLY_APPRISE_SCHEMES": "json,jsons,discord"}):
        yield client


async def new_user(http: HttpClient) -> str:
    response = await http.post("/users", json={"name": "Mallory"})
    assert response.status_code == 201
    user_id: str = (await response.get_json())["id"]
    return user_id


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://localhost/hook", "localhost resolves to 127.0.0.1, which is a loopback address"),
        ("https://2130706433/hook", "resolves to 127.0.0.1, which is a loopback address"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("https://10.0.0.7:8443/hook", "10.0.0.7 is a private address"),
        ("https://[::ffff:127.0.0.1]/hook", "is a loopback address"),
        ("https://[64:ff9b::a9fe:a9fe]/hook", "is a link-local address"),
        ("https://0.0.0.0/hook", "0.0.0.0 is a unspecified address"),
    ],
)
async def test_a_webhook_reaching_a_private_address_is_refused(
    http: HttpClient, url: str, said: str
) -> None:
    user_id = await new_user(http)
    response = await http.post(f"/users/{user_id}/webhooks", json={"url": url})
    error = await error_of(response, 422, "validation_failed")
    assert said in error["message"]
    assert "NOTEFLY_ALLOW_PRIVATE_TARGETS" in error["message"]
    assert error["details"][0]["field"] == "url"
    listed = await (await http.get(f"/users/{user_id}/webhooks")).get_json()
    assert listed["endpoints"] == []


async def test_apprise_urls_naming_a_server_are_checked_and_vendor_ones_are_not(
    http: HttpClient,
) -> None:
    user_id = await new_user(http)
    refused = await http.post(
        f"/users/{user_id}/apprise-urls", json={"url": "json://localhost:8080/notify"}
    )
    error = await error_of(refused, 422, "validation_failed")
    assert "localhost resolves to 127.0.0.1, which is a loopback address" in error["message"]
    # Discord's "host" is a webhook id, not an address (this one would parse as one).
    vendor = await http.post(
        f"/users/{user_id}/apprise-urls", json={"url": "discord://4174216298/token"}
    )
    assert vendor.status_code == 201


async def test_a_push_endpoint_on_a_private_network_is_refused(http: HttpClient) -> None:
    user_id = await new_user(http)
    subscription = Browser.new().subscription("https://192.168.0.10/push/abc")
    response = await http.post(f"/users/{user_id}/push-subscriptions", json=subscription)
    error = await error_of(response, 422)
    assert "192.168.0.10 is a private address" in error["message"]


async def test_the_operator_can_allow_private_targets(tmp_path: Path) -> None:
    env = {"NOTEFLY_ALLOW_PRIVATE_TARGETS": "1"}
    async for http in client_app(tmp_path, env):
        user_id = await new_user(http)
        response = await http.post(
            f"/users/{user_id}/webhooks", json={"url": "https://localhost:8443/hook"}
        )
        assert response.status_code == 201
        assert (await response.get_json())["url"] == "https://localhost:8443/hook"


# -- DNS rebinding: public when registered, loopback when used --------------------------


class RebindingDns:
    """Answers one name: a public address at first, 127.0.0.1 once ``rebind`` is called."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.address = PUBLIC
        self.asked: list[str] = []

    def rebind(self) -> None:
        self.address = "127.0.0.1"

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host != self.name:
            raise OSError(f"{host}: Name or service not known")
        return [ipaddress.ip_address(self.address)]


async def test_a_rebound_name_is_refused_at_send_and_the_delivery_fails_for_good(
    tmp_path: Path,
) -> None:
    dns = RebindingDns("hooks.rebind.test")
    env = {"NOTEFLY_WEBHOOK_PROVIDER": "http"}
    settings = Settings(data_dir=tmp_path, channels=("webhook",), env=env)
    container = Container(settings=settings)
    async with HttpPeer(default=Reply(204)) as peer:
        await start(container.store)
        try:
            store = await resolve(container.store)
            webhook = WebhookProvider(
                store, make_client(5.0, guarded_transport(TargetRules(), dns))
            )
            container.channels.override(providers.Object({"webhook": webhook}))
            await start(container.actors)
            clock = SystemClock()
            registrations = Registrations(
                store, store, SortableIds(clock), clock, RegistrationPolicy(), resolver=dns
            )
            directory = await resolve(container.directory)
            mallory = await directory.register(User(id="", name="Mallory"))
            url = f"https://{dns.name}:{peer.port}/hook"
            endpoint, created = await registrations.add_webhook(mallory.id, url)
            assert created and endpoint.url == url  # public when registered
            await directory.subscribe(mallory.id, "finance", ["webhook"])

            dns.rebind()
            publisher = await resolve(container.publisher)
            message, _ = await publisher.publish(PublishCommand("finance", "Rates up", "Rates"))
            async with asyncio.timeout(60):
                while True:
                    rows = await store.list_deliveries(message.id)
                    if rows and rows[0].status is not DeliveryStatus.QUEUED:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await stop(container.actors)
            await stop(container.store)
            container.channels.reset_override()

    [delivery] = rows
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.attempts == 1  # permanent: not retried
    assert delivery.error is not None and "127.0.0.1, a loopback address" in delivery.error
    assert dns.asked.count(dns.name) >= 2  # checked at registration and again at send
    assert peer.connections == 0 and peer.requests == []


async def test_the_same_rebound_name_reaches_loopback_where_loopback_is_allowed() -> None:
    """The control of the test above: the guard, not the set-up, keeps the peer silent."""
    dns = RebindingDns("hooks.rebind.test")
    dns.rebind()
    async with (
        HttpPeer(default=Reply(204)) as peer,
        make_client(5.0, guarded_transport(TargetRules(allow_loopback=True), dns)) as client,
    ):
        # The peer speaks plain HTTP; the point is where the connection lands.
        response = await client.post(f"http://{dns.name}:{peer.port}/hook", content=b"{}")
    assert response.status_code == 204
    [request] = peer.requests
    assert request.path == "/hook" and request.headers["host"] == f"{dns.name}:{peer.port}"


async def test_registration_refuses_a_name_that_already_resolves_to_loopback(
    tmp_path: Path,
) -> None:
    dns = RebindingDns("hooks.rebind.test")
    dns.rebind()
    clock = SystemClock()
    async for world in make_world(tmp_path):
        user = await world.user()
        registrations = Registrations(
            world.store, world.store, SortableIds(clock), clock, RegistrationPolicy(), dns
        )
        with pytest.raises(InvalidInput, match=r"rebind\.test resolves to 127\.0\.0\.1") as info:
            await registrations.add_webhook(user.id, f"https://{dns.name}/hook")
        details: Any = info.value.details
        assert details[0]["field"] == "url"
        assert await world.store.list_endpoints(user.id, EndpointKind.WEBHOOK) == []


async def test_an_apprise_url_rebound_to_loopback_is_refused_before_apprise_sends(
    tmp_path: Path,
) -> None:
    dns = RebindingDns("ntfy.rebind.test")
    clock = SystemClock()
    schemes = frozenset({"json"})
    async with HttpPeer(default=Reply(200)) as peer:
        async for world in make_world(tmp_path, channels=("apprise",)):
            user = await world.user()
            registrations = Registrations(
                world.store,
                world.store,
                SortableIds(clock),
                clock,
                RegistrationPolicy(apprise_schemes=schemes),
                dns,
            )
            await registrations.add_apprise_url(user.id, f"json://{dns.name}:{peer.port}/n")
            await world.directory.subscribe(user.id, "finance", ["apprise"])
            task = await world.task(user, "apprise")
            dns.rebind()
            bridge = AppriseProvider(world.store, schemes, TargetRules(), dns)
            with pytest.raises(PermanentChannelError, match=r"resolves to 127\.0\.0\.1"):
                await bridge.send(world.render(task), delivery_id=task.id)
    assert peer.connections == 0


async def test_a_redirect_is_never_followed(tmp_path: Path) -> None:
    """A public endpoint could redirect to an internal one: redirects fail the target."""
    async with (
        HttpPeer(default=Reply(204)) as internal,
        HttpPeer(default=Reply(302, headers={"Location": f"{internal.url}/admin"})) as hook,
    ):
        async for world in make_world(tmp_path, channels=("webhook",)):
            user = await world.user()
            await world.registrations.add_webhook(user.id, f"{hook.url}/hook")
            await world.directory.subscribe(user.id, "finance", ["webhook"])
            task = await world.task(user, "webhook")
            client = make_client(5.0, guarded_transport(TargetRules(allow_loopback=True)))
            provider = WebhookProvider(world.store, client, allow_http=True)
            with pytest.raises(PermanentChannelError, match="302"):
                await provider.send(world.render(task), delivery_id=task.id)
            await provider.aclose()
    assert len(hook.requests) == 1
    assert internal.connections == 0
