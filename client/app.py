"""The client service: ``create_app(container)`` builds its Quart app.

The app resolves its services from the container when it starts serving; starting
and stopping the store is the runner's job (``notefly up``). The client needs no
actor system: it reads and writes users, subscriptions and the inbox in the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from quart import Quart
from quart_schema import Info, QuartSchema

import notefly
from client import auth, channel_routes, export, inbox, ops, pages, routes
from client.api import CommonResponses
from client.web import install_error_handlers
from notefly.containers import Container, resolve
from notefly.ports import Store
from notefly.services import Catalogue, Directory, Inbox


@dataclass
class ClientServices:
    directory: Directory
    inbox: Inbox
    catalogue: Catalogue
    store: Store


def create_app(container: Container) -> Quart:
    settings = container.settings()
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["NOTEFLY_SETTINGS"] = settings
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        openapi_provider_class=CommonResponses,
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(
            title="Notefly client",
            version=notefly.__version__,
            description="Users, their subscriptions to categories, and their inbox.",
        ),
    )
    install_error_handlers(app)

    @app.before_serving
    async def resolve_services() -> None:
        app.extensions["notefly"] = ClientServices(
            directory=await resolve(container.directory),
            inbox=await resolve(container.inbox),
            catalogue=await resolve(container.catalogue),
            store=await resolve(container.store),
        )

    app.register_blueprint(routes.blueprint)
    app.register_blueprint(inbox.blueprint)
    app.register_blueprint(pages.blueprint)
    ops.install(app, container)  # /metrics, /readyz, /docs
    channel_routes.install(app, container)  # push, webhooks, Apprise, stream, unsubscribe
    export.install(app, container)  # GET /users/<id>/export
    auth.install(app, container)  # who may call what; every route has a policy
    return app
