"""The broker service: ``create_app(container)`` builds its Quart app.

The app resolves its services from the container when it starts serving; starting
and stopping the store and the actor system is the runner's job (``notefly up``).
"""

from __future__ import annotations

from dataclasses import dataclass

from quart import Quart
from quart_schema import Info, QuartSchema

import notefly
from broker import auth, dashboard, deadletters, ingest, ops, pages, routes
from broker.api import CommonResponses
from broker.web import install_error_handlers
from notefly.containers import Container, resolve
from notefly.ports import Store
from notefly.services import Catalogue, Publisher


@dataclass
class BrokerServices:
    publisher: Publisher
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
            title="Notefly broker",
            version=notefly.__version__,
            description="Publish to a category; follow each message's deliveries.",
        ),
    )
    install_error_handlers(app)

    @app.before_serving
    async def resolve_services() -> None:
        app.extensions["notefly"] = BrokerServices(
            publisher=await resolve(container.publisher),
            catalogue=await resolve(container.catalogue),
            store=await resolve(container.store),
        )

    app.register_blueprint(routes.blueprint)
    app.register_blueprint(pages.blueprint)
    ops.install(app, container)  # /metrics, /readyz, /status, redrive, /docs
    deadletters.install(app, container)  # GET /deliveries, POST /deliveries/redrive
    app.register_blueprint(dashboard.blueprint)
    auth.install(app, container)  # who may call what; every route has a policy
    ingest.install(app)  # the common POST /pub, answered before Quart's machinery
    return app
