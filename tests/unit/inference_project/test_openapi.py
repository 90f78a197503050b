"""/api/schema describes every public route: each URL pattern outside the admin, with the
methods its view answers, and nothing it does not serve; the schema is valid OpenAPI."""

import re

import pytest
import schemathesis
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from schemathesis.core.result import Ok

from inference_project.openapi import openapi_schema

METHODS = {"get", "post", "put", "patch", "delete"}


def _routes(patterns: list[URLPattern | URLResolver], prefix: str = "") -> dict[str, set[str]]:
    """OpenAPI-style path ({} for each parameter) -> the methods its view defines."""
    routes: dict[str, set[str]] = {}
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes |= _routes(pattern.url_patterns, route)
            continue
        if route.startswith(("admin/", "^static")):
            continue
        view = pattern.callback
        view_class = getattr(view, "view_class", None) or getattr(view, "cls", None)
        methods = {m for m in METHODS if view_class and hasattr(view_class, m)} or {"get"}
        routes["/" + re.sub(r"<(?:\w+:)?\w+>", "{}", route)] = methods
    return routes


def _documented() -> dict[str, set[str]]:
    return {
        re.sub(r"\{\w+\}", "{}", path): {m for m in operations if m in METHODS}
        for path, operations in openapi_schema()["paths"].items()
    }


def test_every_public_route_is_in_the_schema_with_its_methods() -> None:
    served = _routes(get_resolver().url_patterns)
    assert "/api/v1/models/{}/promote" in served  # the walk reached the registry's routes
    assert served == _documented()


def test_the_schema_is_valid_openapi_for_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(openapi_schema())
    operations = list(schema.get_all_operations())
    for result in operations:
        assert isinstance(result, Ok), result.err()
    assert len(operations) == sum(len(methods) for methods in _documented().values())
    registry = openapi_schema()["paths"]["/api/v1/models/{name}/promote"]["post"]
    body = registry["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    promote = openapi_schema()["components"]["schemas"][body.rsplit("/", 1)[1]]
    assert {"version", "environment", "reason", "expect_live"} <= set(promote["properties"])
    assert promote["required"] == ["version"]


@pytest.mark.parametrize("path", ["/api/schema", "/api/schema/"])
def test_the_schema_is_served_with_or_without_the_trailing_slash(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    assert "/api/v1/models/{name}/versions" in response.json()["paths"]
