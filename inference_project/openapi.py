"""The OpenAPI description served at /api/schema: every public route.

The data plane's routes are plain async Django views, described by hand in
apps/predictions/openapi.yaml; the registry's are DRF views, and drf-spectacular generates their
part from the serializers they validate with, so a field added there is described at once.
"""

import functools
from pathlib import Path
from typing import Any

import yaml
from django.http import HttpRequest, JsonResponse
from drf_spectacular.generators import SchemaGenerator

from apps.models_registry import urls as registry_urls

DATA_PLANE = Path(__file__).resolve().parent.parent / "apps" / "predictions" / "openapi.yaml"


@functools.cache
def openapi_schema() -> dict[str, Any]:
    schema: dict[str, Any] = yaml.safe_load(DATA_PLANE.read_text())
    registry = SchemaGenerator(patterns=registry_urls.urlpatterns).get_schema(request=None, public=True)
    schema["paths"] |= registry["paths"]
    components = schema["components"]
    for part in ("schemas", "securitySchemes"):
        components[part] = components.get(part, {}) | registry["components"].get(part, {})
    return schema


def schema_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi_schema())
