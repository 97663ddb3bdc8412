"""Quart glue of the client: error shape, payload and query reading, the services.

This mirrors ``broker.web``; the two services may not import each other, and this
module needs Quart, so it cannot move into the framework-free core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import BaseModel
from quart import Quart, current_app, request
from werkzeug.exceptions import HTTPException

from notefly.config import Settings
from notefly.errors import (
    BadRequest,
    NoteflyError,
    StoreUnavailable,
    UnsupportedMediaType,
    is_store_failure,
)
from notefly.payloads import decode_json, validate

if TYPE_CHECKING:
    from client.app import ClientServices

M = TypeVar("M", bound=BaseModel)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

log = structlog.get_logger("notefly.client")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def install_error_handlers(app: Quart) -> None:
    """Every error leaves as ``{"error": {"code", "message", "details"}}``."""

    @app.errorhandler(NoteflyError)
    async def notefly_error(
        exc: NoteflyError,
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
        return exc.to_dict(), exc.status, headers

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[dict[str, Any], int, dict[str, str]]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        # Keep what the exception says about the response (Allow on a 405), but not
        # its HTML content type: the body here is JSON.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_body(code, exc.description or exc.name or "error"), status, headers

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> tuple[dict[str, Any], int, dict[str, str]]:
        if is_store_failure(exc):
            log.error("http.store_unavailable", path=request.path, error=repr(exc))
            return await notefly_error(StoreUnavailable("the store cannot be reached"))
        log.exception("http.unexpected_error", path=request.path)
        return error_body("internal_error", "an unexpected error occurred"), 500, {}


def services() -> ClientServices:
    found: ClientServices = current_app.extensions["notefly"]
    return found


def settings() -> Settings:
    found: Settings = current_app.config["NOTEFLY_SETTINGS"]
    return found


def is_form() -> bool:
    return request.mimetype in FORM_TYPES


async def read_payload(model: type[M]) -> M:
    """Validate the body as ``model``, from JSON or from an HTML form."""
    if is_form():
        form = await request.form
        return validate(model, {k: v for k, v in form.items() if v.strip()})
    if request.mimetype not in ("application/json", ""):
        raise UnsupportedMediaType(f"send JSON (application/json), not {request.mimetype}")
    raw = await request.get_data(as_text=False)
    try:
        data = decode_json(raw if isinstance(raw, bytes) else raw.encode())
    except RecursionError as exc:
        # A body of a few thousand '[' exhausts the decoder's stack well under the size
        # limit; decode_json lets that through, so without this it would be a 500.
        raise BadRequest("the JSON nests too deeply", code="malformed_json") from exc
    return validate(model, data)


def read_query(model: type[M]) -> M:
    """Validate the query string as ``model``; an empty value counts as absent, as in
    a form submitted with an empty field."""
    return validate(model, {k: v for k, v in request.args.items() if v.strip()})
