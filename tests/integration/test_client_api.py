"""The client's JSON API on a real SQLite store: users, subscriptions, the inbox."""

from __future__ import annotations

from typing import Any

import pytest
from quart.typing import TestClientProtocol as HttpClient
from quart.wrappers import Response

from notefly.domain import User
from notefly.store.sqlite import SqliteStore
from tests.integration.conftest import ClientPublish

ADA = {"name": "Ada", "email": "ada@example.com", "phone": "+14155550123"}


async def error_of(response: Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The error a response carries, after checking its status and the catalogue's shape."""
    assert response.status_code == status, await response.get_data(as_text=True)
    body = await response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


def fields_of(error: dict[str, Any]) -> set[str]:
    return {d["field"] for d in error["details"]}


async def register(client: HttpClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/users", json={"name": "Ada", **fields})
    assert response.status_code == 201, await response.get_data(as_text=True)
    user: dict[str, Any] = await response.get_json()
    assert user.pop("token").startswith("nfu_")  # the access token, shown only here
    return user


async def subscribe(client: HttpClient, user: str, category: str, channels: list[str]) -> Response:
    return await client.post(
        "/sub", json={"user": user, "category": category, "channels": channels}
    )


# -- users ------------------------------------------------------------------------


async def test_register_get_patch_delete(client_http: HttpClient) -> None:
    response = await client_http.post("/users", json={**ADA, "timezone": "Europe/Paris"})
    assert response.status_code == 201
    user = await response.get_json()
    assert user.pop("token").startswith("nfu_")  # shown at registration only
    assert user["id"].startswith("usr_")
    assert user["created_at"]
    assert response.headers["Location"] == f"/users/{user['id']}"
    assert {k: user[k] for k in ("name", "email", "phone", "push_token", "timezone")} == {
        **ADA,
        "push_token": None,
        "timezone": "Europe/Paris",
    }

    fetched = await client_http.get(f"/users/{user['id']}")
    assert await fetched.get_json() == user

    patched = await client_http.patch(
        f"/users/{user['id']}", json={"name": "Ada L.", "phone": None, "push_token": "tok-1"}
    )
    assert patched.status_code == 200
    after = await (await client_http.get(f"/users/{user['id']}")).get_json()
    assert after == {**user, "name": "Ada L.", "phone": None, "push_token": "tok-1"}

    deleted = await client_http.delete(f"/users/{user['id']}")
    assert deleted.status_code == 204
    await error_of(await client_http.get(f"/users/{user['id']}"), 404, "user_not_found")
    await error_of(await client_http.delete(f"/users/{user['id']}"), 404, "user_not_found")


async def test_register_with_a_name_only_gets_defaults(client_http: HttpClient) -> None:
    user = await register(client_http)
    assert user["timezone"] == "UTC"
    assert (user["email"], user["phone"], user["push_token"]) == (None, None, None)


async def test_delete_erases_subscriptions_and_inbox(
    client_http: HttpClient, client_store: SqliteStore, client_publish: ClientPublish
) -> None:
    user = await register(client_http, email="ada@example.com")
    assert (await subscribe(client_http, user["id"], "finance", ["email"])).status_code == 200
    await client_publish("finance", "rates are up")
    inbox = await client_http.get(f"/users/{user['id']}/notifications")
    assert len((await inbox.get_json())["notifications"]) == 1

    assert (await client_http.delete(f"/users/{user['id']}")).status_code == 204

    # Someone registering again under the same id inherits nothing of the old account.
    await client_store.add_user(User(id=user["id"], name="Someone else"))
    subs = await client_http.get(f"/users/{user['id']}/subscriptions")
    assert (await subs.get_json())["subscriptions"] == []
    inbox = await client_http.get(f"/users/{user['id']}/notifications")
    assert (await inbox.get_json())["notifications"] == []


async def test_list_users_respects_limit(client_http: HttpClient) -> None:
    for name in ("Cy", "Ada", "Bo"):
        await register(client_http, name=name)
    everyone = await (await client_http.get("/users")).get_json()
    assert [u["name"] for u in everyone["users"]] == ["Ada", "Bo", "Cy"]
    two = await (await client_http.get("/users?limit=2")).get_json()
    assert len(two["users"]) == 2


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=many", "sort=name"])
async def test_list_users_refuses_bad_query(client_http: HttpClient, query: str) -> None:
    await error_of(await client_http.get(f"/users?{query}"), 422, "validation_failed")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Ada", "phone": "4155550123"}, "phone"),  # no +
        ({"name": "Ada", "phone": "+0155550123"}, "phone"),  # no country code starts with 0
        ({"name": "Ada", "phone": "+1415555012345678"}, "phone"),  # over 15 digits
        ({"name": "Ada", "phone": "+1 415 555 0123"}, "phone"),
        ({"name": "Ada", "email": "ada"}, "email"),
        ({"name": "Ada", "email": "ada@example"}, "email"),
        ({"name": "Ada", "email": "ada @example.com"}, "email"),
        ({"name": "Ada", "email": "ada@@example.com"}, "email"),
        ({"name": "Ada", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"name": "Ada", "timezone": "../../etc/passwd"}, "timezone"),
        ({"name": "Ada", "timezone": "localtime"}, "timezone"),
        ({"name": "Ada", "push_token": "t" * 4097}, "push_token"),
        ({"name": ""}, "name"),
        ({"name": "a" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "Ada\r\nBcc: eve@example.com"}, "name"),
        ({"name": "Ada\u0000"}, "name"),
        ({"name": "\ud800"}, "name"),  # a lone surrogate cannot be stored as UTF-8
        ({"name": "Ada", "email": ["ada@example.com"]}, "email"),
        ({"email": "ada@example.com"}, "name"),
        ({"name": "Ada", "admin": True}, "admin"),
    ],
)
async def test_register_refuses_bad_fields(
    client_http: HttpClient, body: dict[str, Any], field: str
) -> None:
    error = await error_of(await client_http.post("/users", json=body), 422, "validation_failed")
    assert field in fields_of(error)
    users = await (await client_http.get("/users")).get_json()
    assert users["users"] == []


async def test_register_refuses_what_is_not_a_json_object(client_http: HttpClient) -> None:
    headers = {"Content-Type": "application/json"}
    await error_of(
        await client_http.post("/users", data=b'{"name": "Ada"', headers=headers),
        400,
        "malformed_json",
    )
    await error_of(await client_http.post("/users", data=b"", headers=headers), 400, "empty_body")
    deep = b"[" * 30_000 + b"]" * 30_000  # under the size limit, over the decoder's stack
    await error_of(
        await client_http.post("/users", data=deep, headers=headers), 400, "malformed_json"
    )
    await error_of(await client_http.post("/users", json=["Ada"]), 422, "validation_failed")
    await error_of(
        await client_http.post("/users", data=b"name=Ada", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )


async def test_a_body_over_the_limit_is_refused(client_http: HttpClient) -> None:
    response = await client_http.post("/users", json={"name": "a" * (65 * 1024)})
    await error_of(response, 413)


async def test_patch_checks_fields_and_addresses(client_http: HttpClient) -> None:
    user = await register(client_http, email="ada@example.com")
    assert (await subscribe(client_http, user["id"], "finance", ["email"])).status_code == 200
    url = f"/users/{user['id']}"

    error = await error_of(await client_http.patch(url, json={"email": None}), 422)
    assert error["code"] == "missing_address"
    assert "email address" in error["message"]
    assert error["details"] == {"category": "finance", "channels": ["email"]}

    for body, field in [
        ({"name": None}, "name"),
        ({"timezone": None}, "timezone"),
        ({"timezone": "Nowhere"}, "timezone"),
        ({"phone": "555"}, "phone"),
        ({"nickname": "A"}, "nickname"),
    ]:
        refused = await error_of(await client_http.patch(url, json=body), 422, "validation_failed")
        assert field in fields_of(refused)

    # None of the refused changes stuck.
    assert await (await client_http.get(url)).get_json() == user
    await error_of(await client_http.patch("/users/usr_nobody", json={"name": "X"}), 404)


# -- subscriptions ----------------------------------------------------------------


async def test_subscribe_upsert_list_unsubscribe(client_http: HttpClient) -> None:
    user = await register(client_http, email="ada@example.com", phone="+14155550123")
    uid = user["id"]

    first = await subscribe(client_http, uid, "finance", ["email"])
    assert first.status_code == 200
    sub = await first.get_json()
    assert (sub["user"], sub["category"], sub["channels"]) == (uid, "finance", ["email"])
    assert sub["updated_at"]

    # A second subscribe replaces the channels; they come back in the broker's order.
    again = await (await subscribe(client_http, uid, "finance", ["email", "sms"])).get_json()
    assert again["channels"] == ["sms", "email"]
    await subscribe(client_http, uid, "sports", ["sms"])

    listed = await (await client_http.get(f"/users/{uid}/subscriptions")).get_json()
    assert [(s["category"], s["channels"]) for s in listed["subscriptions"]] == [
        ("finance", ["sms", "email"]),
        ("sports", ["sms"]),
    ]

    gone = await client_http.delete("/sub", json={"user": uid, "category": "finance"})
    assert gone.status_code == 204
    listed = await (await client_http.get(f"/users/{uid}/subscriptions")).get_json()
    assert [s["category"] for s in listed["subscriptions"]] == ["sports"]
    await error_of(
        await client_http.delete("/sub", json={"user": uid, "category": "finance"}),
        404,
        "subscription_not_found",
    )


async def test_subscribe_refuses_a_channel_without_an_address(
    client_http: HttpClient,
) -> None:
    user = await register(client_http, phone="+14155550123")
    error = await error_of(
        await subscribe(client_http, user["id"], "finance", ["sms", "email"]),
        422,
        "missing_address",
    )
    assert error["details"] == {"category": "finance", "channels": ["email"]}
    listed = await (await client_http.get(f"/users/{user['id']}/subscriptions")).get_json()
    assert listed["subscriptions"] == []


@pytest.mark.parametrize(
    ("channels", "code"),
    [
        ([], "validation_failed"),
        (["sms", "sms"], "validation_failed"),
        ("sms", "validation_failed"),
        ([1], "validation_failed"),
        (["fax"], "unknown_channel"),
    ],
)
async def test_subscribe_refuses_bad_channel_lists(
    client_http: HttpClient, channels: Any, code: str
) -> None:
    user = await register(client_http, phone="+14155550123")
    await error_of(await subscribe(client_http, user["id"], "finance", channels), 422, code)


async def test_subscribe_to_unknown_things(client_http: HttpClient) -> None:
    user = await register(client_http, phone="+14155550123")
    await error_of(await subscribe(client_http, "usr_nobody", "finance", ["sms"]), 404)
    await error_of(
        await subscribe(client_http, user["id"], "gardening", ["sms"]), 404, "category_not_found"
    )
    await error_of(await client_http.get("/users/usr_nobody/subscriptions"), 404)
    await error_of(
        await client_http.delete("/sub", json={"user": "usr_nobody", "category": "finance"}), 404
    )
    refused = await error_of(
        await client_http.post("/sub", json={"user": user["id"], "channels": ["sms"], "x": 1}),
        422,
        "validation_failed",
    )
    assert fields_of(refused) == {"category", "x"}


# -- inbox ------------------------------------------------------------------------


async def test_inbox_is_newest_first_and_pages(
    client_http: HttpClient, client_publish: ClientPublish
) -> None:
    user = await register(client_http, email="ada@example.com")
    await subscribe(client_http, user["id"], "finance", ["email"])
    for n in range(1, 6):
        await client_publish("finance", f"body {n}", title=f"news {n}")
    await client_publish("sports", "not subscribed")
    url = f"/users/{user['id']}/notifications"

    everything = await (await client_http.get(url)).get_json()
    assert [n["title"] for n in everything["notifications"]] == [
        "news 5",
        "news 4",
        "news 3",
        "news 2",
        "news 1",
    ]
    assert everything["next_before"] is None
    first = everything["notifications"][0]
    assert first["category"] == "finance"
    assert first["body"] == "body 5"
    assert first["priority"] == "normal"
    assert (first["read"], first["read_at"]) == (False, None)

    seen = []
    before = None
    while True:
        query = f"?limit=2&before={before}" if before else "?limit=2"
        page = await (await client_http.get(url + query)).get_json()
        seen.append([n["title"] for n in page["notifications"]])
        before = page["next_before"]
        if before is None:
            break
    assert seen == [["news 5", "news 4"], ["news 3", "news 2"], ["news 1"]]


async def test_mark_read_and_read_all(
    client_http: HttpClient, client_publish: ClientPublish
) -> None:
    user = await register(client_http, email="ada@example.com")
    await subscribe(client_http, user["id"], "finance", ["email"])
    for n in range(3):
        await client_publish("finance", f"body {n}")
    url = f"/users/{user['id']}/notifications"
    newest = (await (await client_http.get(url)).get_json())["notifications"][0]

    marked = await client_http.post(f"{url}/{newest['id']}/read")
    assert marked.status_code == 200
    read = await marked.get_json()
    assert (read["id"], read["read"]) == (newest["id"], True)
    assert read["read_at"]

    unread = await (await client_http.get(url + "?unread=true")).get_json()
    assert len(unread["notifications"]) == 2
    assert newest["id"] not in {n["id"] for n in unread["notifications"]}

    assert await (await client_http.post(f"{url}/read-all")).get_json() == {"marked": 2}
    assert await (await client_http.post(f"{url}/read-all")).get_json() == {"marked": 0}
    unread = await (await client_http.get(url + "?unread=1")).get_json()
    assert unread["notifications"] == []


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=ten", "unread=perhaps", "unread_only=true"]
)
async def test_inbox_refuses_bad_query(client_http: HttpClient, query: str) -> None:
    user = await register(client_http)
    await error_of(
        await client_http.get(f"/users/{user['id']}/notifications?{query}"),
        422,
        "validation_failed",
    )


async def test_inbox_unknown_things(client_http: HttpClient) -> None:
    user = await register(client_http)
    url = f"/users/{user['id']}/notifications"
    await error_of(await client_http.get(url + "?before=n_nothing"), 404, "notification_not_found")
    await error_of(await client_http.post(f"{url}/n_nothing/read"), 404, "notification_not_found")
    await error_of(await client_http.get("/users/usr_nobody/notifications"), 404, "user_not_found")
    await error_of(await client_http.post("/users/usr_nobody/notifications/read-all"), 404)


async def test_a_notification_cannot_be_read_through_another_user(
    client_http: HttpClient, client_publish: ClientPublish
) -> None:
    ada = await register(client_http, email="ada@example.com")
    bo = await register(client_http, name="Bo")
    await subscribe(client_http, ada["id"], "finance", ["email"])
    await client_publish("finance", "for Ada")
    mine = await (await client_http.get(f"/users/{ada['id']}/notifications")).get_json()
    nid = mine["notifications"][0]["id"]
    await error_of(await client_http.post(f"/users/{bo['id']}/notifications/{nid}/read"), 404)
    still = await (await client_http.get(f"/users/{ada['id']}/notifications")).get_json()
    assert still["notifications"][0]["read"] is False


# -- the rest ---------------------------------------------------------------------


async def test_categories_channels_health(client_http: HttpClient) -> None:
    categories = await (await client_http.get("/categories")).get_json()
    assert [c["id"] for c in categories["categories"]] == ["finance", "movies", "sports"]
    assert set(categories["categories"][0]) == {"id", "name", "description"}
    channels = await (await client_http.get("/channels")).get_json()
    assert channels == {"channels": ["sms", "email", "push"]}
    health = await (await client_http.get("/healthz")).get_json()
    assert health["status"] == "ok"
    assert health["service"] == "client"
    assert health["version"]


async def test_openapi_describes_the_api(client_http: HttpClient) -> None:
    response = await client_http.get("/openapi.json")
    assert response.status_code == 200
    spec = await response.get_json()
    paths = spec["paths"]
    assert {"post", "get"} <= set(paths["/users"])
    assert {"get", "patch", "delete"} <= set(paths["/users/{user_id}"])
    assert {"post", "delete"} <= set(paths["/sub"])
    assert "get" in paths["/users/{user_id}/notifications"]
    body = paths["/users"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body  # the request schema is described, not only the path
    for ui in ("/redocs", "/scalar"):  # /docs is the offline Swagger UI (client/ops.py)
        await error_of(await client_http.get(ui), 404)


async def test_unknown_routes_and_wrong_methods(client_http: HttpClient) -> None:
    await error_of(await client_http.get("/nowhere"), 404, "not_found")
    wrong = await client_http.put("/users")
    await error_of(wrong, 405, "method_not_allowed")
    assert "POST" in wrong.headers["Allow"]
    await error_of(await client_http.delete("/users"), 405)
    await error_of(await client_http.post("/categories", json={"name": "x"}), 405)
