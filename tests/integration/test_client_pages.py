"""The client's GET /sub page and its forms, as a browser without JavaScript uses them."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

from quart.typing import TestClientProtocol as HttpClient

from tests.integration.conftest import ClientPublish


class Element:
    def __init__(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tag = tag
        self.attrs = {k: v or "" for k, v in attrs}

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class Page(HTMLParser):
    """The start tags of a page, enough to find forms, inputs and marked elements."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html
        self.elements: list[Element] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, attrs))

    def by_id(self, element_id: str) -> Element | None:
        return next((e for e in self.elements if e.attrs.get("id") == element_id), None)

    def with_class(self, *classes: str) -> list[Element]:
        return [e for e in self.elements if set(classes) <= e.classes]

    def field(self, name: str) -> Element:
        found = next((e for e in self.elements if e.attrs.get("name") == name), None)
        assert found is not None, f"no field {name!r}"
        return found


async def page(client: HttpClient, url: str, status: int = 200) -> Page:
    response = await client.get(url)
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    return Page(await response.get_data(as_text=True))


async def register(client: HttpClient, **fields: Any) -> str:
    response = await client.post("/users", json={"name": "Ada", **fields})
    assert response.status_code == 201
    user_id: str = (await response.get_json())["id"]
    return user_id


async def subscriptions(client: HttpClient, user_id: str) -> dict[str, list[str]]:
    body = await (await client.get(f"/users/{user_id}/subscriptions")).get_json()
    return {s["category"]: s["channels"] for s in body["subscriptions"]}


async def notifications(client: HttpClient, user_id: str) -> list[dict[str, Any]]:
    body = await (await client.get(f"/users/{user_id}/notifications")).get_json()
    found: list[dict[str, Any]] = body["notifications"]
    return found


def redirect_target(location: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(location)
    return parts.path, parse_qs(parts.query)


# -- registering ------------------------------------------------------------------


async def test_the_page_offers_registration_and_the_users(client_http: HttpClient) -> None:
    first = await page(client_http, "/sub")
    form = first.by_id("register-form")
    assert form is not None
    assert (form.attrs["method"], form.attrs["action"]) == ("post", "/users")
    for name in ("name", "email", "phone", "push_token", "timezone"):
        first.field(name)
    assert first.field("timezone").attrs["value"] == "UTC"
    assert first.by_id("users") is None  # nobody to pick yet

    user_id = await register(client_http, name="Bo")
    again = await page(client_http, "/sub")
    assert again.by_id("users") is not None
    links = [e.attrs["href"] for e in again.elements if e.tag == "a"]
    assert f"/sub?user={user_id}" in links


async def test_registering_through_the_form_leads_to_the_users_page(
    client_http: HttpClient,
) -> None:
    response = await client_http.post(
        "/users",
        form={"name": "Ada", "email": "ada@example.com", "phone": "", "timezone": "Asia/Tokyo"},
    )
    assert response.status_code == 303
    path, query = redirect_target(response.headers["Location"])
    assert path == "/sub"
    user_id = query["user"][0]

    user = await (await client_http.get(f"/users/{user_id}")).get_json()
    assert (user["name"], user["email"], user["phone"]) == ("Ada", "ada@example.com", None)
    assert user["timezone"] == "Asia/Tokyo"
    mine = await page(client_http, response.headers["Location"])
    assert "Ada" in mine.html
    assert mine.by_id("subscriptions-form") is not None


async def test_a_refused_registration_shows_the_error_and_keeps_the_input(
    client_http: HttpClient,
) -> None:
    response = await client_http.post(
        "/users", form={"name": "Ada", "email": "ada@example.com", "phone": "555-0123"}
    )
    assert response.status_code == 422
    shown = Page(await response.get_data(as_text=True))
    assert shown.by_id("error") is not None
    assert "E.164" in shown.html
    assert shown.field("email").attrs["value"] == "ada@example.com"
    assert shown.field("phone").attrs["value"] == "555-0123"
    assert (await (await client_http.get("/users")).get_json())["users"] == []


async def test_an_unknown_user_gets_the_register_page_with_an_error(
    client_http: HttpClient,
) -> None:
    shown = await page(client_http, "/sub?user=usr_nobody", status=404)
    assert shown.by_id("error") is not None
    assert shown.by_id("register-form") is not None


# -- the subscription matrix ------------------------------------------------------


async def test_the_matrix_disables_channels_without_an_address(client_http: HttpClient) -> None:
    user_id = await register(client_http, email="ada@example.com")
    mine = await page(client_http, f"/sub?user={user_id}")
    assert mine.field("user").attrs["value"] == user_id
    for category in ("finance", "movies", "sports"):
        assert "disabled" not in mine.field(f"sub:{category}:email").attrs
        assert "disabled" in mine.field(f"sub:{category}:sms").attrs
        assert "disabled" in mine.field(f"sub:{category}:push").attrs
    assert "no phone number" in mine.html
    assert "no push token" in mine.html


async def test_saving_the_matrix_subscribes_and_unticking_unsubscribes(
    client_http: HttpClient,
) -> None:
    user_id = await register(client_http, email="ada@example.com", phone="+14155550123")
    saved = await client_http.post(
        "/sub",
        form={
            "user": user_id,
            "sub:finance:email": "on",
            "sub:finance:sms": "on",
            "sub:sports:sms": "on",
        },
    )
    assert saved.status_code == 303
    path, query = redirect_target(saved.headers["Location"])
    assert (path, query) == ("/sub", {"user": [user_id], "saved": ["1"]})
    assert await subscriptions(client_http, user_id) == {
        "finance": ["sms", "email"],
        "sports": ["sms"],
    }

    shown = await page(client_http, saved.headers["Location"])
    assert shown.by_id("saved") is not None
    assert "checked" in shown.field("sub:finance:email").attrs
    assert "checked" in shown.field("sub:sports:sms").attrs
    assert "checked" not in shown.field("sub:sports:email").attrs
    assert "checked" not in shown.field("sub:movies:sms").attrs

    # Unticking a row drops that category and leaves the others as they are.
    await client_http.post("/sub", form={"user": user_id, "sub:finance:email": "on"})
    assert await subscriptions(client_http, user_id) == {"finance": ["email"]}

    cleared = await client_http.post("/sub", form={"user": user_id})
    assert cleared.status_code == 303
    assert await subscriptions(client_http, user_id) == {}
    assert (await page(client_http, f"/sub?user={user_id}")).by_id("saved") is None


async def test_the_matrix_sets_how_often_each_category_arrives(client_http: HttpClient) -> None:
    user_id = await register(client_http, email="ada@example.com", timezone="Europe/Berlin")
    saved = await client_http.post(
        "/sub",
        form={
            "user": user_id,
            "sub:finance:email": "on",
            "freq:finance": "weekly",
            "at:finance": "10:30",
            "day:finance": "friday",
            "sub:sports:email": "on",
            "freq:sports": "immediate",
        },
    )
    assert saved.status_code == 303
    listed = await (await client_http.get(f"/users/{user_id}/subscriptions")).get_json()
    by_category = {s["category"]: s for s in listed["subscriptions"]}
    assert (
        by_category["finance"]["frequency"],
        by_category["finance"]["at"],
        by_category["finance"]["weekday"],
    ) == ("weekly", "10:30", "friday")
    assert by_category["sports"]["frequency"] == "immediate"
    shown = await page(client_http, saved.headers["Location"])
    assert 'value="weekly" selected' in shown.html
    assert 'value="10:30"' in shown.html
    refused = await client_http.post(
        "/sub",
        form={
            "user": user_id,
            "sub:finance:email": "on",
            "freq:finance": "daily",
            "at:finance": "26:00",
        },
    )
    assert refused.status_code == 422


async def test_a_refused_matrix_shows_the_error(client_http: HttpClient) -> None:
    user_id = await register(client_http, email="ada@example.com")
    response = await client_http.post("/sub", form={"user": user_id, "sub:finance:sms": "on"})
    assert response.status_code == 422
    shown = Page(await response.get_data(as_text=True))
    error = shown.by_id("error")
    assert error is not None
    assert "phone number" in shown.html
    assert shown.by_id("subscriptions-form") is not None
    assert await subscriptions(client_http, user_id) == {}


async def test_the_matrix_for_an_unknown_user_or_category(client_http: HttpClient) -> None:
    nobody = await client_http.post("/sub", form={"user": "usr_nobody"})
    assert nobody.status_code == 404
    assert Page(await nobody.get_data(as_text=True)).by_id("error") is not None

    user_id = await register(client_http, email="ada@example.com")
    unknown = await client_http.post("/sub", form={"user": user_id, "sub:gardening:email": "on"})
    assert unknown.status_code == 404
    assert "gardening" in Page(await unknown.get_data(as_text=True)).html

    nameless = await client_http.post("/sub", form={"sub:finance:email": "on"})
    assert nameless.status_code == 422


# -- notifications ----------------------------------------------------------------


async def test_notifications_show_unread_and_can_be_marked_read(
    client_http: HttpClient, client_publish: ClientPublish
) -> None:
    user_id = await register(client_http, email="ada@example.com")
    await client_http.post("/sub", form={"user": user_id, "sub:finance:email": "on"})
    for n in range(1, 4):
        await client_publish("finance", f"body {n}", title=f"news {n}")
    oldest, middle, newest = reversed(await notifications(client_http, user_id))
    await client_http.post(f"/users/{user_id}/notifications/{oldest['id']}/read")

    shown = await page(client_http, f"/sub?user={user_id}")
    assert shown.by_id("notifications") is not None
    listed = shown.with_class("notification")
    assert [e.attrs["data-id"] for e in listed] == [newest["id"], middle["id"], oldest["id"]]
    assert [e.attrs["data-id"] for e in shown.with_class("notification", "unread")] == [
        newest["id"],
        middle["id"],
    ]
    assert [e.attrs["data-id"] for e in shown.with_class("notification", "read")] == [oldest["id"]]
    read_forms = [e.attrs["action"] for e in shown.with_class("read-form")]
    assert read_forms == [
        f"/users/{user_id}/notifications/{newest['id']}/read",
        f"/users/{user_id}/notifications/{middle['id']}/read",
    ]

    # The browser posts the form with an empty body; the answer leads back to the page.
    marked = await client_http.post(read_forms[0], form={})
    assert marked.status_code == 303
    assert redirect_target(marked.headers["Location"]) == ("/sub", {"user": [user_id]})
    assert [n["read"] for n in await notifications(client_http, user_id)] == [True, False, True]

    read_all = shown.by_id("read-all-form")
    assert read_all is not None
    everything = await client_http.post(read_all.attrs["action"], form={})
    assert everything.status_code == 303
    after = await page(client_http, f"/sub?user={user_id}")
    assert after.with_class("notification", "unread") == []
    assert len(after.with_class("notification", "read")) == 3


async def test_a_read_form_for_a_vanished_notification_shows_an_error(
    client_http: HttpClient,
) -> None:
    user_id = await register(client_http)
    response = await client_http.post(f"/users/{user_id}/notifications/n_gone/read", form={})
    assert response.status_code == 404
    assert Page(await response.get_data(as_text=True)).by_id("error") is not None


# -- escaping ---------------------------------------------------------------------


async def test_what_users_type_is_escaped(
    client_http: HttpClient, client_publish: ClientPublish
) -> None:
    script = "<script>alert(1)</script>"
    user_id = await register(client_http, name=script, email="ada@example.com")
    await client_http.post("/sub", form={"user": user_id, "sub:finance:email": "on"})
    await client_publish("finance", f"body {script}", title=f"title {script}")

    for url in ("/sub", f"/sub?user={user_id}"):
        html = (await page(client_http, url)).html
        assert script not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html

    refused = await client_http.post("/users", form={"name": script, "phone": "nope"})
    html = await refused.get_data(as_text=True)
    assert script not in html
    assert "&lt;script&gt;" in html
