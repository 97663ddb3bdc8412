"""Request payloads: decoding and validation shared by both HTTP services.

Framework-free: the services hand in raw bytes or form fields and get a validated
pydantic model or a typed ``NoteflyError`` with the error catalogue's shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from notefly.errors import BadRequest, InvalidInput

M = TypeVar("M", bound=BaseModel)


def decode_json(raw: bytes) -> Any:
    if not raw.strip():
        raise BadRequest("the request has no body; send a JSON object", code="empty_body")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="malformed_json") from exc
    except RecursionError as exc:  # "[[[[..." under the size limit still nests too deep
        raise BadRequest("the JSON nests too deeply", code="malformed_json") from exc


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise InvalidInput(
            f"expected a JSON object, got {type(data).__name__}", code="validation_failed"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(
            "the request does not match the schema",
            code="validation_failed",
            details=validation_details(exc.errors(include_url=False, include_input=False)),
        ) from exc


def validation_details(errors: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"], "type": e["type"]}
        for e in errors
    ]
