"""The client's JSON API: users, subscriptions, the catalogue, health."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_querystring, document_request, document_response

import notefly
from client import pages
from client.api import (
    CategoriesOut,
    CategoryOut,
    ChannelsOut,
    ErrorOut,
    HealthOut,
    RegisteredOut,
    SubscribeIn,
    SubscriptionOut,
    SubscriptionsOut,
    UnsubscribeIn,
    UserIn,
    UserOut,
    UserPatch,
    UsersOut,
    UsersQuery,
)
from client.auth import issue_user_token
from client.web import is_form, read_payload, read_query, services, settings

blueprint = Blueprint("api", __name__)


@blueprint.post("/users")
@document_request(UserIn)
@document_response(RegisteredOut, 201)
@document_response(ErrorOut, 422)
async def register_user() -> Any:
    """Register a user; their id is generated, and their access token is shown once."""
    if is_form():  # the register form of GET /sub posts here too
        return await pages.register_form()
    body = await read_payload(UserIn)
    user = await services().directory.register(body.user())
    token = await issue_user_token(user.id)
    registered = RegisteredOut(**UserOut.of(user).model_dump(), token=token)
    return registered.model_dump(mode="json"), 201, {"Location": f"/users/{user.id}"}


@blueprint.get("/users")
@document_querystring(UsersQuery)
@document_response(UsersOut)
@document_response(ErrorOut, 422)
async def list_users() -> dict[str, Any]:
    query = read_query(UsersQuery)
    users = await services().directory.users(limit=query.limit)
    return UsersOut(users=[UserOut.of(u) for u in users]).model_dump(mode="json")


@blueprint.get("/users/<user_id>")
@document_response(UserOut)
@document_response(ErrorOut, 404)
async def get_user(user_id: str) -> dict[str, Any]:
    user = await services().directory.get(user_id)
    return UserOut.of(user).model_dump(mode="json")


@blueprint.patch("/users/<user_id>")
@document_request(UserPatch)
@document_response(UserOut)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def update_user(user_id: str) -> dict[str, Any]:
    """Change any subset of the fields; 422 when removing an address a subscription uses."""
    body = await read_payload(UserPatch)
    user = await services().directory.update(user_id, body.changes())
    return UserOut.of(user).model_dump(mode="json")


@blueprint.delete("/users/<user_id>")
@document_response(ErrorOut, 404)
async def delete_user(user_id: str) -> tuple[str, int]:
    """Erase the user with their subscriptions and inbox."""
    await services().directory.delete(user_id)
    return "", 204


@blueprint.get("/users/<user_id>/subscriptions")
@document_response(SubscriptionsOut)
@document_response(ErrorOut, 404)
async def list_subscriptions(user_id: str) -> dict[str, Any]:
    subscriptions = await services().directory.subscriptions(user_id)
    return SubscriptionsOut(
        subscriptions=[SubscriptionOut.of(s) for s in subscriptions]
    ).model_dump(mode="json")


@blueprint.post("/sub")
@document_request(SubscribeIn)
@document_response(SubscriptionOut)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 422)
async def subscribe() -> Any:
    """Subscribe a user to a category on some channels, replacing any earlier choice."""
    if is_form():  # the subscription matrix of GET /sub posts here too
        return await pages.subscriptions_form()
    body = await read_payload(SubscribeIn)
    sub = await services().directory.subscribe(
        body.user, body.category, body.channels, body.schedule()
    )
    return SubscriptionOut.of(sub).model_dump(mode="json")


@blueprint.delete("/sub")
@document_request(UnsubscribeIn)
@document_response(ErrorOut, 404)
async def unsubscribe() -> tuple[str, int]:
    body = await read_payload(UnsubscribeIn)
    await services().directory.unsubscribe(body.user, body.category)
    return "", 204


@blueprint.get("/categories")
@document_response(CategoriesOut)
async def list_categories() -> dict[str, Any]:
    categories = await services().catalogue.list()
    return CategoriesOut(categories=[CategoryOut.of(c) for c in categories]).model_dump()


@blueprint.get("/channels")
@document_response(ChannelsOut)
async def list_channels() -> dict[str, Any]:
    return ChannelsOut(channels=list(settings().channels)).model_dump()


@blueprint.get("/healthz")
@document_response(HealthOut)
async def healthz() -> dict[str, Any]:
    await services().store.ping()
    return {"status": "ok", "service": "client", "version": notefly.__version__}


@blueprint.get("/")
async def index() -> tuple[str, int, dict[str, str]]:
    return "", 302, {"Location": "/sub"}
