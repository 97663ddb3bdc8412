"""Every real provider at once, chosen by configuration and built through the entry
points, behind the real actor system: one message reaches a user on five channels, and
each delivery row records its provider and the provider's message id."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.domain import DeliveryStatus, User
from notefly.errors import ConfigurationError
from notefly.services import PublishCommand, message_status
from notefly.vapid import create_keys
from tests.integration.channel_helpers import Browser
from tests.peers import HttpPeer, LoopbackController, MailHandler, Reply, Request, smtp_peer

CHANNELS = "sms,email,push,webhook,apprise"


@pytest.fixture
def mailbox() -> Iterator[tuple[MailHandler, LoopbackController]]:
    handler = MailHandler()
    controller = smtp_peer(handler)
    yield handler, controller
    controller.stop()


def twilio(request: Request) -> Reply:
    return Reply(201, {"sid": "SM" + "1" * 32, "status": "queued", "num_segments": "1"})


def environment(tmp_path: Path, smtp_port: int, peer: HttpPeer) -> dict[str, str]:
    return {
        "NOTEFLY_DATA_DIR": str(tmp_path),
        "NOTEFLY_CHANNELS": CHANNELS,
        "NOTEFLY_EMAIL_PROVIDER": "smtp",
        "NOTEFLY_SMTP_HOST": "127.0.0.1",
        "NOTEFLY_SMTP_PORT": str(smtp_port),
        "NOTEFLY_SMTP_TLS": "none",
        "NOTEFLY_SMTP_FROM": "Notefly <notefly@example.org>",
        "NOTEFLY_SMS_PROVIDER": "twilio",
        "NOTEFLY_TWILIO_ACCOUNT_SID": "AC1",
        "NOTEFLY_TWILIO_AUTH_TOKEN": "token",
        "NOTEFLY_TWILIO_FROM": "+14155550100",
        "NOTEFLY_TWILIO_BASE_URL": f"{peer.url}/twilio",
        "NOTEFLY_PUSH_PROVIDER": "webpush",
        "NOTEFLY_VAPID_SUBJECT": "mailto:ops@example.org",
        "NOTEFLY_WEBPUSH_ALLOW_HTTP": "1",
        "NOTEFLY_WEBHOOK_PROVIDER": "http",
        "NOTEFLY_WEBHOOK_ALLOW_HTTP": "1",
        "NOTEFLY_APPRISE_PROVIDER": "apprise",
        "NOTEFLY_APPRISE_SCHEMES": "json",
        "NOTEFLY_ALLOW_PRIVATE_TARGETS": "1",  # the Apprise peer is on loopback
        "NOTEFLY_SHARDS_PER_CHANNEL": "2",
    }


def service(request: Request) -> Reply:
    if request.path.startswith("/twilio/"):
        return twilio(request)
    if request.path.startswith("/push/"):
        return Reply(201, headers={"Location": f"{request.path}/msg-7"})
    return Reply(200)


async def test_one_message_reaches_every_real_channel(
    tmp_path: Path, mailbox: tuple[MailHandler, LoopbackController]
) -> None:
    handler, smtp = mailbox
    create_keys(tmp_path)
    async with HttpPeer(service) as peer:
        container = Container(settings=Settings.from_env(environment(tmp_path, smtp.port, peer)))
        await start(container.store)
        try:
            await start(container.actors)
            directory = await resolve(container.directory)
            registrations = await resolve(container.registrations)
            ada = await directory.register(
                User(id="", name="Ada", email="ada@example.org", phone="+14155550123")
            )
            browser = Browser.new().subscription(f"{peer.url}/push/ada")
            keys = browser["keys"]
            assert isinstance(keys, dict)
            await registrations.add_push_subscription(
                ada.id, str(browser["endpoint"]), keys["p256dh"], keys["auth"]
            )
            await registrations.add_webhook(ada.id, f"{peer.url}/hook")
            await registrations.add_apprise_url(ada.id, f"json://127.0.0.1:{peer.port}/apprise")
            await directory.subscribe(ada.id, "finance", CHANNELS.split(","))

            publisher = await resolve(container.publisher)
            message, _ = await publisher.publish(PublishCommand("finance", "Rates up", "Rates"))
            store = await resolve(container.store)
            async with asyncio.timeout(20):
                while message_status(await store.delivery_counts(message.id)).value != "delivered":
                    await asyncio.sleep(0.05)
            rows = {d.channel: d for d in await store.list_deliveries(message.id)}
        finally:
            await stop(container.actors)
            await stop(container.store)

    assert {ch: (d.status, d.provider) for ch, d in rows.items()} == {
        "sms": (DeliveryStatus.SENT, "twilio"),
        "email": (DeliveryStatus.SENT, "smtp"),
        "push": (DeliveryStatus.SENT, "webpush"),
        "webhook": (DeliveryStatus.SENT, "http"),
        "apprise": (DeliveryStatus.SENT, "apprise"),
    }
    assert rows["sms"].provider_message_id == "SM" + "1" * 32
    assert rows["email"].provider_message_id == f"<{rows['email'].id}@example.org>"
    assert rows["push"].provider_message_id == "/push/ada/msg-7"
    assert (rows["push"].recipient, rows["webhook"].recipient) == ("web-push:1", "webhook:1")
    [mail] = handler.wait_for(1)
    assert mail.rcpt_tos == ["ada@example.org"]
    paths = sorted(r.path.split("/")[1] for r in peer.requests)
    assert paths == ["apprise", "hook", "push", "twilio"]


async def test_a_provider_missing_a_setting_stops_start_up_with_its_name(tmp_path: Path) -> None:
    env = {"NOTEFLY_DATA_DIR": str(tmp_path), "NOTEFLY_EMAIL_PROVIDER": "smtp"}
    container = Container(settings=Settings.from_env(env))
    await start(container.store)
    try:
        with pytest.raises(ConfigurationError, match="NOTEFLY_SMTP_HOST is not set"):
            await start(container.actors)
    finally:
        await stop(container.store)


async def test_an_unknown_provider_lists_what_is_installed(tmp_path: Path) -> None:
    env = {"NOTEFLY_DATA_DIR": str(tmp_path), "NOTEFLY_SMS_PROVIDER": "carrier-pigeon"}
    container = Container(settings=Settings.from_env(env))
    await start(container.store)
    try:
        with pytest.raises(ConfigurationError, match=r"installed: sms\.log, sms\.twilio"):
            await start(container.actors)
    finally:
        await stop(container.store)
