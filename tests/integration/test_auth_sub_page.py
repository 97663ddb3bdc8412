"""The /sub page with access control on: the user cookie, sign-in and sign-out, and
forms that cannot be forged from another site."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from client.app import create_app
from notefly.config import Settings
from notefly.containers import Container, start, stop

ADMIN_KEY = "sub-page-admin-key-0123456789-abcdefghij"
ENV = {"NOTEFLY_ADMIN_KEY": ADMIN_KEY, "NOTEFLY_AUTH_CACHE_SECONDS": "0.000001"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Page:
    client: Any
    user_id: str
    token: str
    set_cookie: str  # the Set-Cookie header of the registration


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[Any]:
    container = Container(settings=Settings(data_dir=tmp_path, env=ENV))
    await start(container.store)
    try:
        async with create_app(container).test_app() as test_app:
            yield test_app.test_client()
    finally:
        await stop(container.store)


@pytest.fixture
async def signed_up(http: Any) -> Page:
    """Registered through the page's form, as a browser would."""
    response = await http.post("/users", form={"name": "Ada", "email": "ada@example.org"})
    assert response.status_code == 303
    user_id = re.search(r"user=([^&]+)", response.headers["Location"])
    assert user_id is not None
    cookie = SimpleCookie(response.headers["Set-Cookie"])["notefly_user"]
    return Page(http, user_id.group(1), cookie.value, response.headers["Set-Cookie"])


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found is not None, "the form carries no anti-forgery token"
    return found.group(1)


async def subscriptions(page: Page) -> dict[str, list[str]]:
    listed = await page.client.get(f"/users/{page.user_id}/subscriptions", headers=ADMIN)
    return {s["category"]: s["channels"] for s in (await listed.get_json())["subscriptions"]}


async def user_page(page: Page) -> str:
    response = await page.client.get("/sub")
    assert response.status_code == 200
    html: str = await response.get_data(as_text=True)
    return html


async def test_the_cookie_is_http_only_strict_and_for_the_whole_site(signed_up: Page) -> None:
    header = signed_up.set_cookie
    assert signed_up.token.startswith("nfu_")
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    assert "Path=/" in header
    assert "Secure" not in header  # plain http here; see the next test


async def test_the_cookie_is_secure_over_https(http: Any) -> None:
    response = await http.post("/users", form={"name": "Bo"}, scheme="https")
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]


async def test_the_page_shows_the_signed_in_user_and_their_token_once(signed_up: Page) -> None:
    welcome = await signed_up.client.get(f"/sub?user={signed_up.user_id}&welcome=1")
    html = await welcome.get_data(as_text=True)
    assert signed_up.token in html
    assert 'id="sign-out-form"' in html
    later = await user_page(signed_up)
    assert "Ada" in later and signed_up.user_id in later
    assert signed_up.token not in later


async def test_a_form_without_or_with_a_wrong_token_changes_nothing(signed_up: Page) -> None:
    form = {"user": signed_up.user_id, "sub:finance:email": "on"}
    missing = await signed_up.client.post("/sub", form=form)
    assert missing.status_code == 403
    assert (await missing.get_json())["error"]["code"] == "csrf_failed"
    wrong = await signed_up.client.post("/sub", form={**form, "csrf_token": "0" * 64})
    assert wrong.status_code == 403
    assert await subscriptions(signed_up) == {}

    token = csrf_of(await user_page(signed_up))
    saved = await signed_up.client.post("/sub", form={**form, "csrf_token": token})
    assert saved.status_code == 303
    assert await subscriptions(signed_up) == {"finance": ["email"]}


async def test_a_post_from_another_site_is_refused_even_with_the_token(signed_up: Page) -> None:
    token = csrf_of(await user_page(signed_up))
    form = {"user": signed_up.user_id, "sub:finance:email": "on", "csrf_token": token}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost:5000", "Sec-Fetch-Site": "same-site"},
    ):
        refused = await signed_up.client.post("/sub", form=form, headers=headers)
        assert refused.status_code == 403, headers
        assert (await refused.get_json())["error"]["code"] == "cross_site"
    assert await subscriptions(signed_up) == {}
    same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert (await signed_up.client.post("/sub", form=form, headers=same)).status_code == 303


async def test_the_inbox_forms_need_the_token_too(signed_up: Page) -> None:
    path = f"/users/{signed_up.user_id}/notifications/read-all"
    assert (await signed_up.client.post(path, form={})).status_code == 403
    token = csrf_of(await user_page(signed_up))
    assert (await signed_up.client.post(path, form={"csrf_token": token})).status_code == 303


async def test_the_cookie_gives_no_access_to_another_user(http: Any, signed_up: Page) -> None:
    other = await http.post("/users", json={"name": "Bo"})  # the cookie comes along
    other_id = (await other.get_json())["id"]
    token = csrf_of(await user_page(signed_up))
    form = {"user": other_id, "sub:finance:email": "on", "csrf_token": token}
    assert (await http.post("/sub", form=form)).status_code == 403
    assert (await http.get(f"/sub?user={other_id}")).status_code == 403
    assert (await http.get(f"/users/{other_id}")).status_code == 403


async def test_strangers_see_sign_in_and_register_forms_but_nobody_listed(http: Any) -> None:
    await http.post("/users", json={"name": "Zebedee"})
    page = await http.get("/sub")
    html = await page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="sign-in-form"' in html and 'id="register-form"' in html
    assert 'id="users"' not in html and "Zebedee" not in html


async def test_signing_out_and_back_in_with_the_token(signed_up: Page) -> None:
    token = csrf_of(await user_page(signed_up))
    out = await signed_up.client.post("/sub/sign-out", form={"csrf_token": token})
    assert out.status_code == 303
    assert "notefly_user=;" in out.headers["Set-Cookie"]
    assert 'id="sign-in-form"' in await (await signed_up.client.get("/sub")).get_data(as_text=True)

    refused = await signed_up.client.post("/sub/sign-in", form={"token": "nfu_wrong"})
    assert refused.status_code == 401
    assert "Set-Cookie" not in refused.headers

    back = await signed_up.client.post("/sub/sign-in", form={"token": signed_up.token})
    assert back.status_code == 303
    assert "HttpOnly" in back.headers["Set-Cookie"]
    assert signed_up.user_id in await user_page(signed_up)


async def test_a_rotated_token_from_the_page_renews_the_cookie(signed_up: Page) -> None:
    token = csrf_of(await user_page(signed_up))
    rotated = await signed_up.client.post(
        f"/users/{signed_up.user_id}/token", headers={"X-CSRF-Token": token}
    )
    assert rotated.status_code == 200
    fresh = (await rotated.get_json())["token"]
    assert f"notefly_user={fresh}" in rotated.headers["Set-Cookie"]
    assert signed_up.user_id in await user_page(signed_up)
    old = {"Authorization": f"Bearer {signed_up.token}"}
    assert (
        await signed_up.client.get(f"/users/{signed_up.user_id}", headers=old)
    ).status_code == 401


async def test_a_stale_cookie_still_reaches_the_sign_in_form(signed_up: Page) -> None:
    rotated = await signed_up.client.post(
        f"/users/{signed_up.user_id}/token",
        headers={"Authorization": f"Bearer {signed_up.token}", "Cookie": ""},
    )
    assert rotated.status_code == 200
    stale = {"Cookie": f"notefly_user={signed_up.token}"}
    page = await signed_up.client.get("/sub", headers=stale)
    assert page.status_code == 200
    assert 'id="sign-in-form"' in await page.get_data(as_text=True)
    inbox = f"/users/{signed_up.user_id}/notifications"
    assert (await signed_up.client.get(inbox, headers=stale)).status_code == 401
