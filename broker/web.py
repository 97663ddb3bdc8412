"""Quart glue of the broker: error shape, payload reading, the container's services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import BaseModel
from quart import Quart, current_app, request
from werkzeug.exceptions import HTTPException

from notefly.errors import NoteflyError, StoreUnavailable, UnsupportedMediaType, is_store_failure
from notefly.payloads import decode_json, validate

if TYPE_CHECKING:
    from broker.app import BrokerServices

M = TypeVar("M", bound=BaseModel)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

log = structlog.get_logger("notefly.broker")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(exc: Exception, path: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The body, status and headers that answer ``exc`` raised while serving ``path``.

    Call it in the ``except`` block: an unexpected error is logged with its traceback.
    """
    if isinstance(exc, NoteflyError):
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
        return exc.to_dict(), exc.status, headers
    if is_store_failure(exc):
        log.error("http.store_unavailable", path=path, error=repr(exc))
        return error_response(StoreUnavailable("the store cannot be reached"), path)
    log.exception("http.unexpected_error", path=path)
    return error_body("internal_error", "an unexpected error occurred"), 500, {}


def install_error_handlers(app: Quart) -> None:
    """Every error leaves as ``{"error": {"code", "message", "details"}}``."""

    @app.errorhandler(NoteflyError)
    async def notefly_error(
        exc: NoteflyError,
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        return error_response(exc, request.path)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[dict[str, Any], int]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_body(code, exc.description or exc.name or "error"), status

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> tuple[dict[str, Any], int, dict[str, str]]:
        return error_response(exc, request.path)


def services() -> BrokerServices:
    found: BrokerServices = current_app.extensions["notefly"]
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
    return validate(model, decode_json(raw if isinstance(raw, bytes) else raw.encode()))
