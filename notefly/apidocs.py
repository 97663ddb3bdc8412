"""API documentation pages that work offline: Swagger UI from the packaged assets.

Both services serve ``/docs`` from the swagger-ui-bundle package's files (never a CDN),
fed by their own ``/openapi.json``, so the page and the spec cannot drift. That spec
is OpenAPI 3.1 (pydantic's JSON Schema) and the packaged Swagger UI (4.15) renders 3.0
only, so the page reads ``/docs/openapi.json``: the same document, spelled in 3.0.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

# The files /docs may serve from the bundle; anything else is a 404.
SWAGGER_FILES = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui.css.map",
        "swagger-ui-bundle.js",
        "swagger-ui-bundle.js.map",
        "favicon-16x16.png",
        "favicon-32x32.png",
    }
)


def swagger_dir() -> Path:
    return Path(str(swagger_ui_path))


def docs_page(
    title: str,
    spec_url: str = "/openapi.json",
    ui_spec_url: str = "/docs/openapi.json",
    assets: str = "/docs/static",
) -> str:
    """The HTML of a Swagger UI page: it renders ``ui_spec_url`` (the 3.0 spelling of
    ``spec_url``) and links to ``spec_url``."""
    config = {
        "url": ui_spec_url,
        "dom_id": "#swagger-ui",
        "deepLinking": True,
        "validatorUrl": None,  # the default validator is an outside service
        "layout": "BaseLayout",
    }
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{html.escape(title)} · API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
  <style>body {{ margin: 0; }} .notefly-bar {{ font: 14px system-ui, sans-serif;
    padding: 0.6rem 1.2rem; background: #1d2433; color: #fff; }}
    .notefly-bar a {{ color: #cfe0ff; }}</style>
</head>
<body>
  <div class="notefly-bar">{html.escape(title)} · the spec as JSON:
    <a href="{spec_url}">{spec_url}</a></div>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script>
    const config = {json.dumps(config)};
    config.presets = [SwaggerUIBundle.presets.apis];
    window.ui = SwaggerUIBundle(config);
  </script>
</body>
</html>
"""


def openapi_30(spec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document ``spec`` spelled in OpenAPI 3.0.3.

    Covers what pydantic and quart-schema write: ``anyOf`` with ``{"type": "null"}`` and
    ``type`` lists become ``nullable``; ``const`` an ``enum`` of one; numeric
    ``exclusiveMinimum``/``Maximum`` their 3.0 booleans; ``examples`` one ``example``.
    """
    converted = _schema_30(spec)
    converted["openapi"] = "3.0.3"
    return converted  # type: ignore[no-any-return]


# Keys whose value maps names to objects (a field named "const" is no keyword).
_NAME_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "schemas", "paths", "responses", "content"}
)


def _schema_30(node: Any) -> Any:
    if isinstance(node, list):
        return [_schema_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: (
            {name: _schema_30(v) for name, v in value.items()}
            if key in _NAME_MAPS and isinstance(value, dict)
            else _schema_30(value)
        )
        for key, value in node.items()
    }
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del out[key]
            out["nullable"] = True
            if len(rest) == 1 and "$ref" in rest[0]:
                out["allOf"] = rest  # 3.0 ignores siblings of a $ref
            elif len(rest) == 1:
                out = {**rest[0], **out}
            else:
                out[key] = rest
    kind = out.get("type")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        out["type"] = others[0] if len(others) == 1 else others
        if "null" in kind:
            out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[plain] = value
            out[bound] = True
    examples = out.get("examples")
    if isinstance(examples, list):
        out.pop("examples")
        if examples:
            out["example"] = examples[0]
    return out


# What an operation may answer besides what its route documents, whatever the route:
# the store cannot be reached (503 with Retry-After); and, for one that reads a body,
# a body that is not JSON (400), larger than the limit (413), neither JSON nor a form
# (415) or invalid (422). The error handlers give every one of them the error shape.
COMMON_ERRORS = {503: "The store cannot be reached: retry after Retry-After seconds"}
BODY_ERRORS = {
    400: "The body is not JSON (or not UTF-8)",
    413: "The body is larger than the configured limit",
    415: "The body is neither JSON nor an HTML form",
    422: "The body is well-formed but not acceptable; details name the fields",
}
AUTH_ERRORS = {
    401: "No valid credential: send Authorization: Bearer <key or token>",
    403: "The credential is valid but does not allow this",
}
_METHODS = ("get", "put", "post", "delete", "patch")
_PARAMETER = re.compile(r"\{(\w+)\}")

# Whether a route needs a credential once keys are on: (METHOD, Quart rule) -> bool.
Protected = Callable[[str, str], bool]


def with_common_responses(
    spec: dict[str, Any], error_schema: str = "ErrorOut", protected: Protected | None = None
) -> dict[str, Any]:
    """``spec`` with what every route may answer documented on each operation: the
    errors above, the 204 of a DELETE, and for the routes ``protected`` names, the
    bearer scheme with its 401 and 403.

    Operations that document no response at all (the HTML pages) are left alone: they
    describe nothing to add to.
    """
    schemas = spec.get("components", {}).get("schemas", {})
    schema = (
        {"$ref": f"#/components/schemas/{error_schema}"}
        if error_schema in schemas
        else {"type": "object", "required": ["error"], "properties": {"error": {"type": "object"}}}
    )
    if protected is not None:
        components = spec.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An admin or publisher key, or a user's token (see Security)",
        }
    for path, operations in spec.get("paths", {}).items():
        rule = _PARAMETER.sub(r"<\1>", path)
        for method, operation in operations.items():
            responses = operation.get("responses") if method in _METHODS else None
            if not responses:
                continue
            guarded = protected is not None and protected(method.upper(), rule)
            if guarded:
                operation["security"] = [{"bearer": []}]
            if method == "delete" and not any(str(k).startswith("2") for k in responses):
                # Every DELETE of the services answers 204 with no body when it is done.
                key204: int | str = 204 if isinstance(next(iter(responses)), int) else "204"
                responses[key204] = {"description": "Done; there is nothing to return"}
            extra = {
                **COMMON_ERRORS,
                **(BODY_ERRORS if "requestBody" in operation else {}),
                **(AUTH_ERRORS if guarded else {}),
            }
            for status, description in extra.items():
                if status in responses or str(status) in responses:
                    continue
                # The same kind of key as the route's (quart-schema writes ints).
                key: int | str = status if isinstance(next(iter(responses)), int) else str(status)
                responses.setdefault(
                    key,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": schema}},
                    },
                )
    return spec
