"""The client's operations endpoints: metrics, readiness and API docs.

The client has no actors: it is ready when the store answers and its schema is
current. Its metrics are the HTTP requests it served (and, in ``notefly up``, the
broker's too: one process, one set of metrics).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from quart import Blueprint, Quart, Response, current_app, g, request, send_from_directory
from quart_schema import document_response, hide

from notefly.apidocs import SWAGGER_FILES, docs_page, openapi_30, swagger_dir
from notefly.containers import Container, resolve
from notefly.errors import NotFound
from notefly.health import HealthStore, known_migrations, readiness
from notefly.metrics import Metrics, prometheus_observer
from notefly.store.sqlite_ops import ops_store

blueprint = Blueprint("ops", __name__)
SERVICE = "client"


@dataclass
class OpsServices:
    store: HealthStore
    metrics: Metrics
    expected_migrations: list[int]


def ops() -> OpsServices:
    found: OpsServices = current_app.extensions["notefly_ops"]
    return found


def install(app: Quart, container: Container) -> None:
    @app.before_serving
    async def resolve_ops() -> None:
        observer = prometheus_observer(await resolve(container.observer))
        app.extensions["notefly_ops"] = OpsServices(
            store=ops_store(await resolve(container.store)),
            metrics=observer.metrics,
            expected_migrations=known_migrations(container.settings().store_backend),
        )

    @app.after_serving
    async def close_metrics() -> None:
        found = app.extensions.get("notefly_ops")
        if found is not None:
            found.metrics.close(os.getpid())

    @app.before_request
    async def start_timer() -> None:
        g.notefly_started = time.perf_counter()

    @app.after_request
    async def observe_request(response: Response) -> Response:
        started = g.get("notefly_started")
        found = app.extensions.get("notefly_ops")
        if started is not None and found is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            found.metrics.http_request(
                SERVICE, request.method, route, response.status_code, time.perf_counter() - started
            )
        return response

    app.register_blueprint(blueprint)


class CheckOut(BaseModel):
    name: Literal["store", "migrations"]
    ok: bool
    detail: str


class ReadyOut(BaseModel):
    ready: bool
    checks: list[CheckOut]


@blueprint.get("/metrics")
@hide
async def metrics() -> Response:
    body, content_type = ops().metrics.exposition()
    return Response(body, content_type=content_type)


@blueprint.get("/readyz")
@document_response(ReadyOut)
@document_response(ReadyOut, 503)
async def readyz() -> tuple[dict[str, Any], int]:
    """Ready to work: the store answers and its migrations are applied."""
    found = ops()
    ready = await readiness(found.store, expected=found.expected_migrations)
    return ready.to_dict(), 200 if ready.ok else 503


@blueprint.get("/docs")
@hide
async def docs() -> str:
    return docs_page("Notefly client")


@blueprint.get("/docs/openapi.json")
@hide
async def docs_spec() -> dict[str, Any]:
    """/openapi.json in the OpenAPI 3.0 spelling the packaged Swagger UI renders."""
    spec = current_app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    return openapi_30(spec)


@blueprint.get("/docs/static/<name>")
@hide
async def docs_asset(name: str) -> Response:
    if name not in SWAGGER_FILES:
        raise NotFound(f"no asset {name!r}")
    return await send_from_directory(swagger_dir(), name)
