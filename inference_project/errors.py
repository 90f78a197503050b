"""The platform's one error shape: `{"error": {"code", "message", "field"?, ...}}`.

Every JSON error of the native API, the registry's REST API, Django's error pages for API
clients and the ASGI fast path is built here. (The TensorFlow Serving and Open Inference Protocol
routes answer in their clients' own form: apps/predictions/transports/.)
"""

from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

# The database cannot be reached or its connection broke (PostgreSQL restarting, its host cut
# off): a passing condition, answered 503 with Retry-After like a busy queue, never a 500.
# Other database errors (a bad query, an integrity error) are bugs or the client's, not these.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER_S = "1"
DATABASE_UNAVAILABLE_MESSAGE = "the registry database is unreachable; retry shortly"


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


def database_unavailable_response() -> JsonResponse:
    return error_response(
        503, "unavailable", DATABASE_UNAVAILABLE_MESSAGE, headers={"Retry-After": DATABASE_RETRY_AFTER_S}
    )
