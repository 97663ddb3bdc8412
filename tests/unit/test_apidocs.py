"""The OpenAPI 3.1 to 3.0 spelling that the packaged Swagger UI renders."""

from __future__ import annotations

from notefly.apidocs import docs_page, openapi_30, with_common_responses


def test_nullable_values_become_3_0_nullable():
    spec = {
        "openapi": "3.1.0",
        "components": {
            "schemas": {
                "Out": {
                    "properties": {
                        "text": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "T"},
                        "ref": {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]},
                        "many": {
                            "anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]
                        },
                        "listed": {"type": ["integer", "null"]},
                        "const": {"const": "accepted"},  # a field named like a keyword
                        "count": {"type": "integer", "exclusiveMinimum": 0},
                        "sample": {"type": "string", "examples": ["a", "b"]},
                    }
                }
            }
        },
    }
    props = openapi_30(spec)["components"]["schemas"]["Out"]["properties"]
    assert props["text"] == {"type": "string", "nullable": True, "title": "T"}
    assert props["ref"] == {"allOf": [{"$ref": "#/components/schemas/X"}], "nullable": True}
    assert props["many"] == {"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}
    assert props["listed"] == {"type": "integer", "nullable": True}
    assert props["const"] == {"enum": ["accepted"]}
    assert props["count"] == {"type": "integer", "minimum": 0, "exclusiveMinimum": True}
    assert props["sample"] == {"type": "string", "example": "a"}
    assert openapi_30(spec)["openapi"] == "3.0.3"
    assert spec["openapi"] == "3.1.0"  # the original is left alone


def test_the_docs_page_escapes_its_title_and_loads_local_files():
    html = docs_page("<Notefly>")
    assert "&lt;Notefly&gt;" in html and "<Notefly>" not in html
    assert "http://" not in html and "https://" not in html


def test_protected_routes_document_the_bearer_scheme_and_its_refusals():
    spec = {
        "paths": {
            "/users/{user_id}": {"get": {"responses": {200: {"description": "the user"}}}},
            "/healthz": {"get": {"responses": {200: {"description": "alive"}}}},
        },
        "components": {"schemas": {}},
    }
    seen: list[tuple[str, str]] = []

    def protected(method: str, rule: str) -> bool:
        seen.append((method, rule))
        return rule.startswith("/users/")

    out = with_common_responses(spec, protected=protected)
    assert sorted(seen) == [("GET", "/healthz"), ("GET", "/users/<user_id>")]
    user = out["paths"]["/users/{user_id}"]["get"]
    assert user["security"] == [{"bearer": []}]
    assert {200, 401, 403, 503} <= set(user["responses"])
    health = out["paths"]["/healthz"]["get"]
    assert "security" not in health
    assert 401 not in health["responses"] and 503 in health["responses"]
    assert out["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
