"""The client's channel routes on a real store: push subscriptions and the VAPID key,
webhooks, Apprise URLs, and what registering them changes about a user's channels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as HttpClient

from client.app import create_app
from notefly.config import Settings
from notefly.containers import Container, start, stop
from notefly.vapid import create_keys
from tests.integration.channel_helpers import Browser
from tests.integration.test_client_api import error_of

CHANNELS = ("sms", "email", "push", "webhook", "apprise")


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[HttpClient]:
    settings = Settings(
        data_dir=tmp_path,
        channels=CHANNELS,
        env={"NOTEFLY_WEBHOOK_ALLOW_HTTP": "1", "NOTEFLY_WEBPUSH_ALLOW_HTTP": "1"},
    )
    container = Container(settings=settings)
    await start(container.store)
    try:
        async with create_app(container).test_app() as app:
            yield app.test_client()
    finally:
        await stop(container.store)


async def user(http: HttpClient, **fields: Any) -> str:
    response = await http.post("/users", json={"name": "Ada", **fields})
    assert response.status_code == 201
    user_id: str = (await response.get_json())["id"]
    return user_id


async def subscribe(http: HttpClient, user_id: str, *channels: str) -> Any:
    return await http.post(
        "/sub", json={"user": user_id, "category": "finance", "channels": list(channels)}
    )


# -- web push ------------------------------------------------------------------------


async def test_the_vapid_key_is_served_once_it_exists(http: HttpClient, tmp_path: Path) -> None:
    await error_of(await http.get("/push/vapid-public-key"), 404, "push_not_configured")
    public_key = create_keys(tmp_path)
    response = await http.get("/push/vapid-public-key")
    assert response.status_code == 200
    assert await response.get_json() == {"public_key": public_key}


async def test_a_browser_subscription_is_an_address_for_push(http: HttpClient) -> None:
    ada = await user(http)
    await error_of(await subscribe(http, ada, "push"), 422, "missing_address")
    subscription = {
        **Browser.new().subscription("https://push.example.net/wpush/v2/abc"),
        "expirationTime": None,
    }

    first = await http.post(f"/users/{ada}/push-subscriptions", json=subscription)
    again = await http.post(f"/users/{ada}/push-subscriptions", json=subscription)

    assert (first.status_code, again.status_code) == (201, 200)
    created = await first.get_json()
    assert created["service"] == "https://push.example.net"
    assert (await again.get_json())["id"] == created["id"]
    assert (await subscribe(http, ada, "push")).status_code == 200
    listed = await (await http.get(f"/users/{ada}/push-subscriptions")).get_json()
    assert [s["id"] for s in listed["push_subscriptions"]] == [created["id"]]
    # The last address of a subscribed channel cannot go; once push is dropped, it can.
    remove = {"endpoint": subscription["endpoint"]}
    await error_of(
        await http.delete(f"/users/{ada}/push-subscriptions", json=remove), 422, "address_in_use"
    )
    assert (await subscribe(http, ada, "email", "sms")).status_code == 422
    await http.patch(f"/users/{ada}", json={"email": "ada@example.org"})
    assert (await subscribe(http, ada, "email")).status_code == 200
    response = await http.delete(f"/users/{ada}/push-subscriptions", json=remove)
    assert response.status_code == 204
    listed = await (await http.get(f"/users/{ada}/push-subscriptions")).get_json()
    assert listed == {"push_subscriptions": []}


async def test_a_browser_moves_to_the_user_who_registers_it_last(http: HttpClient) -> None:
    ada, bob = await user(http), await user(http, name="Bob")
    subscription = Browser.new().subscription("https://push.example.net/shared")
    await http.post(f"/users/{ada}/push-subscriptions", json=subscription)
    response = await http.post(f"/users/{bob}/push-subscriptions", json=subscription)
    assert response.status_code == 201
    ada_has = await (await http.get(f"/users/{ada}/push-subscriptions")).get_json()
    bob_has = await (await http.get(f"/users/{bob}/push-subscriptions")).get_json()
    assert (len(ada_has["push_subscriptions"]), len(bob_has["push_subscriptions"])) == (0, 1)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "ftp://push.example.net/x"}, "endpoint"),
        ({"endpoint": "http://push.example.net/x"}, "endpoint"),
        ({"keys": {"p256dh": "bm90IGEga2V5", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "keys.p256dh"),
        ({"keys": {"p256dh": Browser.new().p256dh, "auth": "c2hvcnQ"}}, "keys.auth"),
        ({"keys": {"p256dh": Browser.new().p256dh}}, "keys"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_unusable_subscriptions_are_refused(
    http: HttpClient, change: dict[str, Any], field: str
) -> None:
    ada = await user(http)
    subscription = {**Browser.new().subscription("https://push.example.net/x"), **change}
    error = await error_of(
        await http.post(f"/users/{ada}/push-subscriptions", json=subscription), 422
    )
    assert field in repr(error["details"]) or field in error["message"]


async def test_subscriptions_of_an_unknown_user_are_not_found(http: HttpClient) -> None:
    subscription = Browser.new().subscription("https://push.example.net/x")
    await error_of(await http.post("/users/usr_nobody/push-subscriptions", json=subscription), 404)
    await error_of(await http.get("/users/usr_nobody/webhooks"), 404, "user_not_found")


# -- webhooks and Apprise -------------------------------------------------------------


async def test_webhooks_register_list_and_remove(http: HttpClient) -> None:
    ada = await user(http)
    created = await http.post(f"/users/{ada}/webhooks", json={"url": "https://hooks.example.org/n"})
    assert created.status_code == 201
    hook = await created.get_json()
    assert hook["url"] == "https://hooks.example.org/n" and hook["secret"].startswith("whsec_")
    listed = await (await http.get(f"/users/{ada}/webhooks")).get_json()
    assert listed["endpoints"] == [{k: v for k, v in hook.items() if k != "secret"}]
    assert "secret" not in repr(listed)
    assert (await subscribe(http, ada, "webhook")).status_code == 200
    await error_of(await http.delete(f"/users/{ada}/webhooks/{hook['id']}"), 422, "address_in_use")
    await http.delete("/sub", json={"user": ada, "category": "finance"})
    assert (await http.delete(f"/users/{ada}/webhooks/{hook['id']}")).status_code == 204
    await error_of(await http.delete(f"/users/{ada}/webhooks/{hook['id']}"), 404)


@pytest.mark.parametrize(
    "url", ["http://hooks.example.org/n", "hooks.example.org", "https://", "javascript:alert(1)"]
)
async def test_a_webhook_must_be_https(http: HttpClient, url: str) -> None:
    ada = await user(http)
    await error_of(await http.post(f"/users/{ada}/webhooks", json={"url": url}), 422)


async def test_apprise_urls_are_checked_and_shown_without_credentials(http: HttpClient) -> None:
    ada = await user(http)
    bad = await error_of(
        await http.post(f"/users/{ada}/apprise-urls", json={"url": "tgram://"}), 422
    )
    assert "Apprise cannot use this tgram:// URL" in bad["message"]
    url = "tgram://123456789:AAHsecretBotToken/987654"
    created = await http.post(f"/users/{ada}/apprise-urls", json={"url": url})
    assert created.status_code == 201
    shown = await created.get_json()
    assert shown["url"].startswith("tgram://") and "AAHsecretBotToken" not in repr(shown)
    listed = await (await http.get(f"/users/{ada}/apprise-urls")).get_json()
    assert listed["endpoints"] == [shown]
    assert (await subscribe(http, ada, "apprise")).status_code == 200


async def test_the_api_is_described(http: HttpClient) -> None:
    spec = await (await http.get("/openapi.json")).get_json()
    for path in (
        "/users/{user_id}/push-subscriptions",
        "/users/{user_id}/webhooks",
        "/users/{user_id}/apprise-urls",
        "/users/{user_id}/stream",
        "/push/vapid-public-key",
    ):
        assert path in spec["paths"], path
