"""One-click unsubscribe (RFC 8058) on the client: a signed link, no login, one category."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as HttpClient

from client.app import create_app
from notefly.config import Settings
from notefly.containers import Container, resolve, start, stop
from notefly.unsubscribe import UnsubscribeLinks

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
async def container(tmp_path: Path) -> AsyncIterator[Container]:
    found = Container(settings=Settings(data_dir=tmp_path))
    await start(found.store)
    try:
        yield found
    finally:
        await stop(found.store)


@pytest.fixture
async def http(container: Container) -> AsyncIterator[HttpClient]:
    async with create_app(container).test_app() as app:
        yield app.test_client()


@pytest.fixture
async def links(container: Container) -> UnsubscribeLinks:
    return await resolve(container.unsubscribe_links)


async def subscribed_user(http: HttpClient) -> str:
    response = await http.post("/users", json={"name": "Ada", "email": "ada@example.org"})
    user_id: str = (await response.get_json())["id"]
    for category in ("finance", "sports"):
        await http.post("/sub", json={"user": user_id, "category": category, "channels": ["email"]})
    return user_id


async def categories(http: HttpClient, user_id: str) -> list[str]:
    subs = (await (await http.get(f"/users/{user_id}/subscriptions")).get_json())["subscriptions"]
    return [s["category"] for s in subs]


def path_of(links: UnsubscribeLinks, user_id: str, category: str) -> str:
    return links.url(user_id, category).removeprefix("http://127.0.0.1:5001")


async def test_a_one_click_post_removes_exactly_that_subscription(
    http: HttpClient, links: UnsubscribeLinks
) -> None:
    ada = await subscribed_user(http)
    path = path_of(links, ada, "finance")

    response = await http.post(path, form=ONE_CLICK)

    assert response.status_code == 200
    assert 'id="unsubscribed"' in await response.get_data(as_text=True)
    assert await categories(http, ada) == ["sports"]
    again = await http.post(path, form=ONE_CLICK)  # a mail client may post twice
    assert again.status_code == 200
    assert await categories(http, ada) == ["sports"]


async def test_opening_the_link_asks_first_and_removes_nothing(
    http: HttpClient, links: UnsubscribeLinks
) -> None:
    ada = await subscribed_user(http)
    path = path_of(links, ada, "sports")

    page = await http.get(path)

    html = await page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="unsubscribe-form"' in html and f'action="{path}"' in html and "Sports" in html
    assert await categories(http, ada) == ["finance", "sports"]


@pytest.mark.parametrize("mangle", ["flip", "swap", "garbage"])
async def test_a_tampered_link_is_refused(
    http: HttpClient, links: UnsubscribeLinks, mangle: str
) -> None:
    ada = await subscribed_user(http)
    token = links.token(ada, "finance")
    body, _, mac = token.partition(".")
    other_body = links.token(ada, "sports").partition(".")[0]
    forged = {
        "flip": f"{body}.{mac[:-2]}{'A' if mac[-2] != 'A' else 'B'}{mac[-1]}",
        "swap": f"{other_body}.{mac}",
        "garbage": "not-a-token",
    }[mangle]

    response = await http.post(f"/unsubscribe/{forged}", form=ONE_CLICK)

    assert response.status_code == 404
    assert await categories(http, ada) == ["finance", "sports"]


async def test_a_link_signed_with_another_key_is_refused(http: HttpClient) -> None:
    ada = await subscribed_user(http)
    foreign = UnsubscribeLinks(b"k" * 48, "http://127.0.0.1:5001")
    response = await http.post(path_of(foreign, ada, "finance"), form=ONE_CLICK)
    assert response.status_code == 404
    assert await categories(http, ada) == ["finance", "sports"]


async def test_a_link_of_an_erased_user_still_answers(
    http: HttpClient, links: UnsubscribeLinks
) -> None:
    ada = await subscribed_user(http)
    await http.delete(f"/users/{ada}")
    response = await http.post(path_of(links, ada, "finance"), form=ONE_CLICK)
    assert response.status_code == 200
