"""The platform's one error shape: `{"error": {"code", "message", "field"?, ...}}`.

Every JSON error of the native API, the registry's REST API, Django's error pages for API
clients and the ASGI fast path is built here. (The TensorFlow Serving and Open Inference Protocol
routes answer in their clients' own form: apps/predictions/transports/.)
"""

from typing import Any

from django.http import JsonResponse


def error_body(code: str, message: str, *, field: str | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    error.update(extra)
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    return JsonResponse(error_body(code, message, field=field), status=status, headers=headers)
