"""The broker's operations endpoints: metrics, readiness, status, redrive, API docs.

``install(app, container)`` registers them with the HTTP request metrics; the
dashboard (``broker.dashboard``) reads the same ``Operations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from quart import Blueprint, Quart, Response, current_app, g, request, send_from_directory
from quart_schema import document_response, hide

from broker.api import ErrorOut
from notefly.apidocs import SWAGGER_FILES, docs_page, openapi_30, swagger_dir
from notefly.containers import Container, resolve
from notefly.errors import NotFound
from notefly.health import known_migrations
from notefly.metrics import Metrics, prometheus_observer
from notefly.operations import Operations
from notefly.store.sqlite_ops import ops_store

blueprint = Blueprint("ops", __name__)
SERVICE = "broker"
SAMPLE_SECONDS = 1.0  # how often the dashboard's activity is read from the metrics


@dataclass
class OpsServices:
    operations: Operations
    metrics: Metrics


def ops() -> OpsServices:
    found: OpsServices = current_app.extensions["notefly_ops"]
    return found


def install(app: Quart, container: Container) -> None:
    @app.before_serving
    async def resolve_ops() -> None:
        observer = prometheus_observer(await resolve(container.observer))
        actors = await resolve(container.actors)
        breakers = await resolve(container.breakers)
        for channel in (await resolve(container.channels)).values():
            state = breakers.state(channel.name, channel.provider)
            observer.register_provider(channel.name, channel.provider, state)
        app.extensions["notefly_ops"] = OpsServices(
            operations=Operations(
                service=SERVICE,
                store=ops_store(await resolve(container.store)),
                observer=observer,
                actors=actors,
                breakers=breakers,
                expected_migrations=known_migrations(container.settings().store_backend),
                monotonic=container.monotonic(),
            ),
            metrics=observer.metrics,
        )

    @app.while_serving
    async def sampling() -> AsyncGenerator[None, None]:
        found: OpsServices = app.extensions["notefly_ops"]
        task = asyncio.create_task(found.operations.keep_sampling(SAMPLE_SECONDS))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

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
    name: Literal["store", "migrations", "actors"]
    ok: bool
    detail: str


class CircuitOut(BaseModel):
    """A provider's circuit breaker: closed, open (deliveries wait) or half_open."""

    channel: str
    provider: str
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int
    cooldown_seconds: float | None
    retry_in_seconds: float | None
    opened: int
    last_failure: str | None


class ReadyOut(BaseModel):
    ready: bool
    # degraded: ready, but a provider's circuit is open (still 200: see notefly.health)
    status: Literal["ok", "degraded", "not_ready"]
    checks: list[CheckOut]
    circuits: list[CircuitOut]


class StatusOut(BaseModel):
    """The operations snapshot: readiness, work waiting, counters, recent activity."""

    service: str
    version: str
    node: str | None
    ready: bool
    status: Literal["ok", "degraded", "not_ready"]
    checks: list[CheckOut]
    circuits: list[CircuitOut]
    work: dict[str, int]
    actors: dict[str, Any]
    counters: dict[str, int]
    throughput: dict[str, Any]
    recent_messages: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    providers: list[dict[str, Any]]


class RedriveOut(BaseModel):
    id: str
    message_id: str
    user: str
    channel: str
    status: Literal["queued"] = "queued"
    attempts: int


@blueprint.get("/metrics")
@hide
async def metrics() -> Response:
    """Prometheus text format; gauges read from the store and actors are refreshed."""
    found = ops()
    await found.operations.refresh_gauges()
    body, content_type = found.metrics.exposition()
    return Response(body, content_type=content_type)


@blueprint.get("/readyz")
@document_response(ReadyOut)
@document_response(ReadyOut, 503)
async def readyz() -> tuple[dict[str, Any], int]:
    """Ready to work: the store answers, migrations are applied, the actors run.

    An open provider circuit shows as ``"status": "degraded"`` and stays 200."""
    ready = await ops().operations.readiness()
    return ready.to_dict(), 200 if ready.ok else 503


@blueprint.get("/status")
@document_response(StatusOut)
async def status() -> dict[str, Any]:
    """What the broker is doing: health, pending work, recent messages and failures."""
    return await ops().operations.snapshot()


@blueprint.post("/deliveries/<delivery_id>/retry")
@document_response(RedriveOut, 202)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 409)
async def redrive(delivery_id: str) -> tuple[dict[str, Any], int]:
    """Send a failed delivery again: queued, attempts reset, handed to the actors."""
    task = await ops().operations.redrive(delivery_id)
    body = RedriveOut(
        id=task.id,
        message_id=task.message.id,
        user=task.recipient.user_id,
        channel=task.channel,
        attempts=task.attempts,
    )
    return body.model_dump(), 202


@blueprint.get("/docs")
@hide
async def docs() -> str:
    return docs_page("Notefly broker")


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
